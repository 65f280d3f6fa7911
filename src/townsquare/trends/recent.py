"""A bounded buffer of recent posts with their features, for building stories.

The detector keeps counts, not posts. Stories need the posts themselves
(their text to fold duplicates, their features to cluster), so the last
``max_posts`` posts within ``max_age_s`` of the newest are kept here, each
with the feature keys the detector already extracted and, once computed,
its near-duplicate fingerprint, so a refresh only fingerprints new posts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from townsquare.model import Post
from townsquare.trends.dedup import minhash, normalize, shingles


@dataclass(slots=True)
class RecentPost:
    post: Post
    ts: float
    features: Collection[str]
    norm: str | None = None
    shingles: frozenset[int] | None = None
    signature: np.ndarray | None = None

    def fingerprint(self) -> tuple[str, frozenset[int], np.ndarray]:
        """Normalized text, shingles and MinHash, computed once per post."""
        if self.norm is None or self.shingles is None or self.signature is None:
            self.norm = normalize(self.post.text)
            self.shingles = shingles(self.norm)
            self.signature = minhash(self.shingles)
        return self.norm, self.shingles, self.signature


class RecentPosts:
    """The newest posts (bounded by count and by age), oldest first."""

    def __init__(self, max_posts: int = 50_000, max_age_s: float = 86_400.0) -> None:
        self.max_posts = max_posts
        self.max_age_s = max_age_s
        self._items: deque[RecentPost] = deque()
        self._by_id: dict[str, RecentPost] = {}
        self._newest = float("-inf")

    def __len__(self) -> int:
        return len(self._items)

    def add(self, post: Post, features: Collection[str]) -> None:
        """Keep a post with its feature keys (held, not copied: pass a fresh collection)."""
        if post.id in self._by_id:
            return
        ts = post.created_at.timestamp()
        item = RecentPost(post, ts, features)
        items = self._items
        items.append(item)
        self._by_id[post.id] = item
        if ts > self._newest:
            self._newest = ts
        if len(items) > self.max_posts or items[0].ts < self._newest - self.max_age_s:
            self._prune()

    def _prune(self) -> None:
        items, horizon = self._items, self._newest - self.max_age_s
        while items and (len(items) > self.max_posts or items[0].ts < horizon):
            gone = items.popleft()
            self._by_id.pop(gone.post.id, None)

    def remove(self, post_id: str) -> bool:
        """Forget a deleted post: stories stop showing, clustering and citing it.

        The deque keeps its slot until it ages out (removing from its middle
        would cost O(n)); :meth:`since` skips it because it left ``_by_id``.
        """
        return self._by_id.pop(post_id, None) is not None

    def get(self, post_id: str) -> Post | None:
        item = self._by_id.get(post_id)
        return item.post if item else None

    def since(self, start: datetime, end: datetime | None = None) -> list[RecentPost]:
        """Posts with ``start <= created_at < end``, in time order."""
        lo = start.timestamp()
        hi = end.timestamp() if end else float("inf")
        live = self._by_id
        out = [it for it in self._items
               if lo <= it.ts < hi and live.get(it.post.id) is it]
        out.sort(key=lambda it: (it.ts, it.post.id))
        return out
