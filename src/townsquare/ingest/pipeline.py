"""The ingest pipeline: source batches -> embed -> one store transaction each.

For every batch a source yields, the pipeline embeds the new/edited posts
(outside the transaction, so readers are never blocked on the model), then
commits events, vectors and the source cursor together. A crash anywhere
either keeps a batch and its cursor or neither, so a restart resumes without
loss or duplicates. Malformed input arrives as ``Quarantine`` events and is
stored with its reason; ingestion goes on.

Bad input never stops ingestion. Before anything else, every batch passes
:class:`~townsquare.ingest.admission.Limits` (types, valid Unicode, time
bounds, size caps), which turns unfit posts into quarantine records. Should
the store still refuse the batch because of a value in it (the store says
which errors those are: :meth:`Store.refused_record`), the batch is split in
halves until the record that breaks it stands alone; that record is
quarantined with the store's error and everything else commits. The parts
before the last are saved with the cursor the stream already had, so a crash
in between replays them (idempotently) rather than skips any; the last part
carries the batch's cursor past the bad record. An engine failure (locked,
down, full) is never split: it fails the batch, which is retried whole.

Committed posts are handed to listeners (trend detector, standing queries,
metrics) after the commit, never before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from townsquare.index.embedder import Embedder
from townsquare.ingest.admission import Limits
from townsquare.model import Batch, Delete, Event, Post, Quarantine, Upsert, quarantine
from townsquare.sources.base import Source
from townsquare.store.base import ApplyResult, Store
from townsquare.timeutil import utcnow

log = logging.getLogger(__name__)

Listener = Callable[[list[Post], list[str]], None]


@dataclass
class IngestStats:
    """Running figures for the progress line, /metrics and the status page."""

    stream_key: str = ""
    posts: int = 0
    deletes: int = 0
    quarantined: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)
    last_batch_at: datetime | None = None
    newest_post_at: datetime | None = None
    #: Seconds between the newest event's time at the source and its commit here.
    lag_s: float | None = None
    _window: list[tuple[float, int]] = field(default_factory=list)

    def note(self, n: int) -> None:
        now = time.monotonic()
        self._window.append((now, n))
        while self._window and now - self._window[0][0] > 5.0:
            self._window.pop(0)

    @property
    def rate(self) -> float:
        """Posts per second over the last few seconds."""
        if not self._window:
            return 0.0
        span = max(time.monotonic() - self._window[0][0], 0.5)
        return sum(n for _, n in self._window) / span

    @property
    def overall_rate(self) -> float:
        return self.posts / max(time.monotonic() - self.started, 1e-9)


class Ingestor:
    """Runs one source into one store."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder | None = None,
        listeners: list[Listener] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.listeners = list(listeners or [])
        self.limits = limits or Limits()
        if embedder is not None and hasattr(store, "set_embedder_name"):
            store.set_embedder_name(embedder.name, embedder.dim)

    async def run(
        self,
        source: Source,
        stop: asyncio.Event | None = None,
        stats: IngestStats | None = None,
    ) -> IngestStats:
        """Consume ``source`` from its saved cursor until it ends or ``stop`` is set."""
        stats = stats or IngestStats(stream_key=source.key)
        cursor = await asyncio.to_thread(self.store.get_cursor, source.key)
        loop = asyncio.get_running_loop()
        agen = source.stream(cursor)
        # One commit in flight while the source reads and parses the next
        # batch. Both need the GIL for their Python parts, and a thread that
        # gives it up waits a whole switch interval to get it back, so the
        # next batch is parsed only once the store says the rest of this
        # write is native work (``staged``: FTS indexing, the commit).
        # Commits stay strictly in order (each waits for the previous).
        pending: asyncio.Future[None] | None = None
        try:
            async for batch in agen:
                if pending is not None:
                    await pending
                staged = asyncio.Event()
                pending = asyncio.ensure_future(
                    asyncio.to_thread(
                        self.commit, source.key, batch, stats, _setter(loop, staged)
                    )
                )
                await _first_of(pending, staged)
                if stop is not None and stop.is_set():
                    break
            if pending is not None:
                await pending
        finally:
            if pending is not None and not pending.done():
                await asyncio.shield(pending)
            await agen.aclose()  # type: ignore[attr-defined]
        return stats

    def commit(
        self,
        stream_key: str,
        batch: Batch,
        stats: IngestStats,
        staged: Callable[[], None] | None = None,
    ) -> None:
        """Embed and write one batch (blocking; runs in a worker thread).

        ``staged`` goes to :meth:`Store.apply`: called when the rest of the
        write no longer needs the interpreter.
        """
        events = self.limits.admit(batch.events)
        upserts = [ev.post for ev in events if isinstance(ev, Upsert)]
        vectors = None
        if self.embedder is not None and upserts:
            mat = self.embedder.embed([p.text for p in upserts])
            vectors = {p.id: mat[i] for i, p in enumerate(upserts)}
        try:
            result = self.store.apply(stream_key, events, batch.cursor, vectors, staged)
        except Exception as exc:
            if not self.store.refused_record(exc):
                raise
            log.warning("%s: the store refused a batch of %d (%s); isolating the record",
                        stream_key, len(events), _describe(exc))
            result, refused = self._isolate(stream_key, events, batch.cursor, vectors)
            upserts = [p for p in upserts if p.id not in refused]
        now = utcnow()
        stats.posts += result.upserted
        stats.deletes += result.deleted
        stats.quarantined += result.quarantined
        stats.batches += 1
        stats.last_batch_at = now
        stats.note(result.upserted)
        if upserts:
            newest = max(p.created_at for p in upserts)
            if stats.newest_post_at is None or newest > stats.newest_post_at:
                stats.newest_post_at = newest
        ref = batch.source_time
        if ref is not None:
            stats.lag_s = max(0.0, (now - ref).total_seconds())
        if self.listeners:
            deleted = [ev.id for ev in batch.events if isinstance(ev, Delete)]
            for listener in self.listeners:
                listener(upserts, deleted)

    def _isolate(
        self,
        stream_key: str,
        events: list[Event],
        cursor: str | None,
        vectors: dict[str, Any] | None,
    ) -> tuple[ApplyResult, set[str]]:
        """Apply ``events`` in ever smaller parts until each refused record stands
        alone, and quarantine those; see the module docstring. Returns the
        result and the ids of the posts refused."""
        before = self.store.get_cursor(stream_key)
        total = ApplyResult()
        refused: set[str] = set()
        parts = [events]
        while parts:
            part = parts.pop(0)
            saved = cursor if not parts else before
            try:
                total.add(self.store.apply(stream_key, part, saved, _only(vectors, part)))
                continue
            except Exception as exc:
                if not self.store.refused_record(exc):
                    raise
                error = exc
            if len(part) > 1:
                half = len(part) // 2
                parts[:0] = [part[:half], part[half:]]
                continue
            if not part:  # nothing but the cursor, and it was refused
                raise error
            bad = part[0]
            if isinstance(bad, Upsert):
                refused.add(bad.post.id)
            record = _as_quarantine(bad, stream_key, f"the store refused it: {_describe(error)}")
            total.add(self.store.apply(stream_key, [record], saved))
        return total, refused


