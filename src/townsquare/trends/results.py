"""What a trends query returns, and how a ranked list drops restated trends.

Kept apart from the detector so surfaces (API, web, chat) can import the
result types without the machinery, and so the de-duplication rule lives
in one readable place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from townsquare.model import iso


@dataclass(slots=True)
class FeatureStats:
    """Exact figures for one feature over one window.

    ``count``: author-minutes (distinct (author, bucket) pairs); ``posts``:
    posts containing the feature; ``authors``: distinct authors; ``support``:
    author-minutes with each author capped at ``per_author_cap`` in the
    window, the figure that is scored; ``label``: its most common display form.
    """

    count: int
    posts: int
    authors: int
    support: int
    first_seen: datetime
    last_seen: datetime
    label: str = ""
    sample_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Trend:
    """One trending feature in one window (the shape surfaces serialize)."""

    feature: str
    kind: str
    label: str
    window: str
    count: int
    posts: int
    authors: int
    support: int
    expected: float
    score: float
    first_seen: datetime
    last_seen: datetime
    sample_ids: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "kind": self.kind,
            "label": self.label,
            "window": self.window,
            "count": self.count,
            "posts": self.posts,
            "authors": self.authors,
            "support": self.support,
            "expected": round(self.expected, 3),
            "score": round(self.score, 3),
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "sample_ids": list(self.sample_ids),
        }


# A sample of a feature's author-minutes, to tell whether two trends are the
# same posts: hashes of (bucket, author) whose low bits under ``mask`` are 0.
# The mask grows with the count (about a thousand hashes kept), and two
# footprints compare at the coarser mask, so both sample the same pairs.
Footprint = tuple[int, set[int]]
FOOTPRINT_SIZE = 1024


def footprint(count: int) -> Footprint:
    """An empty footprint that will keep about ``FOOTPRINT_SIZE`` of ``count`` hashes."""
    rate = 1
    while rate * FOOTPRINT_SIZE < count:
        rate *= 2
    return rate - 1, set()


def select(scored: list[tuple[Trend, Footprint]], limit: int, dedupe: bool) -> list[Trend]:
    """The best ``limit`` trends, skipping ones that restate a better one.

    Two trends restate each other when they are about the same size and
    mostly the same author-minutes: ``fleet`` and ``fleek`` from one viral
    tweet, ``dragons`` and ``Imagine Dragons``. ``cancelled`` and the narrower
    ``cancelled flightled`` differ in size, so both stay.
    """
    ranked = sorted(scored, key=lambda x: (-x[0].score, x[0].feature))
    if not dedupe:
        return [t for t, _ in ranked[:limit]]
    out: list[Trend] = []
    kept: list[tuple[Trend, Footprint]] = []
    for t, fp in ranked:
        if any(restates(t, fp, k, kfp) for k, kfp in kept):
            continue
        out.append(t)
        kept.append((t, fp))
        if len(out) >= limit:
            break
    return out


def restates(a: Trend, fa: Footprint, b: Trend, fb: Footprint) -> bool:
    """About the same size, and 80% of the smaller one's author-minutes shared."""
    if min(a.count, b.count) * 2 < max(a.count, b.count):
        return False
    mask = max(fa[0], fb[0])
    sa = fa[1] if fa[0] == mask else {h for h in fa[1] if not h & mask}
    sb = fb[1] if fb[0] == mask else {h for h in fb[1] if not h & mask}
    small = min(len(sa), len(sb))
    return small > 0 and len(sa & sb) * 5 >= small * 4
