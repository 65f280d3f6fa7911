"""Hybrid retrieval: lexical + dense candidates, fused by rank, weighted by recency.

Each retriever proposes candidates in its own order; reciprocal rank fusion
(RRF, Cormack et al. 2009) combines them without calibrating BM25 against
cosine, then a recency factor with a configurable half-life favours fresh
posts without burying an old post that is the only real match:

    score = (sum over lists of 1 / (k + rank)) * (floor + (1 - floor) * 0.5 ** (age / half_life))

Filters are applied inside each retriever (SQL for lexical; time window in
the dense index, the rest at hydration), so a narrow filter never starves
the result list.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from townsquare.index.embedder import Embedder
from townsquare.model import Post
from townsquare.store.base import Candidate, SearchFilters, Store
from townsquare.timeutil import utcnow

if TYPE_CHECKING:
    from townsquare.index.dense import DenseIndex

Mode = Literal["hybrid", "lexical", "dense", "recent"]
#: relevance: fused rank x recency; latest: the relevant posts, newest first; top: the
#: relevant posts with the most engagement first (likes, reposts, replies, quotes).
Sort = Literal["relevance", "latest", "top"]
SORTS: tuple[Sort, ...] = ("relevance", "latest", "top")
#: Score factor for posts by an author the question names ambiguously (see answer/query.py).
AUTHOR_BOOST = 3.0
RRF_K = 60
RECENCY_FLOOR = 0.25
#: How stale the in-process dense index may be before a search pulls new vectors.
DENSE_SYNC_S = 0.1


@dataclass(slots=True)
class SearchRequest:
    query: str
    filters: SearchFilters = field(default_factory=SearchFilters)
    limit: int = 10
    mode: Mode = "hybrid"
    sort: Sort = "relevance"
    #: Author ids or handles whose posts rank higher (names resolved with doubt).
    boost_authors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SearchHit:
    post: Post
    score: float
    lexical_rank: int | None = None
    dense_rank: int | None = None


class Retriever:
    """Searches one store (and its dense index, when there is an embedder)."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder | None = None,
        dense: DenseIndex | None = None,
        half_life: timedelta = timedelta(hours=6),
        clock: type[datetime] | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        if dense is None and embedder is not None:
            from townsquare.index.dense import DenseIndex

            dense = DenseIndex(embedder.dim)
        self.dense = dense
        self.half_life = half_life
        self._synced_at = 0.0
        self._sync_lock = threading.Lock()

    def sync_dense(self, force: bool = False) -> int:
        """Pull vectors written since the last sync (by this or another process)."""
        if self.dense is None:
            return 0
        now = time.monotonic()
        if not force and now - self._synced_at < DENSE_SYNC_S:
            return 0
        with self._sync_lock:
            self._synced_at = now
            return self.dense.sync(self.store)

    def search(self, req: SearchRequest, now: datetime | None = None) -> list[SearchHit]:
        if req.boost_authors and not req.filters.authors:
            return self._boosted(req, now)
        limit = max(1, min(req.limit, 1000))
        now = now or utcnow()
        query = req.query.strip()
        mode: Mode = req.mode if query else "recent"
        if mode == "recent" and req.sort != "top":
            cands = self.store.recent(req.filters, limit)
            posts = self.store.posts_by_keys([c.key for c in cands])
            return [SearchHit(posts[c.key], c.score) for c in cands if c.key in posts]
        if mode == "recent":  # the most engaged among the newest
            cands = self.store.recent(req.filters, max(200, limit * 20))
            posts = self.store.posts_by_keys([c.key for c in cands])
            return order([SearchHit(posts[c.key], c.score) for c in cands if c.key in posts],
                         "top")[:limit]

        depth = max(50, limit * 5)
        lexical: list[Candidate] = []
        dense: list[Candidate] = []
        if mode in ("hybrid", "lexical"):
            lexical = self.store.lexical(query, req.filters, depth)
        if mode in ("hybrid", "dense") and self.embedder is not None and self.dense is not None:
            self.sync_dense()
            qvec = self.embedder.embed_query(query)
            since_ms = int(req.filters.since.timestamp() * 1000) if req.filters.since else None
            until_ms = int(req.filters.until.timestamp() * 1000) if req.filters.until else None
            floor = self.embedder.min_similarity
            dense = [
                c for c in self.dense.search(qvec, depth, since_ms, until_ms) if c.score >= floor
            ]

        lex_rank = {c.key: i for i, c in enumerate(lexical)}
        dense_rank = {c.key: i for i, c in enumerate(dense)}
        keys = list(dict.fromkeys([*lex_rank, *dense_rank]))
        posts = self.store.posts_by_keys(keys, req.filters)
        half_life_s = max(self.half_life.total_seconds(), 1.0)
        hits = []
        for key in keys:
            post = posts.get(key)
            if post is None:  # deleted, or filtered out at hydration
                continue
            lr, dr = lex_rank.get(key), dense_rank.get(key)
            rrf = (1 / (RRF_K + lr) if lr is not None else 0.0) + (
                1 / (RRF_K + dr) if dr is not None else 0.0
            )
            age = max(0.0, (now - post.created_at).total_seconds())
            decay = RECENCY_FLOOR + (1 - RECENCY_FLOOR) * 0.5 ** (age / half_life_s)
            hits.append(SearchHit(post, rrf * decay, lr, dr))
        return order(hits, req.sort)[:limit]


    def _boosted(self, req: SearchRequest, now: datetime | None) -> list[SearchHit]:
        """Named authors first: their own matches are searched for (a boost on the general
        list alone cannot lift a post that list never reached), then merged, scaled up."""
        theirs = self.search(replace(req, boost_authors=[], filters=replace(
            req.filters, authors=list(req.boost_authors))), now)
        everyone = self.search(replace(req, boost_authors=[]), now)
        merged: dict[str, SearchHit] = {h.post.id: h for h in everyone}
        for h in theirs:
            h.score *= AUTHOR_BOOST
            merged[h.post.id] = h
        return order(list(merged.values()), req.sort)[: max(1, min(req.limit, 1000))]


def engagement(post: Post) -> int:
    """One number for "how big": likes, plus reposts, replies and quotes counted double."""
    return (post.likes or 0) + 2 * ((post.reposts or 0) + (post.replies or 0)
                                    + (post.quotes or 0))


def order(hits: list[SearchHit], sort: Sort) -> list[SearchHit]:
    """Hits in the requested order (ties keep the relevance order)."""
    hits.sort(key=lambda h: h.score, reverse=True)
    if sort == "latest":
        hits.sort(key=lambda h: h.post.created_at, reverse=True)
    elif sort == "top":
        hits.sort(key=lambda h: engagement(h.post), reverse=True)
    return hits
