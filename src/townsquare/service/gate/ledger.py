"""The usage ledger's writer: requests queue rows, a worker thread writes them.

Billing needs every metered request in the store (key, model, prompt and
completion tokens, route, time), but a request must not wait for a SQLite
write or hold the writer lock the ingest pipeline needs. So requests append
to an in-memory list and a background task hands the list to a thread every
``interval`` seconds; ``flush`` (on shutdown, and before the quota reads the
ledger) writes whatever is pending right away. A crash can lose at most the
last ``interval`` of rows.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from townsquare.store.base import Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UsageEntry:
    key_id: int | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    route: str
    at: datetime


class UsageLedger:
    def __init__(self, store: Store, interval: float = 0.5) -> None:
        self.store = store
        self.interval = interval
        self._pending: list[UsageEntry] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self.written = 0

    def record(
        self,
        key_id: int | None,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        route: str,
    ) -> None:
        entry = UsageEntry(key_id, model, prompt_tokens, completion_tokens, route,
                           datetime.now(UTC))
        with self._lock:
            self._pending.append(entry)
        self._ensure_worker()

    def _ensure_worker(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a sync caller): flush_sync() or the next async record writes it
        self._task = asyncio.create_task(self._worker(), name="usage-ledger")

    async def _worker(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._pending:
                try:
                    await asyncio.to_thread(self.flush_sync)
                except Exception:  # keep metering; the rows stay pending for the next try
                    log.exception("usage ledger: write failed, will retry")

    def flush_sync(self) -> int:
        """Write every pending row now (blocking); returns how many."""
        with self._write_lock:
            with self._lock:
                rows, self._pending = self._pending, []
            done = 0
            try:
                for row in rows:
                    self.store.record_usage(
                        row.key_id, row.model, row.prompt_tokens, row.completion_tokens,
                        row.route, row.at,
                    )
                    done += 1
            except BaseException:
                with self._lock:
                    self._pending[:0] = rows[done:]
                raise
            self.written += done
            return done

    async def flush(self) -> int:
        return await asyncio.to_thread(self.flush_sync)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
