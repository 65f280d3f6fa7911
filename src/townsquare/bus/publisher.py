"""``townsquare ingest … --publish nats://…``: a source's events onto the JetStream stream.

The publisher normalizes (the source does that) and publishes; it never
touches a store, so it needs no database and no embedder, and many can run
on small machines close to their upstreams.

Each batch is published with pipelined async publishes, then every publish
acknowledgement is awaited (JetStream has stored the message, or told us it
was a duplicate), and only then is the source cursor saved. The cursor lives
in a JetStream KV bucket (``kv=`` in the URL, default ``TOWNSQUARE_CURSORS``),
not in a file in the home directory: it then sits beside the stream it
describes, survives the publisher moving to another machine or container,
and is visible to operators (``nats kv get``). A crash between the acks and
the cursor save republishes the last batch on restart; JetStream drops those
copies by message id within the duplicate window, and past it the store's
idempotent upserts make them harmless.

Posts pass admission (:class:`~townsquare.ingest.Limits`: types, Unicode,
time and size bounds) before they are encoded, so what goes on the bus is
already bounded and a bad record is a quarantine message with its reason;
the index worker admits again, for publishers that are not this one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import sys
import time
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from townsquare.bus.codec import MSG_ID_HEADER, encode
from townsquare.bus.config import BusConfig, connect, cursor_bucket, ensure_stream
from townsquare.ingest import IngestStats, Limits
from townsquare.model import Batch
from townsquare.sources.base import Source
from townsquare.timeutil import utcnow

PROGRESS_EVERY_S = 5.0


@dataclass
class PublishStats(IngestStats):
    """IngestStats plus what the bus dropped as already seen."""

    duplicates: int = 0
    messages: int = 0


def cursor_key(source_key: str) -> str:
    """A KV key for a source key (KV keys allow few characters; base64url is exact)."""
    return "src." + base64.urlsafe_b64encode(source_key.encode()).decode().rstrip("=")


async def publish_source(
    source: Source, nats_url: str, quiet: bool = False, stop: asyncio.Event | None = None,
    limits: Limits | None = None,
) -> IngestStats:
    """Publish ``source`` from its saved cursor until it ends, ``stop`` is set, or SIGINT/TERM."""
    limits = limits or Limits()
    cfg = BusConfig.from_url(nats_url)
    nc = await connect(cfg, name=f"townsquare-publish {source.key}")
    stop = stop or asyncio.Event()
    signals = _install_signals(stop)
    stats = PublishStats(stream_key=source.key)
    try:
        js = nc.jetstream(publish_async_max_pending=8192)
        await ensure_stream(js, cfg)
        kv = await cursor_bucket(js, cfg)
        key = cursor_key(source.key)
        try:
            cursor: str | None = (await kv.get(key)).value.decode()  # type: ignore[union-attr]
        except KeyNotFoundError:
            cursor = None
        subject = cfg.subject_for(source.kind)
        max_bytes = min(nc.max_payload, 1024 * 1024) - 1024
        last_print = time.monotonic()
        agen = source.stream(cursor)
        try:
            async for batch in agen:
                batch = Batch(limits.admit(batch.events), batch.cursor, batch.source_time)
                await _publish(js, subject, batch, max_bytes, stats)
                if batch.cursor is not None:
                    await kv.put(key, batch.cursor.encode())
                now = time.monotonic()
                if not quiet and now - last_print >= PROGRESS_EVERY_S:
                    _progress(stats)
                    last_print = now
                if stop.is_set():
                    break
        finally:
            await agen.aclose()  # type: ignore[attr-defined]
        if not quiet:
            _progress(stats, done=True)
    finally:
        for sig in signals:
            asyncio.get_running_loop().remove_signal_handler(sig)
        await nc.drain()
    return stats


async def _publish(js: JetStreamContext, subject: str, batch: Batch, max_bytes: int,
                   stats: PublishStats) -> None:
    envelopes = [encode(ev, max_bytes) for ev in batch.events]
    futures = [
        await js.publish_async(subject, env.data, headers={MSG_ID_HEADER: env.msg_id})
        for env in envelopes
    ]
    acks = await asyncio.gather(*futures)
    for env, ack in zip(envelopes, acks, strict=True):
        stats.messages += 1
        if ack.duplicate:
            stats.duplicates += 1
        elif env.op == "upsert":
            stats.posts += 1
        elif env.op == "delete":
            stats.deletes += 1
        elif env.op == "quarantine":
            stats.quarantined += 1
    stats.batches += 1
    stats.note(len(envelopes))
    stats.last_batch_at = utcnow()
    if batch.source_time is not None:
        stats.lag_s = max(0.0, (stats.last_batch_at - batch.source_time).total_seconds())


def _install_signals(stop: asyncio.Event) -> list[signal.Signals]:
    installed = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    return installed


def _progress(stats: PublishStats, done: bool = False) -> None:
    line = (
        f"{'done: ' if done else ''}{stats.posts:,} posts published, "
        f"{stats.duplicates:,} duplicates dropped by the bus, {stats.deletes:,} deletes, "
        f"{stats.quarantined:,} quarantined, {stats.overall_rate:,.0f} posts/s"
    )
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
