"""Burst detection over sliding windows, updated in O(features of a post).

Time is cut into buckets (one minute by default) keyed by *event* time, the
post's ``created_at``: "now" is the newest event time seen (or a clock, when
one is given), so replaying last week's posts finds last week's trends.

Per bucket and feature the detector keeps a cell: ``{None: display form,
author: first post id, ...}``, the first and last post time, and the number
of posts (flat dicts of strings and numbers rather than an object per cell:
the cyclic garbage collector never has to look at them). A trend's label is
its most common display form among its cells. An author counts once per feature per
bucket (an *author-minute*), which is what a window's ``count`` sums: a
spammer posting a hashtag a thousand times in a minute adds one.

Only the newest ("open") bucket is counted in its cells alone. When time
moves past it, the bucket is *closed*: its counts join every window's running
counts (:class:`~townsquare.trends.table.FeatureTable`). When it later slides
out of a window its counts are subtracted there and added to that window's
baseline, an exponentially decayed sum stored pre-scaled so that adding to it
is one multiply. Closings and expiries are queued and applied in batches of
vectorized operations, so a sparse stream (a post or two a minute) does not
pay NumPy's per-call cost for every bucket; every query applies the queue
first, so answers are always exact. Buckets older than the
longest window are dropped; features with nothing left in any window and a
decayed baseline are forgotten, so memory follows the retained span. A
post arriving late, into a closed bucket, updates the arrays directly.

Queries (:meth:`TrendDetector.trends`) score every feature of the window at
once with its count, an upper bound, then compute the exact figures
(distinct authors, per-author-capped support, first and last seen, samples)
only for the few that could still make the top ``limit``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

import numpy as np

from townsquare.model import Post
from townsquare.trends.features import KINDS, FeatureExtractor, fold, kind_of
from townsquare.trends.results import FeatureStats, Footprint, Trend, select
from townsquare.trends.results import footprint as make_footprint
from townsquare.trends.table import FeatureTable
from townsquare.trends.windows import DEFAULT_WINDOWS, WindowSpec, burst_score

#: Rescale a pre-scaled baseline once its growth factor reaches e**_RESCALE_AT.
_RESCALE_AT = 200.0
#: Apply queued bucket closings and expiries once this many are waiting.
_BATCH = 256


class _Bucket:
    __slots__ = ("authors", "cells", "counts", "fids", "first", "ids", "index", "last", "npost",
                 "posts")

    def __init__(self, index: int) -> None:
        self.index = index
        # The cells, by feature: who (author -> first post id), when, how many posts.
        self.cells: dict[str, dict[str | None, str]] = {}
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.npost: dict[str, int] = {}
        self.authors: set[str] = set()
        self.posts = 0
        self.ids: list[str] = []
        # Feature ids and author-minute counts of the cells, built when the
        # bucket closes; None again after a late post changes the cells.
        self.fids: np.ndarray | None = None
        self.counts: np.ndarray | None = None


class TrendDetector:
    """Sliding-window burst detection; feed it posts, ask it what is trending.

    Not thread-safe: one writer, and queries from the same thread or under
    the caller's lock (:class:`townsquare.trends.engine.TrendEngine` does that).
    """

    def __init__(
        self,
        windows: Sequence[WindowSpec] = DEFAULT_WINDOWS,
        bucket_seconds: int = 60,
        min_authors: int = 3,
        per_author_cap: int = 3,
        min_score: float = 3.0,
        min_lift: float = 1.5,
        prior_count: float = 0.5,
        prior_total: float = 50.0,
        baseline_min_mass: float = 0.5,
        extractor: FeatureExtractor | None = None,
        clock: Callable[[], datetime] | None = None,
        max_future_s: float = 300.0,
    ) -> None:
        if not windows:
            raise ValueError("at least one window is needed")
        for spec in windows:
            if spec.seconds % bucket_seconds or spec.seconds <= 0:
                raise ValueError(
                    f"window {spec.name} ({spec.seconds}s) is not a whole number of "
                    f"{bucket_seconds}s buckets"
                )
        self.windows = tuple(windows)
        self.bucket_seconds = bucket_seconds
        self.min_authors = min_authors
        self.per_author_cap = per_author_cap
        self.min_score = min_score
        self.min_lift = min_lift
        self.prior_count = prior_count
        self.prior_total = prior_total
        self.baseline_min_mass = baseline_min_mass
        self.extractor = extractor or FeatureExtractor()
        self.clock = clock
        self.max_future_s = max_future_s

        n = len(self.windows)
        self._lengths = [spec.seconds // bucket_seconds for spec in self.windows]
        self._retain = max(self._lengths)
        self._longest = self._lengths.index(self._retain)
        self._index = {spec.name: i for i, spec in enumerate(self.windows)}
        self._head: int | None = None
        self._buckets: dict[int, _Bucket] = {}
        self._ids: dict[str, int] = {}
        self._table = FeatureTable(n)
        # Closed buckets only; the open (head) bucket is added at query time.
        self._win_total = [0] * n  # author-minutes in the window, all features
        self._win_posts = [0] * n
        self._base_total = [0.0] * n
        self._base_ref = [0] * n  # bucket index the pre-scaled baselines are relative to
        self._decay = [bucket_seconds / spec.baseline_tau_s for spec in self.windows]
        self._sweep_every = max(1, 3600 // bucket_seconds)
        # Queued array updates: (feature ids, counts, baseline weight or None to add).
        self._queue: list[list[tuple[np.ndarray, np.ndarray, float]]] = [[] for _ in range(n)]
        self._queued = 0
        self._last_sweep = 0
        #: Posts counted, duplicates ignored, posts older than every window
        #: (they only feed the baselines).
        self.added = 0
        self.duplicates = 0
        self.too_old = 0

    # -- time ------------------------------------------------------------------

    @property
    def now(self) -> datetime | None:
        """End of the newest bucket's span (None before the first post)."""
        if self._head is None:
            return None
        return datetime.fromtimestamp((self._head + 1) * self.bucket_seconds, UTC)

    def window_names(self) -> list[str]:
        return [spec.name for spec in self.windows]

    def advance(self, now: datetime) -> None:
        """Slide every window forward to ``now`` (a no-op if it is not later)."""
        b = int(now.timestamp() // self.bucket_seconds)
        if self._head is None:
            self._start(b)
        elif b > self._head:
            self._advance_to(b)

    def _start(self, b: int) -> None:
        self._head = b
        self._base_ref = [b] * len(self.windows)
        self._last_sweep = b

    def _advance_to(self, new: int) -> None:
        old = self._head
        assert old is not None
        buckets = self._buckets
        closing = buckets.get(old)
        if closing is not None:
            self._close(closing)
        for wi, length in enumerate(self._lengths):
            for i in self._indexes(old - length + 1, new - length):
                bucket = buckets.get(i)
                if bucket is not None:
                    self._expire(bucket, wi)
        for i in self._indexes(old - self._retain + 1, new - self._retain):
            gone = buckets.pop(i, None)
            if gone is not None:
                for pid in gone.ids:
                    self._ids.pop(pid, None)
        self._head = new
        if new - self._last_sweep >= self._sweep_every:
            self._sweep(new)
        elif self._queued >= _BATCH:
            self._sync()

    def _indexes(self, start: int, end: int) -> Iterable[int]:
        """Bucket indexes in ``[start, end]`` that may exist, without walking long gaps."""
        if end < start:
            return ()
        if end - start <= len(self._buckets):
            return range(start, end + 1)
        return sorted(i for i in self._buckets if start <= i <= end)

    def _arrays(self, bucket: _Bucket) -> tuple[np.ndarray, np.ndarray]:
        if bucket.fids is None or bucket.counts is None:
            cells = bucket.cells
            bucket.fids = self._table.ids_of(cells)
            # A cell's authors: its entries but the display form.
            bucket.counts = np.fromiter(map(len, cells.values()), np.int64, len(cells)) - 1
        return bucket.fids, bucket.counts

    def _close(self, bucket: _Bucket) -> None:
        """The open bucket becomes history: its counts join every window's sums."""
        fids, counts = self._arrays(bucket)
        n = len(bucket.authors)
        for wi in range(len(self.windows)):
            self._queue[wi].append((fids, counts, -1.0))  # -1: closing, not expiring
            self._win_total[wi] += n
            self._win_posts[wi] += bucket.posts
        self._queued += 1

    def _sync(self) -> None:
        """Apply queued closings and expiries to the arrays (order does not matter: sums)."""
        if not self._queued:
            return
        table = self._table
        for wi, queue in enumerate(self._queue):
            if not queue:
                continue
            fids = np.concatenate([q[0] for q in queue])
            counts = np.concatenate([q[1] for q in queue])
            weights = np.repeat([q[2] for q in queue], [len(q[0]) for q in queue])
            expiring = weights >= 0.0
            # Closing adds to the window; expiring moves counts to the baseline.
            np.add.at(table.counts[wi], fids, np.where(expiring, -counts, counts))
            if expiring.any():
                np.add.at(table.base[wi], fids[expiring], (counts * weights)[expiring])
            queue.clear()
        self._queued = 0

    def _weight(self, wi: int, index: int) -> float:
        """Pre-scaled baseline weight of a bucket, rescaling the baseline when it grows."""
        x = (index - self._base_ref[wi]) * self._decay[wi]
        if x > _RESCALE_AT:
            self._rebase(wi, index)
            x = 0.0
        return math.exp(x)

    def _rebase(self, wi: int, index: int) -> None:
        """Make bucket ``index`` the reference of window ``wi``'s pre-scaled baseline."""
        self._sync()
        shrink = math.exp(-(index - self._base_ref[wi]) * self._decay[wi])
        self._table.base[wi] *= shrink
        self._base_total[wi] *= shrink
        self._base_ref[wi] = index

    def _expire(self, bucket: _Bucket, wi: int) -> None:
        """``bucket`` slides out of window ``wi``: its counts move to that window's baseline."""
        fids, counts = self._arrays(bucket)
        w = self._weight(wi, bucket.index)
        self._queue[wi].append((fids, counts, w))
        self._queued += 1
        n = len(bucket.authors)
        self._win_total[wi] -= n
        self._win_posts[wi] -= bucket.posts
        self._base_total[wi] += n * w

    def _sweep(self, head: int) -> None:
        """Forget features with no count left and a baseline decayed below the minimum."""
        self._sync()
        self._last_sweep = head
        table = self._table
        n = table.size
        idle = table.counts[self._longest, :n] == 0
        for wi in range(len(self.windows)):
            if (head - self._base_ref[wi]) * self._decay[wi] > _RESCALE_AT:
                self._rebase(wi, head)
            cut = self.baseline_min_mass * math.exp((head - self._base_ref[wi]) * self._decay[wi])
            idle &= table.base[wi, :n] < cut
        head_bucket = self._buckets.get(head)
        dead = np.flatnonzero(idle)
        if head_bucket is not None and len(dead):
            keep = table.ids_of(k for k in head_bucket.cells if k in table.ids)
            dead = np.setdiff1d(dead, keep, assume_unique=True)
        table.release(dead)

    # -- ingest ------------------------------------------------------------------

    def add(self, post: Post, features: dict[str, str] | None = None) -> dict[str, str] | None:
        """Count one post; returns its features, or None for a post id already counted.

        ``features`` are the post's features when already extracted (by
        :class:`~townsquare.trends.parallel.ParallelExtractor`); the dict is
        kept, not copied.
        """
        pid = post.id
        if pid in self._ids:
            self.duplicates += 1
            return None
        t = post.created_at.timestamp()
        if self.clock is not None:
            # A post stamped in the future (clock skew) must not slide every window.
            t = min(t, self.clock().timestamp() + self.max_future_s)
        b = int(t // self.bucket_seconds)
        head = self._head
        if head is None:
            self._start(b)
            head = b
        elif b > head:
            self._advance_to(b)
            head = b
        feats = self.extractor.extract(post.text) if features is None else features
        for tag in post.hashtags:  # tags a source knows beyond the text (Bluesky facets)
            key = "#" + fold(tag)
            if key not in feats and not tag.isdigit():
                feats[key] = "#" + tag
        age = head - b
        if age >= self._retain:
            self.too_old += 1
            self._baseline_only(b, feats)
            return feats

        author = post.author_id or post.author
        bucket = self._buckets.get(b)
        if bucket is None:
            bucket = self._buckets[b] = _Bucket(b)
        self._ids[pid] = b
        bucket.ids.append(pid)
        bucket.posts += 1
        new_author = author not in bucket.authors
        if new_author:
            bucket.authors.add(author)
        cells, first, last, npost = bucket.cells, bucket.first, bucket.last, bucket.npost
        if age:  # late: note which author-minutes are new before counting them
            new = [f for f in feats if author not in cells.get(f, ())]
        for f, disp in feats.items():
            authors = cells.get(f)
            if authors is None:
                # Most cells hold one post: its time is the first and last
                # seen, its count 1, so only later posts write ``last``/``npost``.
                cells[f] = {None: disp, author: pid}
                first[f] = t
            else:
                npost[f] = npost.get(f, 1) + 1
                t0 = first[f]
                t1 = last.get(f, t0)
                if t > t1:
                    last[f] = t
                elif t < t0:
                    first[f] = t
                    last[f] = t1
                if author not in authors:
                    authors[author] = pid
        if age:
            self._late(bucket, age, new, new_author)
        self.added += 1
        return feats

    def _late(self, bucket: _Bucket, age: int, new: list[str], new_author: bool) -> None:
        """A post for a closed bucket: update the windows (or baselines) it belongs to."""
        bucket.fids = bucket.counts = None  # rebuilt from the cells when it next expires
        fids = self._table.ids_of(new)
        for wi, length in enumerate(self._lengths):
            if age < length:
                self._table.counts[wi, fids] += 1
                self._win_total[wi] += new_author
                self._win_posts[wi] += 1
            else:  # this window already let the bucket go
                w = self._weight(wi, bucket.index)
                self._table.base[wi, fids] += w
                self._base_total[wi] += new_author * w

    def _baseline_only(self, b: int, feats: dict[str, str]) -> None:
        # Older than every window: history, so it still informs what is usual.
        fids = self._table.ids_of(feats)
        for wi in range(len(self.windows)):
            w = self._weight(wi, b)
            self._table.base[wi, fids] += w
            self._base_total[wi] += w

    def add_many(self, posts: Iterable[Post], workers: int = 0) -> int:
        """Count posts; returns how many were new.

        ``workers`` > 0 extracts features in that many worker processes
        (worth it for large batches: a rebuild from the store, a replay).
        """
        before = self.added
        add = self.add
        if workers > 0:
            from townsquare.trends.parallel import ParallelExtractor

            with ParallelExtractor(workers) as px:
                for post, feats in px.map(posts):
                    add(post, feats)
        else:
            for post in posts:
                add(post)
        return self.added - before

    # -- queries ---------------------------------------------------------------

    def _wi(self, window: str) -> int:
        try:
            return self._index[window]
        except KeyError:
            raise ValueError(
                f"unknown window {window!r}; use one of {', '.join(self._index)}"
            ) from None

    def label(self, feature: str) -> str:
        """How a feature is usually written in the retained posts (the key if none)."""
        forms: dict[str, int] = {}
        for bucket in self._buckets.values():
            cell = bucket.cells.get(feature)
            if cell is not None:
                form = cell[None]
                forms[form] = forms.get(form, 0) + 1
        return _best_form(forms) if forms else feature

    def _open(self) -> _Bucket | None:
        return None if self._head is None else self._buckets.get(self._head)

    def counts(self, window: str) -> dict[str, int]:
        """Author-minute counts of every feature in a window."""
        wi = self._wi(window)
        self._sync()
        table = self._table
        row = table.counts[wi, : table.size]
        out = {table.names[i] or "": int(row[i]) for i in np.flatnonzero(row).tolist()}
        head = self._open()
        if head is not None:
            for f, authors in head.cells.items():
                out[f] = out.get(f, 0) + len(authors) - 1
        return out

    def totals(self, window: str) -> tuple[int, int]:
        """(author-minutes, posts) in a window over all features."""
        wi = self._wi(window)
        head = self._open()
        extra_total, extra_posts = (len(head.authors), head.posts) if head else (0, 0)
        return self._win_total[wi] + extra_total, self._win_posts[wi] + extra_posts

    def window_buckets(self, window: str) -> range:
        """The bucket indexes a window spans now."""
        if self._head is None:
            return range(0)
        length = self._lengths[self._wi(window)]
        return range(self._head - length + 1, self._head + 1)

    def _base_scale(self, wi: int) -> float:
        head = self._head if self._head is not None else self._base_ref[wi]
        return math.exp(-(head - self._base_ref[wi]) * self._decay[wi])

    def baseline_mass(self, window: str) -> float:
        """Decayed author-minutes behind a window's baseline: how warmed-up it is."""
        wi = self._wi(window)
        return self._base_total[wi] * self._base_scale(wi)

    def expected(self, feature: str, window: str) -> float:
        """The count a feature would have in the window if it kept to its baseline share."""
        wi = self._wi(window)
        self._sync()
        i = self._table.ids.get(feature)
        base = float(self._table.base[wi, i]) if i is not None else 0.0
        g = self._base_scale(wi)
        total = self.totals(window)[0]
        share = (base * g + self.prior_count) / (self._base_total[wi] * g + self.prior_total)
        return max(self.windows[wi].min_expected, total * share)

    def stats(self, feature: str, window: str, samples: int = 5) -> FeatureStats | None:
        """Exact figures for a feature over a window, or None if it has no posts there."""
        return self._stats(feature, self._wi(window), samples)

    def _stats(
        self, feature: str, wi: int, samples: int, footprint: Footprint | None = None
    ) -> FeatureStats | None:
        """Walk the window's cells for one feature; ``footprint`` samples its author-minutes."""
        if self._head is None:
            return None
        per_author: dict[str, int] = {}
        posts = count = 0
        t0, t1 = math.inf, -math.inf
        sample_ids: list[str] = []
        sampled: set[str] = set()
        forms: dict[str, int] = {}
        buckets = self._buckets
        # Newest first, so samples are the latest posts, one per author.
        for i in range(self._head, self._head - self._lengths[wi], -1):
            bucket = buckets.get(i)
            if bucket is None:
                continue
            authors = bucket.cells.get(feature)
            if authors is None:
                continue
            form = authors[None]
            forms[form] = forms.get(form, 0) + 1
            count += len(authors) - 1
            posts += bucket.npost.get(feature, 1)
            t0 = min(t0, bucket.first[feature])
            t1 = max(t1, bucket.last.get(feature, bucket.first[feature]))
            if footprint is not None:
                mask, hashes = footprint
                for a in authors:
                    h = hash((i, a))
                    if not h & mask and a is not None:
                        hashes.add(h)
            for a, pid in authors.items():
                if a is None:
                    continue
                per_author[a] = per_author.get(a, 0) + 1
                if len(sample_ids) < samples and a not in sampled:
                    sampled.add(a)
                    sample_ids.append(pid)
        if not count:
            return None
        cap = self.per_author_cap
        support = sum(v if v < cap else cap for v in per_author.values())
        return FeatureStats(
            count=count,
            posts=posts,
            authors=len(per_author),
            support=support,
            first_seen=datetime.fromtimestamp(t0, UTC),
            last_seen=datetime.fromtimestamp(t1, UTC),
            label=_best_form(forms),
            sample_ids=sample_ids,
        )

    def trends(
        self,
        window: str = "1h",
        limit: int = 20,
        *,
        now: datetime | None = None,
        kinds: Iterable[str] | None = None,
        min_authors: int | None = None,
        min_score: float | None = None,
        dedupe: bool = True,
        samples: int = 5,
    ) -> list[Trend]:
        """What is bursting in ``window``, best first.

        A feature trends when at least ``min_authors`` distinct authors used
        it, its per-author-capped support is ``min_lift`` times what its
        baseline share predicts, and the burst score reaches ``min_score``.
        ``dedupe`` drops a trend that restates a better one (``dragons``
        beside ``Imagine Dragons``, over mostly the same author-minutes).
        """
        wi = self._wi(window)
        if now is None and self.clock is not None:
            now = self.clock()
        if now is not None:
            self.advance(now)
        if self._head is None or limit <= 0:
            return []
        want = set(kinds) if kinds else None
        if want is not None and not want <= set(KINDS):
            raise ValueError(f"unknown kind in {sorted(want)}; use {', '.join(KINDS)}")
        floor_authors = self.min_authors if min_authors is None else min_authors
        floor_score = self.min_score if min_score is None else min_score

        candidates = self._candidates(wi, max(1, floor_authors), floor_score)
        names = self._table.names
        scored: list[tuple[Trend, Footprint]] = []
        top: list[Trend] = []
        for upper, i, e in candidates:
            if len(top) >= limit and upper < top[-1].score:
                break  # support <= count, so nothing further can enter the top
            f = names[i]
            if f is None or (want is not None and kind_of(f) not in want):
                continue
            footprint = make_footprint(self._candidate_count(wi, i))
            st = self._stats(f, wi, samples, footprint if dedupe else None)
            if st is None or st.authors < floor_authors or st.support < e * self.min_lift:
                continue
            score = burst_score(st.support, e)
            if score < floor_score:
                continue
            trend = Trend(
                    feature=f,
                    kind=kind_of(f),
                    label=st.label,
                    window=self.windows[wi].name,
                    count=st.count,
                    posts=st.posts,
                    authors=st.authors,
                    support=st.support,
                    expected=e,
                    score=score,
                    first_seen=st.first_seen,
                    last_seen=st.last_seen,
                    sample_ids=st.sample_ids,
            )
            scored.append((trend, footprint))
            if len(top) < limit or score >= top[-1].score:  # else it cannot change the top
                top = select(scored, limit, dedupe)
        return top

    def _candidate_count(self, wi: int, i: int) -> int:
        """A feature's author-minutes in a window from the arrays (open bucket included)."""
        count = int(self._table.counts[wi, i])
        head = self._open()
        name = self._table.names[i]
        if head is not None and name is not None:
            count += len(head.cells.get(name, ()))
        return count

    def _candidates(
        self, wi: int, floor_count: int, floor_score: float
    ) -> list[tuple[float, int, float]]:
        """(score upper bound, feature id, expected count) for every feature that could trend."""
        self._sync()
        table = self._table
        head = self._open()
        if head is not None:  # give the open bucket's features ids before sizing arrays
            open_ids = table.ids_of(head.cells)
            open_counts = np.fromiter(map(len, head.cells.values()), np.int64, len(head.cells)) - 1
        n = table.size
        counts = table.counts[wi, :n].astype(np.float64)
        if head is not None:
            counts[open_ids] += open_counts
        total = self.totals(self.windows[wi].name)[0]
        g = self._base_scale(wi)
        expected = total * (table.base[wi, :n] * g + self.prior_count) / (
            self._base_total[wi] * g + self.prior_total
        )
        np.maximum(expected, self.windows[wi].min_expected, out=expected)
        idx = np.flatnonzero((counts >= floor_count) & (counts >= expected * self.min_lift))
        c, e = counts[idx], expected[idx]
        upper = np.sqrt(2.0 * (c * np.log(c / e) - (c - e)))
        keep = upper >= floor_score
        idx, upper, e = idx[keep], upper[keep], e[keep]
        order = np.lexsort((idx, -upper))
        return list(
            zip(upper[order].tolist(), idx[order].tolist(), e[order].tolist(), strict=True)
        )

    def memory(self) -> dict[str, int]:
        """Sizes of what the detector holds (for status pages and the benchmark)."""
        self._sync()
        return {
            "buckets": len(self._buckets),
            "cells": sum(len(b.cells) for b in self._buckets.values()),
            "post_ids": len(self._ids),
            "features": len(self._table),
            "array_slots": int(self._table.counts.shape[1]),
        }


def _best_form(forms: dict[str, int]) -> str:
    """The most frequent display form; on a tie a cased, then an accented one."""
    return max(forms, key=lambda f: (forms[f], not f.islower(), not f.isascii(), f))
