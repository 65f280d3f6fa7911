"""A result cache for ``POST /v1/search`` that never serves what a write made stale.

Hybrid search over a large store costs tens of milliseconds (BM25 over every
match, a dense scan); popular queries arrive many times a second. An entry
is served only while nothing could have changed its answer:

- no commit in this process since it was computed (the ingest listener bumps
  :attr:`SearchCache.generation` after every committed batch);
- no new vector in the store from any process (the dense index's sequence,
  which the retriever syncs from the store at most every 100 ms);
- and for at most ``ttl_s`` seconds, which bounds what neither signal sees:
  relative windows (``since: 1d``) sliding, recency scores decaying, and
  deletes or vector-less writes made by another process. Without an embedder
  there is no vector signal, so ``ttl_s`` should stay at a second or less
  there (``create_app`` passes 1 s then).

Identical requests that arrive while one is being computed wait for that one
computation (single flight) instead of running it fifty times.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    generation: tuple[int, int]
    at: float
    value: bytes


class SearchCache:
    def __init__(
        self,
        ttl_s: float = 5.0,
        max_entries: int = 2048,
        version: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.version = version or (lambda: 0)
        self.clock = clock
        self.generation = 0
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._flights: dict[str, asyncio.Future[bytes]] = {}
        self.hits = 0
        self.misses = 0

    def invalidate(self, *_: object) -> None:
        """Forget everything (an ingest listener: called after each commit, from any thread)."""
        self.generation += 1

    def _current(self) -> tuple[int, int]:
        return self.generation, self.version()

    async def get(self, key: str, compute: Callable[[], Awaitable[bytes]]) -> bytes:
        if self.ttl_s <= 0:
            return await compute()
        now = self.clock()
        current = self._current()
        entry = self._entries.get(key)
        if entry is not None and entry.generation == current and now - entry.at < self.ttl_s:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.value
        flight = self._flights.get(key)
        if flight is not None:
            try:
                value = await asyncio.shield(flight)
                self.hits += 1
                return value
            except asyncio.CancelledError:
                if not flight.cancelled():
                    raise  # this request was cancelled, not the one it waited for
            # The request computing it went away: compute it here.
        self.misses += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        try:
            value = await compute()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            self._flights.pop(key, None)
        future.set_result(value)
        # Tagged with the state *before* computing: a commit meanwhile makes it stale at once.
        self._entries[key] = _Entry(current, now, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value
