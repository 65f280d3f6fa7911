"""Where the bus lives: one ``nats://`` URL names the server, the stream and its subjects.

::

    nats://127.0.0.1:4222?stream=TOWNSQUARE_POSTS&subject=townsquare.posts
        &kv=TOWNSQUARE_CURSORS&dupe_window=2m&max_age=7d

Every parameter is optional (those are the defaults). A publisher puts each
post on ``<subject>.<source kind>`` (``townsquare.posts.jetstream``), so one
stream carries every source and consumers may filter by kind. ``max_age``
bounds how long the stream keeps posts (how long an index worker may be down
without loss); ``dupe_window`` how long JetStream remembers message ids to
drop a republished post. Streams and buckets are created on first use with
these settings and left alone afterwards, so an operator may retune them
with the ``nats`` CLI.

Dead letters: JetStream announces a message that ran out of deliveries on
``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>``. A small
companion stream ``<stream>_DEAD`` captures those advisories durably, so a
dead letter is kept even if no worker is listening at that moment; workers
move them into the store's quarantine.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from townsquare.errors import BackendError
from townsquare.timeutil import parse_duration

log = logging.getLogger(__name__)

DEFAULT_STREAM = "TOWNSQUARE_POSTS"
DEFAULT_SUBJECT = "townsquare.posts"
DEFAULT_KV = "TOWNSQUARE_CURSORS"
ADVISORY_MAX_DELIVERIES = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
MAX_PAYLOAD = 1024 * 1024


class BusError(BackendError, RuntimeError):
    """The bus cannot be used as configured (unreachable server, bad URL)."""


@dataclass(frozen=True, slots=True)
class BusConfig:
    servers: str = "nats://127.0.0.1:4222"
    stream: str = DEFAULT_STREAM
    subject: str = DEFAULT_SUBJECT
    kv: str = DEFAULT_KV
    dupe_window_s: float = 120.0
    max_age_s: float = 7 * 86400.0

    @classmethod
    def from_url(cls, url: str) -> BusConfig:
        parts = urlsplit(url)
        if parts.scheme not in ("nats", "tls", "ws", "wss"):
            raise BusError(f"not a NATS URL: {url!r} (use nats://host:4222)")
        params = dict(parse_qsl(parts.query))
        unknown = set(params) - {"stream", "subject", "kv", "dupe_window", "max_age"}
        if unknown:
            raise BusError(f"unknown bus URL parameter(s): {', '.join(sorted(unknown))}")
        servers = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        # A stream named alone brings its own subjects and bucket, so two
        # deployments on one server never share them by accident.
        stream = params.get("stream", DEFAULT_STREAM)
        named = "stream" in params
        return cls(
            servers=servers,
            stream=stream,
            subject=params.get("subject", stream.lower() + ".posts" if named else DEFAULT_SUBJECT),
            kv=params.get("kv", stream + "_CURSORS" if named else DEFAULT_KV),
            dupe_window_s=parse_duration(params.get("dupe_window", "2m")).total_seconds(),
            max_age_s=parse_duration(params.get("max_age", "7d")).total_seconds(),
        )

    @property
    def dead_stream(self) -> str:
        return f"{self.stream}_DEAD"

    def subject_for(self, kind: str) -> str:
        token = "".join(c if c.isalnum() or c in "-_" else "_" for c in kind) or "unknown"
        return f"{self.subject}.{token}"

    def advisory_subject(self, consumer: str = "*") -> str:
        return f"{ADVISORY_MAX_DELIVERIES}.{self.stream}.{consumer}"


async def connect(cfg: BusConfig, name: str = "townsquare") -> Client:
    """Connect, reconnecting forever once connected; fail fast and clearly if never."""
    try:
        return await nats.connect(
            cfg.servers, name=name, connect_timeout=5, max_reconnect_attempts=-1,
            allow_reconnect=True,
        )
    except Exception as exc:  # nats raises several unrelated types for "cannot connect"
        raise BusError(f"cannot connect to NATS at {cfg.servers}: {exc or type(exc).__name__} "
                       "(is nats-server running with JetStream, -js?)") from exc


async def ensure_stream(js: JetStreamContext, cfg: BusConfig) -> None:
    """The posts stream and its dead-letter companion, created if missing."""
    await _ensure(js, StreamConfig(
        name=cfg.stream, subjects=[f"{cfg.subject}.>"], retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE, discard=DiscardPolicy.OLD, max_age=cfg.max_age_s,
        duplicate_window=cfg.dupe_window_s, max_msg_size=MAX_PAYLOAD,
    ))
    await _ensure(js, StreamConfig(
        name=cfg.dead_stream, subjects=[cfg.advisory_subject()],
        retention=RetentionPolicy.LIMITS, storage=StorageType.FILE, max_age=30 * 86400.0,
    ))


async def _ensure(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    try:
        await js.stream_info(config.name)
        return
    except NotFoundError:
        pass
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.stream_info(config.name)  # created meanwhile by another process: fine


async def cursor_bucket(js: JetStreamContext, cfg: BusConfig) -> KeyValue:
    """The KV bucket holding publishers' source cursors (one key per source)."""
    try:
        return await js.key_value(cfg.kv)
    except BucketNotFoundError:
        try:
            return await js.create_key_value(bucket=cfg.kv, history=1)
        except BadRequestError:
            return await js.key_value(cfg.kv)


async def delete_bus(cfg: BusConfig) -> None:
    """Remove the stream, its dead letters and the cursor bucket (tests, teardown)."""
    nc = await connect(cfg)
    try:
        js = nc.jetstream()
        for stream in (cfg.stream, cfg.dead_stream):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
        with contextlib.suppress(Exception):
            await js.delete_key_value(cfg.kv)
    finally:
        await nc.close()


async def bind_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    """Create the durable consumer unless it exists (then its settings are left as they are)."""
    assert config.durable_name is not None
    try:
        info = await js.consumer_info(stream, config.durable_name)
    except NotFoundError:
        try:
            await js.add_consumer(stream, config)
        except BadRequestError:
            await js.consumer_info(stream, config.durable_name)  # created meanwhile: fine
        return
    have = info.config
    if (have.ack_wait, have.max_deliver) != (config.ack_wait, config.max_deliver):
        log.warning(
            "consumer %s exists with ack_wait=%ss max_deliver=%s; keeping those "
            "(delete the consumer to change them)",
            config.durable_name, have.ack_wait, have.max_deliver,
        )
