"""Stories: trending posts clustered into what people are talking about.

The detector decides what is trending; this module only groups the posts
behind it. A build takes a window's trending features (all of them, not the
de-duplicated list), the recent posts that carry any, and

1. folds reposts and near-duplicates (:mod:`townsquare.trends.dedup`) into
   groups, so a tweet retweeted two hundred times is one voice with echoes;
2. joins trending features that keep appearing together in the same posts
   (``#DestinationDragons``, ``Imagine Dragons``, ``tix``): co-occurring in at
   least ``min_cooccur`` posts and in ``assoc`` of the rarer one's posts, and
   only when the two clusters they belong to are that associated on average
   (so a word both topics use, a city's name, never chains a cup final and a
   rail strike into one story);
3. gives each group to the best such component whose top feature it
   carries, or two of whose features it carries: the one its features are
   most specific to (a feature tied to several components counts less).

A story's id survives refreshes: an id stays with the story whose top
features include the feature that led it last time. A new story's id is a
hash of its lead feature, the same in every process.

Summaries come from a callback supplied by the answer engine
(``summarize(story, posts, mode) -> (text, cited post ids)``); they are
cached by story id, persona mode and size bucket (a power of two), so a
refresh only asks again when a story has doubled or is new.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from townsquare.model import Post, iso
from townsquare.trends.dedup import duplicate_groups
from townsquare.trends.detector import TrendDetector
from townsquare.trends.features import words_of
from townsquare.trends.recent import RecentPost, RecentPosts
from townsquare.trends.results import Trend

log = logging.getLogger(__name__)

#: A story keeps its id while the feature that led it is among its top this many.
_LEADS = 3


@dataclass(slots=True)
class Story:
    """One story in one window (the shape surfaces serialize)."""

    id: str
    window: str
    title: str
    features: list[str]
    labels: list[str]
    size: int  # posts, reposts included
    unique_posts: int  # after folding near-duplicates
    authors: int
    first_seen: datetime
    last_seen: datetime
    score: float
    representative_ids: list[str]
    #: Up to 50 post ids, one per near-duplicate group, most central first.
    post_ids: list[str] = field(default_factory=list)
    summary: str | None = None
    citations: list[str] = field(default_factory=list)
    summary_mode: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "window": self.window,
            "title": self.title,
            "features": list(self.features),
            "labels": list(self.labels),
            "size": self.size,
            "unique_posts": self.unique_posts,
            "authors": self.authors,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "score": round(self.score, 3),
            "representative_ids": list(self.representative_ids),
            "summary": self.summary,
            "citations": list(self.citations),
            "summary_mode": self.summary_mode,
        }


Summarizer = Callable[[Story, list[Post], str], tuple[str, list[str]]]
AsyncSummarizer = Callable[[Story, list[Post], str], Awaitable[tuple[str, list[str]]]]


@dataclass(slots=True)
class _Group:
    """Near-duplicate posts: the first one and its echoes."""

    items: list[RecentPost]
    features: set[str]


class StoryBuilder:
    """Builds stories from a detector and a :class:`RecentPosts` buffer.

    A story needs its best feature to score at least ``min_score`` (a little
    above the detector's bar for a trend) and ``min_authors`` distinct authors.
    A build looks at no more than the newest ``max_posts`` trending posts of
    the window, which bounds its cost whatever the stream's volume.
    """

    def __init__(
        self,
        detector: TrendDetector,
        recent: RecentPosts,
        max_features: int = 60,
        min_cooccur: int = 3,
        assoc: float = 0.5,
        near_duplicate: float = 0.7,
        min_authors: int | None = None,
        min_score: float = 5.0,
        summary_cache: int = 1024,
        posts_per_summary: int = 8,
        max_posts: int = 5000,
    ) -> None:
        self.detector = detector
        self.recent = recent
        self.max_features = max_features
        self.min_cooccur = min_cooccur
        self.assoc = assoc
        self.near_duplicate = near_duplicate
        self.min_authors = detector.min_authors if min_authors is None else min_authors
        self.min_score = min_score
        self.posts_per_summary = posts_per_summary
        self.max_posts = max_posts
        # window -> a story's lead feature -> (story id, when last seen)
        self._lineage: dict[str, dict[str, tuple[str, float]]] = {}
        self._summaries: OrderedDict[tuple[str, str, int], tuple[str, list[str]]] = OrderedDict()
        self._summary_cache = summary_cache
        # Async summaries being written (one event loop): a second caller of the
        # same key waits for the first instead of spending the model twice.
        self._writing: dict[tuple[str, str, int], asyncio.Future[tuple[str, list[str]]]] = {}

    # -- building --------------------------------------------------------------

    def build(
        self, window: str = "1h", limit: int = 10, now: datetime | None = None
    ) -> list[Story]:
        """The window's stories, best first (cheap: no summaries; see :meth:`summarize`)."""
        trends = self.detector.trends(window, self.max_features, now=now, dedupe=False)
        end = self.detector.now
        if not trends or end is None:
            return []
        by_feature = {t.feature: t for t in trends}
        span = self.detector.window_buckets(window)
        start = end - timedelta(seconds=len(span) * self.detector.bucket_seconds)
        items = [
            it
            for it in self.recent.since(start, end)
            if any(f in by_feature for f in it.features)
        ]
        if not items:
            return []
        # Bounded work per refresh: the newest posts tell the story best.
        items = items[-self.max_posts :]
        groups = self._fold(items, by_feature)
        components = self._components(groups, by_feature)
        stories: list[Story] = []
        for feats, members in components:
            story = self._story(window, feats, members, by_feature)
            if story is not None:
                stories.append(story)
        stories.sort(key=lambda s: (-s.score, -s.size, s.id))
        self._assign_ids(window, stories, end.timestamp(), by_feature)
        return stories[:limit]

    def _fold(self, items: list[RecentPost], trending: dict[str, Trend]) -> list[_Group]:
        prints = [it.fingerprint() for it in items]
        roots = duplicate_groups(
            [p[0] for p in prints],
            [p[1] for p in prints],
            [p[2] for p in prints],
            self.near_duplicate,
        )
        by_root: dict[int, _Group] = {}
        for it, root in zip(items, roots, strict=True):
            group = by_root.get(root)
            if group is None:
                group = by_root[root] = _Group([], set())
            group.items.append(it)
            group.features.update(f for f in it.features if f in trending)
        return list(by_root.values())

    def _components(
        self, groups: list[_Group], trending: dict[str, Trend]
    ) -> list[tuple[list[str], list[_Group]]]:
        """Join co-occurring features, then hand each group to the story it belongs to.

        Co-occurrence is counted over posts, reposts included: a text that
        two hundred people shared ties its words together. A group joins a
        story when it carries the story's best feature or two of its
        features; a post that merely shares one common word does not.
        """
        n: Counter[str] = Counter()
        co: Counter[tuple[str, str]] = Counter()
        for g in groups:
            for it in g.items:
                feats = sorted(f for f in it.features if f in trending)
                n.update(feats)
                for i, a in enumerate(feats):
                    for b in feats[i + 1 :]:
                        co[(a, b)] += 1
        parent = {f: f for f in n}
        features_of = {f: [f] for f in n}  # a component's root -> its features

        def find(f: str) -> str:
            while parent[f] != f:
                parent[f] = parent[parent[f]]
                f = parent[f]
            return f

        def association(a: str, b: str) -> float:
            key = (a, b) if a < b else (b, a)
            return co.get(key, 0) / min(n[a], n[b])

        def linked(a: str, b: str) -> bool:
            key = (a, b) if a < b else (b, a)
            return co.get(key, 0) >= self.min_cooccur and association(a, b) >= self.assoc

        # Strongest pairs first (average linkage): two components join only when their
        # features are associated *on average*, not through one word they share. A
        # place name used by both a cup final and a rail strike ("Valmont") ties the
        # words, not the stories.
        for (a, b), _c in sorted(co.items(), key=lambda kv: (-kv[1], kv[0])):
            if not linked(a, b):
                continue
            ra, rb = find(a), find(b)
            if ra == rb:
                continue
            fa, fb = features_of[ra], features_of[rb]
            mean = sum(association(x, y) for x in fa for y in fb) / (len(fa) * len(fb))
            if mean < self.assoc:
                continue
            root, other = min(ra, rb), max(ra, rb)
            parent[other] = root
            features_of[root] = fa + fb

        def rank(f: str) -> tuple[float, str]:
            return (-trending[f].score, f)

        feats_of: dict[str, list[str]] = {}
        for f in sorted(n, key=rank):
            feats_of.setdefault(find(f), []).append(f)
        # A feature strongly tied to several components (a hub like a city name) says
        # less about which story a post belongs to than one tied to a single component.
        spread = {
            f: len({find(f)} | {find(g) for g in n if g != f and linked(f, g)}) for f in n
        }
        members: dict[str, list[_Group]] = {}
        for g in groups:
            eligible = [
                root
                for root in {find(f) for f in g.features}
                if feats_of[root][0] in g.features
                or len(g.features.intersection(feats_of[root])) >= 2
            ]
            if eligible:
                def fit(root: str, g: _Group = g) -> tuple[float, tuple[float, str]]:
                    shared = g.features.intersection(feats_of[root])
                    return (-sum(1.0 / spread[f] for f in shared), rank(feats_of[root][0]))

                best = min(eligible, key=fit)
                members.setdefault(best, []).append(g)
        return [(feats_of[root], gs) for root, gs in members.items()]

    def _story(
        self, window: str, feats: list[str], groups: list[_Group], trending: dict[str, Trend]
    ) -> Story | None:
        if trending[feats[0]].score < self.min_score:
            return None  # trending, but not enough to make a story of
        posts = [it.post for g in groups for it in g.items]
        authors = {p.author_id or p.author for p in posts}
        if len(authors) < self.min_authors:
            return None
        present = Counter(f for g in groups for f in g.features)
        feats = [f for f in feats if present[f]]
        if not feats:
            return None

        def centrality(g: _Group) -> tuple[int, int, int, float]:
            # Carries more of the story's features, echoed by more authors, earlier.
            voices = len({it.post.author_id or it.post.author for it in g.items})
            story_feats = len(g.features & set(feats))
            return (-story_feats, -voices, -len(g.items), g.items[0].ts)

        ranked = sorted(groups, key=centrality)
        representatives: list[str] = []
        seen_authors: set[str] = set()
        for g in ranked:
            first = g.items[0].post
            who = first.author_id or first.author
            if who not in seen_authors:
                seen_authors.add(who)
                representatives.append(first.id)
            if len(representatives) >= 3:
                break
        times = [p.created_at for p in posts]
        labels = [trending[f].label for f in feats]
        return Story(
            id="",
            window=window,
            title=_title(feats, labels),
            features=feats,
            labels=labels,
            size=len(posts),
            unique_posts=len(groups),
            authors=len(authors),
            first_seen=min(times),
            last_seen=max(times),
            score=trending[feats[0]].score,
            representative_ids=representatives,
            post_ids=[g.items[0].post.id for g in ranked[:50]],
        )

    def _assign_ids(
        self, window: str, stories: list[Story], now: float, trending: dict[str, Trend]
    ) -> None:
        """Keep a story's id while its lead feature stays one of its leading features.

        Each id remembers its story's lead feature at the last build. A story
        takes over an id when that feature is among its own top three or
        scores at least half as much as its best (``fleek`` gives way to
        ``fleet`` as the same story grows); a story that merely absorbed an
        old one's minor words gets a new id.
        """
        anchors = self._lineage.setdefault(window, {})  # lead feature -> (id, seen)
        claimed: set[str] = set()
        for story in stories:  # best first: the strongest story keeps a contested id
            leads = [
                f
                for i, f in enumerate(story.features)
                if i < _LEADS or trending[f].score * 2 >= story.score
            ]
            sid = next(
                (anchors[f][0] for f in leads if f in anchors and anchors[f][0] not in claimed),
                None,
            )
            if sid is None:
                sid = _new_id(story.features[0], claimed)
            story.id = sid
            claimed.add(sid)
        for story in stories:
            for f in [f for f, (sid, _) in anchors.items() if sid == story.id]:
                del anchors[f]
            anchors[story.features[0]] = (story.id, now)
        horizon = now - 2 * 86_400
        for f in [f for f, (_, at) in anchors.items() if at < horizon]:
            del anchors[f]

    # -- summaries -------------------------------------------------------------

    def _cache_key(self, story: Story, mode: str) -> tuple[str, str, int]:
        return (story.id, mode, int(math.log2(max(1, story.size))))

    def _inputs(self, story: Story) -> list[Post]:
        posts = [self.recent.get(pid) for pid in story.post_ids[: self.posts_per_summary]]
        return [p for p in posts if p is not None]

    def _remember(self, key: tuple[str, str, int], text: str, cites: list[str]) -> None:
        self._summaries[key] = (text, cites)
        self._summaries.move_to_end(key)
        while len(self._summaries) > self._summary_cache:
            self._summaries.popitem(last=False)

    def _from_cache(self, story: Story, key: tuple[str, str, int], mode: str) -> bool:
        """Fill ``story`` from the summary cache; False if it holds none for ``key``."""
        hit = self._summaries.get(key)
        if hit is None:
            return False
        self._summaries.move_to_end(key)
        story.summary, story.citations, story.summary_mode = hit[0], list(hit[1]), mode
        return True

    def _apply(
        self, story: Story, mode: str, text: str, cites: list[str], allowed: set[str]
    ) -> None:
        story.summary = text
        # Only posts the summarizer was shown can be cited: no invented sources.
        story.citations = [c for c in cites if c in allowed]
        story.summary_mode = mode

    def summarize(
        self,
        stories: Sequence[Story],
        summarizer: Summarizer,
        mode: str = "regular",
        max_calls: int | None = None,
    ) -> list[Story]:
        """Fill ``summary``/``citations``, from the cache or by calling ``summarizer``.

        ``max_calls`` bounds how many summaries one refresh may generate; the
        rest stay empty until a later refresh. A failing summarizer leaves
        the story unsummarized (and logged), never breaks the listing.
        """
        calls = 0
        for story in stories:
            key = self._cache_key(story, mode)
            if self._from_cache(story, key, mode):
                continue
            if max_calls is not None and calls >= max_calls:
                continue
            posts = self._inputs(story)
            calls += 1
            try:
                text, cites = summarizer(story, posts, mode)
            except Exception:
                log.warning("summarizing story %s failed", story.id, exc_info=True)
                continue
            self._apply(story, mode, text, cites, {p.id for p in posts})
            self._remember(key, text, story.citations)
        return list(stories)

    async def asummarize(
        self,
        stories: Sequence[Story],
        summarizer: AsyncSummarizer,
        mode: str = "regular",
        max_calls: int | None = None,
    ) -> list[Story]:
        """:meth:`summarize` for an async summarizer (the answer engine's LLM is async).

        A story whose summary another caller (the story loop, a request) is
        already writing waits for that one; it does not count against
        ``max_calls`` and gets nothing if that one fails.
        """
        calls = 0
        for story in stories:
            key = self._cache_key(story, mode)
            if self._from_cache(story, key, mode):
                continue
            writing = self._writing.get(key)
            if writing is not None:
                try:
                    text, cites = await asyncio.shield(writing)
                except Exception:
                    continue  # the writer logged it
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if writing.cancelled() and not (task and task.cancelling()):
                        continue  # the writer was cancelled, not this caller
                    raise
                self._apply(story, mode, text, cites, set(cites))
                continue
            if max_calls is not None and calls >= max_calls:
                continue
            posts = self._inputs(story)
            calls += 1
            done: asyncio.Future[tuple[str, list[str]]] = (
                asyncio.get_running_loop().create_future()
            )
            self._writing[key] = done
            try:
                text, cites = await summarizer(story, posts, mode)
            except Exception as exc:
                log.warning("summarizing story %s failed", story.id, exc_info=True)
                done.set_exception(exc)
                done.exception()  # retrieved: nobody may be waiting
                continue
            else:
                self._apply(story, mode, text, cites, {p.id for p in posts})
                self._remember(key, text, story.citations)
                done.set_result((text, list(story.citations)))
            finally:
                del self._writing[key]
                if not done.done():  # this caller was cancelled: its waiters give up too
                    done.cancel()
        return list(stories)


def _title(feats: list[str], labels: list[str]) -> str:
    """Up to three labels, skipping ones that restate a label already chosen."""
    chosen: list[str] = []
    words: list[frozenset[str]] = []
    for f, label in zip(feats, labels, strict=True):
        w = words_of(f)
        if any(w <= c or c <= w for c in words):
            continue
        chosen.append(label)
        words.append(w)
        if len(chosen) == 3:
            break
    return " · ".join(chosen)


def _new_id(anchor: str, taken: set[str]) -> str:
    salt = 0
    while True:
        seed = anchor if salt == 0 else f"{anchor}#{salt}"
        sid = "st_" + hashlib.blake2b(seed.encode(), digest_size=6).hexdigest()
        if sid not in taken:
            return sid
        salt += 1
