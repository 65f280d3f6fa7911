"""The live feed: every post committed to the store, by this process or any other.

``serve`` hears what its own supervisor commits through an ingest listener,
at once. Posts that a separate ``townsquare ingest`` process writes into the
same store never pass through that listener, so :class:`PostFeed` also
follows the store itself: every :data:`POLL_S` it asks for the highest post
key, and when that moved it reads the rows above the last one it saw. A
post reaches the feed through whichever path sees it first, and only once:
the feed remembers recent ``(id, text)`` pairs, so an edit (same id, new
text) comes through again but a post heard in-process is not repeated when
the poll reads its row.

PostgreSQL hands out keys before commit, so a transaction that commits late
can land below keys already seen; the poll there re-reads a window of
:data:`PG_LOOKBACK` keys below the last one (deduplicated as above). SQLite
has a single writer: keys appear in order, no window is needed.

What it feeds:

- listeners (``(posts, deleted) -> None``, the ingest listener shape): the
  standing-query hub, the search cache; called from the thread that found
  the posts;
- subscribers (:meth:`PostFeed.subscribe`): an asyncio queue per reader,
  filtered by source, language and author; ``GET /v1/posts/stream``
  (:mod:`townsquare.service.routes.feed`) streams them to the web page.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from townsquare.ingest.pipeline import Listener
from townsquare.model import Post
from townsquare.store.base import SearchFilters, Store

log = logging.getLogger(__name__)

#: How often the store is asked for rows another process committed.
POLL_S = 0.25
#: PostgreSQL: keys below the last seen that are read again (late commits).
PG_LOOKBACK = 256
#: Posts remembered to drop duplicates between the two paths.
REMEMBER = 20_000
#: Rows read per poll at most (a bulk import shows its newest, not all of it).
MAX_PER_POLL = 2_000
#: Posts a slow SSE subscriber may have pending before new ones are dropped for it.
SUBSCRIBER_BACKLOG = 500


@dataclass(eq=False)
class FeedSubscriber:
    loop: asyncio.AbstractEventLoop
    filters: SearchFilters
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_BACKLOG))
    dropped: int = 0


class PostFeed:
    """Fans committed posts out to listeners and SSE subscribers, once each."""

    def __init__(self, store: Store, poll_s: float = POLL_S) -> None:
        self.store = store
        self.poll_s = poll_s
        self.lookback = PG_LOOKBACK if store.kind == "postgresql" else 0
        self.listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, int] = OrderedDict()  # post id -> hash of its text
        self._subs: set[FeedSubscriber] = set()
        self._last_key: int | None = None
        #: Posts delivered, by path (for tests and /metrics-style curiosity).
        self.heard_in_process = 0
        self.found_by_poll = 0

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    # --- the two ways in ---------------------------------------------------------------

    def heard(self, posts: list[Post], deleted: list[str]) -> None:
        """The supervisor's ingest listener: posts this process just committed."""
        fresh = self._fresh(posts)
        self.heard_in_process += len(fresh)
        self._deliver(fresh, deleted)

    def poll_once(self) -> int:
        """Read rows committed since the last poll (by anyone); deliver the new ones."""
        top = self.store.last_key()
        if self._last_key is None:
            self._last_key = top  # start at the present: history is what backlog is for
            return 0
        if top <= self._last_key:
            return 0
        start = max(0, self._last_key - self.lookback)
        rows: list[Post] = []
        last = self._last_key
        for key, post in self.store.iter_posts(after_key=start, batch=500):
            rows.append(post)
            last = max(last, key)
            if len(rows) >= MAX_PER_POLL + self.lookback:
                break  # the rest comes next poll
        self._last_key = last
        fresh = self._fresh(rows)
        self.found_by_poll += len(fresh)
        self._deliver(fresh, [])
        return len(fresh)

    async def run(self) -> None:
        """Poll until cancelled (started by the app's lifespan)."""
        while True:
            try:
                await asyncio.to_thread(self.poll_once)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("live feed: reading new posts failed; retrying")
            await asyncio.sleep(self.poll_s)

    # --- fan-out ------------------------------------------------------------------

    def _fresh(self, posts: list[Post]) -> list[Post]:
        out = []
        with self._lock:
            for post in posts:
                digest = hash(post.text)
                if self._seen.get(post.id) == digest:
                    continue
                self._seen[post.id] = digest
                self._seen.move_to_end(post.id)
                out.append(post)
            while len(self._seen) > REMEMBER:
                self._seen.popitem(last=False)
        return out

    def _deliver(self, posts: list[Post], deleted: list[str]) -> None:
        if not posts and not deleted:
            return
        for listener in self.listeners:
            try:
                listener(posts, deleted)
            except Exception:
                log.exception("live feed listener failed")
        if not posts:
            return
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            matching = [p.public_dict() for p in posts if sub.filters.matches(p)]
            for item in matching:
                sub.loop.call_soon_threadsafe(_offer, sub, item)

    def subscribe(self, filters: SearchFilters) -> FeedSubscriber:
        sub = FeedSubscriber(asyncio.get_running_loop(), filters)
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: FeedSubscriber) -> None:
        with self._lock:
            self._subs.discard(sub)

    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)


def _offer(sub: FeedSubscriber, item: dict[str, Any]) -> None:
    try:
        sub.queue.put_nowait(item)
    except asyncio.QueueFull:
        sub.dropped += 1  # a reader this far behind loses posts rather than memory
