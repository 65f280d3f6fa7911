"""``townsquare index --from nats://…``: durable consumers that write the bus into the store.

Every worker binds the same durable pull consumer (``--durable``, default
``townsquare-index``), so JetStream splits the stream between however many
run, on however many machines. Per fetched batch a worker:

1. decodes each message; one that is not a townsquare event becomes a
   quarantine record with the reason (it is a dead letter: retrying cannot
   help), in the same batch;
2. commits the batch through :meth:`Ingestor.commit`, the path direct ingest
   uses: embeddings computed, then posts, vectors and quarantine in one
   store transaction (the cursor saved is the last stream sequence, for
   status pages only: JetStream, not the store, tracks progress);
3. acknowledges every message, explicitly, only after that commit.

So delivery is at-least-once and storage exactly-once: a worker killed
between its commit and its acks has its messages redelivered (after
``ack_wait``) to another worker, whose upserts by post id are no-ops. While a
batch commits in a thread, the next one is fetched.

If a commit fails, each message of the batch is retried alone; one that
still fails is negatively acknowledged with a delay, and on its last allowed
delivery (``max_deliver``) quarantined with the error instead. When the first
two fail, the store itself is taken to be down: the rest go back at once and
the worker backs off. A message that
never gets that far (it crashes every worker that takes it) runs out of
deliveries: JetStream's advisory lands in ``<stream>_DEAD`` and a worker
quarantines the message from there (:mod:`townsquare.bus.deadletter`).

Limits, by design: two versions of one post (an edit and its original, or a
post and its delete) taken by two workers at the same moment, or one of them
redelivered after a crash, may be applied out of order; the bus keeps no
per-post order across consumers. Deletes arrive long after posts in practice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from townsquare.bus.codec import DecodeError, decode
from townsquare.bus.config import BusConfig, bind_consumer, connect, ensure_stream
from townsquare.bus.deadletter import DeadLetters
from townsquare.index.embedder import Embedder
from townsquare.ingest import Ingestor, IngestStats, Limits
from townsquare.model import Batch, Event, quarantine
from townsquare.retry import Backoff
from townsquare.store.base import Store

log = logging.getLogger(__name__)

DEFAULT_DURABLE = "townsquare-index"
FETCH_TIMEOUT_S = 1.0
#: Between rounds in which nothing could be committed (the store is down).
STORE_DOWN = Backoff(base=0.5, cap=10.0)
#: The delay a failed message asks JetStream for, by its delivery count (2, 4, 8... s).
REDELIVERY = Backoff(base=1.0, cap=60.0, jitter="none")


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    durable: str = DEFAULT_DURABLE
    batch: int = 500
    max_deliver: int = 5
    ack_wait_s: float = 30.0
    #: Exit once the consumer has nothing pending and nothing unacknowledged.
    stop_when_idle: bool = False


@dataclass(slots=True)
class _InFlight:
    msgs: list[Msg]
    events: list[Event]
    task: asyncio.Future[None]


class IndexWorker:
    """One consumer process's loop: fetch, decode, commit, acknowledge."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder | None,
        cfg: BusConfig,
        options: WorkerOptions | None = None,
        stats: IngestStats | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.options = options or WorkerOptions()
        self.ingestor = Ingestor(store, embedder, limits=limits)
        self.stream_key = f"nats:{cfg.stream}/{self.options.durable}"
        self.stats = stats or IngestStats(stream_key=self.stream_key)
        self._delays = STORE_DOWN.delays()

    def consumer_config(self) -> ConsumerConfig:
        o = self.options
        return ConsumerConfig(
            durable_name=o.durable, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=o.ack_wait_s, max_deliver=o.max_deliver,
            filter_subject=f"{self.cfg.subject}.>", max_ack_pending=max(4 * o.batch, 10_000),
            max_waiting=512,
        )

    async def run(self, stop: asyncio.Event | None = None) -> IngestStats:
        stop = stop or asyncio.Event()
        nc = await connect(self.cfg, name=f"townsquare-index {self.options.durable}")
        try:
            js = nc.jetstream()
            await ensure_stream(js, self.cfg)
            await bind_consumer(js, self.cfg.stream, self.consumer_config())
            sub = await js.pull_subscribe_bind(durable=self.options.durable,
                                               stream=self.cfg.stream)
            dead = DeadLetters(js, self.cfg, self.store, self.options.durable)
            await dead.bind()
            dead_task = asyncio.create_task(dead.run(stop))
            try:
                await self._loop(nc, sub, dead, stop)
            finally:
                stop.set()
                await dead_task
        finally:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=5)  # the last acks
            await nc.close()
        return self.stats

    async def _loop(self, nc: object, sub: JetStreamContext.PullSubscription,
                    dead: DeadLetters, stop: asyncio.Event) -> None:
        pending: _InFlight | None = None
        while not stop.is_set():
            try:
                msgs = await sub.fetch(self.options.batch, timeout=FETCH_TIMEOUT_S)
            except (TimeoutError, nats.errors.TimeoutError):
                msgs = []
            if pending is not None:
                await self._finish(pending)
                pending = None
            if msgs:
                events = [self._decode(m) for m in msgs]
                batch = Batch(events, cursor=str(msgs[-1].metadata.sequence.stream),
                              source_time=max(m.metadata.timestamp for m in msgs))
                task = asyncio.ensure_future(asyncio.to_thread(
                    self.ingestor.commit, self.stream_key, batch, self.stats))
                pending = _InFlight(msgs, events, task)
            elif self.options.stop_when_idle and await self._idle(nc, sub, dead):
                break
        if pending is not None:
            await self._finish(pending)

    def _decode(self, msg: Msg) -> Event:
        try:
            return decode(msg.data)
        except DecodeError as exc:
            seq = msg.metadata.sequence.stream
            return quarantine("nats", msg.data,
                              f"dead letter: undecodable message on {msg.subject} "
                              f"(stream seq {seq}): {exc}")

    async def _finish(self, job: _InFlight) -> None:
        try:
            await job.task
        except Exception as exc:
            log.warning("batch of %d failed (%s); retrying its messages one by one",
                        len(job.msgs), exc)
            await self._one_by_one(job.msgs, job.events)
            return
        for m in job.msgs:
            await m.ack()
        self._delays = STORE_DOWN.delays()

    async def _one_by_one(self, msgs: Sequence[Msg], events: Sequence[Event]) -> None:
        failed = 0
        for i, (msg, event) in enumerate(zip(msgs, events, strict=True)):
            if failed >= 2 and failed == i:
                # Nothing goes through: the store is down, not one bad message.
                # Hand the rest back at once rather than time out on each.
                for rest in msgs[i:]:
                    await rest.nak(delay=REDELIVERY.delay(rest.metadata.num_delivered))
                break
            one = Batch([event], cursor=str(msg.metadata.sequence.stream))
            try:
                await asyncio.to_thread(self.ingestor.commit, self.stream_key, one, self.stats)
                await msg.ack()
                continue
            except Exception as exc:
                error = exc
            failed += 1
            if msg.metadata.num_delivered >= self.options.max_deliver:
                reason = (f"dead letter: {msg.subject} (stream seq "
                          f"{msg.metadata.sequence.stream}) failed on its last delivery: {error}")
                try:
                    await asyncio.to_thread(self.store.apply, self.stream_key + "/dead",
                                            [quarantine("nats", msg.data, reason)], None)
                    await msg.ack()
                    continue
                except Exception:
                    log.exception("cannot quarantine %s; JetStream will dead-letter it", reason)
            await msg.nak(delay=REDELIVERY.delay(msg.metadata.num_delivered))
        if failed:
            await asyncio.sleep(next(self._delays))  # the store may be down: do not spin

    async def _idle(self, nc: object, sub: JetStreamContext.PullSubscription,
                    dead: DeadLetters) -> bool:
        await nc.flush()  # type: ignore[attr-defined]  # our acks reach the server first
        info = await sub.consumer_info()
        return info.num_pending == 0 and info.num_ack_pending == 0 and await dead.idle()