def _only(vectors: dict[str, Any] | None, events: list[Event]) -> dict[str, Any] | None:
    if not vectors:
        return None
    ids = {ev.post.id for ev in events if isinstance(ev, Upsert)}
    return {pid: vec for pid, vec in vectors.items() if pid in ids} or None


def _as_quarantine(event: Event, stream_key: str, reason: str) -> Quarantine:
    """The quarantine record for an event the store would not take."""
    kind = _ascii(stream_key.partition(":")[0])
    if isinstance(event, Upsert):
        p = event.post
        raw = p.raw if isinstance(p.raw, str | bytes) else f"<{type(p.raw).__name__}>"
        return quarantine(_ascii(p.source, kind), raw, f"post {p.id!r}: {reason}")
    if isinstance(event, Quarantine):  # the record itself could not be stored
        return quarantine(_ascii(event.source, kind), bytes(event.raw),
                          f"{event.reason!r}; {reason}")
    return quarantine(kind, repr(event), f"{type(event).__name__.lower()}: {reason}")


def _ascii(source: object, fallback: str = "unknown") -> str:
    text = str(source)
    return text if text.isascii() and 0 < len(text) <= 64 else fallback


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _setter(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> Callable[[], None]:
    """A callback any thread may call to set ``event`` on ``loop``."""

    def set_event() -> None:
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # the loop closed under a shutdown: nobody waits
            pass

    return set_event


async def _first_of(task: asyncio.Future[None], event: asyncio.Event) -> None:
    """Wait until ``task`` is done or ``event`` is set (without consuming errors)."""
    if task.done() or event.is_set():
        return
    waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
