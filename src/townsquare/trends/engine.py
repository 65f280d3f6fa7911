"""One object the service holds: detector, recent posts and stories behind a lock.

Ingest calls :meth:`TrendEngine.add` for every new post; HTTP handlers, the
web panel and chat call :meth:`trends` and :meth:`stories` from other
threads. :meth:`from_store` rebuilds the state from the store after a
restart (trends are derived data: nothing of it is persisted).

Deletes: :meth:`forget` drops a deleted post from the recent posts, so no
story shows, clusters or cites it and no trend offers it as a sample. Its
counts stay in the windows it was counted in until they slide past (the
detector keeps author-minutes, not posts, so a delete cannot be subtracted
exactly); a deleted post is never shown, it may still have helped a term trend.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from townsquare.model import Post
from townsquare.store.base import Store
from townsquare.trends.detector import TrendDetector
from townsquare.trends.recent import RecentPosts
from townsquare.trends.results import Trend
from townsquare.trends.stories import AsyncSummarizer, Story, StoryBuilder, Summarizer


class TrendEngine:
    """Thread-safe facade over a detector, its recent posts and a story builder."""

    def __init__(
        self,
        detector: TrendDetector | None = None,
        recent: RecentPosts | None = None,
        **story_options: Any,
    ) -> None:
        self.detector = detector or TrendDetector()
        longest = max(spec.seconds for spec in self.detector.windows)
        self.recent = recent or RecentPosts(max_age_s=float(longest))
        self.stories_builder = StoryBuilder(self.detector, self.recent, **story_options)
        self._lock = threading.Lock()
        # Deleted post ids (bounded, newest kept) to filter trend samples.
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self._max_deleted = 100_000

    @classmethod
    def from_store(
        cls,
        store: Store,
        now: datetime,
        history: timedelta = timedelta(hours=24),
        **options: Any,
    ) -> TrendEngine:
        """An engine fed the store's posts from ``now - longest window - history`` to ``now``.

        ``history`` is the stretch before the longest window that warms the
        baselines up; without it every feature is new and the loudest ones
        "trend". Posts after ``now`` are skipped, so a past ``now`` replays.
        """
        engine = cls(**options)
        longest = max(spec.seconds for spec in engine.detector.windows)
        since = now - timedelta(seconds=longest) - history
        for _key, post in store.iter_posts(since=since):
            if post.created_at <= now:
                engine.add(post)
        engine.detector.advance(now)
        return engine

    def add(self, post: Post, features: dict[str, str] | None = None) -> bool:
        """Count a post; False if it was already counted."""
        with self._lock:
            feats = self.detector.add(post, features)
            if feats is None:
                return False
            self.recent.add(post, feats)
            return True

    def add_many(self, posts: Iterable[Post], workers: int = 0) -> int:
        """Count posts; ``workers`` > 0 extracts features in worker processes."""
        n = 0
        if workers > 0:
            from townsquare.trends.parallel import ParallelExtractor

            with ParallelExtractor(workers) as px:
                for post, feats in px.map(posts):
                    n += self.add(post, feats)
        else:
            for post in posts:
                n += self.add(post)
        return n

    def forget(self, post_ids: Iterable[str]) -> int:
        """Deleted posts: never shown, clustered or cited again; returns how many were held."""
        n = 0
        with self._lock:
            for pid in post_ids:
                n += self.recent.remove(pid)
                self._deleted[pid] = None
                self._deleted.move_to_end(pid)
            while len(self._deleted) > self._max_deleted:
                self._deleted.popitem(last=False)
        return n

    def trends(self, window: str = "1h", limit: int = 20, **kw: Any) -> list[Trend]:
        with self._lock:
            found = self.detector.trends(window, limit, **kw)
            if self._deleted:
                for t in found:
                    t.sample_ids = [pid for pid in t.sample_ids if pid not in self._deleted]
            return found

    def stories(
        self,
        window: str = "1h",
        limit: int = 10,
        now: datetime | None = None,
        summarizer: Summarizer | None = None,
        mode: str = "regular",
        max_summaries: int | None = None,
    ) -> list[Story]:
        """Stories, with summaries when a summarizer is given (cached across calls)."""
        with self._lock:
            stories = self.stories_builder.build(window, limit, now=now)
            if summarizer is not None:
                self.stories_builder.summarize(stories, summarizer, mode, max_summaries)
            return stories

    async def astories(
        self,
        summarizer: AsyncSummarizer,
        window: str = "1h",
        limit: int = 10,
        mode: str = "regular",
        max_summaries: int | None = None,
    ) -> list[Story]:
        """Stories summarized by an async summarizer; the lock is not held while it runs.

        The build runs in a worker thread (it can take tens of milliseconds),
        the summaries on the caller's event loop.
        """
        stories = await asyncio.to_thread(self.stories, window, limit)
        return await self.stories_builder.asummarize(stories, summarizer, mode, max_summaries)

    async def asummarize(
        self,
        stories: list[Story],
        summarizer: AsyncSummarizer,
        mode: str = "regular",
        max_summaries: int | None = None,
    ) -> list[Story]:
        """Summarize stories already built (cached per story, mode and size)."""
        return await self.stories_builder.asummarize(stories, summarizer, mode, max_summaries)

    def post_count(self, window: str) -> int:
        """Posts counted in ``window`` (what its trends are out of)."""
        with self._lock:
            return int(self.detector.totals(window)[1])

    def window_names(self) -> list[str]:
        """The windows this engine keeps (``5m``, ``1h``, ``24h`` by default)."""
        return list(self.detector.window_names())

    def post(self, post_id: str) -> Post | None:
        """A recent post by id (to hydrate trend samples and story citations)."""
        with self._lock:
            return self.recent.get(post_id)

    def public_posts(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """Recent posts by id as the API shows them (deleted and expired ones skipped)."""
        with self._lock:
            posts = [self.recent.get(pid) for pid in ids]
        return [p.public_dict() for p in posts if p is not None]

    def story_dict(self, story: Story, samples: int = 5) -> dict[str, Any]:
        """A story as the API and ``trends --json`` show it.

        ``posts``: up to ``samples`` representative posts; ``citations``: the
        summary's sources as numbered posts (marker ``[n]`` is the one with ``n``).
        """
        item = story.to_dict()
        item["posts"] = self.public_posts(list(story.representative_ids)[:samples])
        item["citations"] = [
            {"n": n, **post} for n, post in enumerate(self.public_posts(story.citations), 1)
        ]
        return item
