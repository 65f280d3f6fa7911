"""Shared pieces of the trends tests: background traffic and a brute-force recount."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from factories import make_post
from townsquare.model import Post

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)

_VOCAB = (
    "coffee train weather music movie garden bread cheese market school office meeting "
    "lunch dinner football match goal team coach phone laptop update release bug server "
    "river mountain beach city park museum concert ticket airport flight hotel rain sun "
    "cloud wind snow book novel poem article podcast video photo camera dog cat bird "
    "marché fromage école pluie soleil vélo métro voiture musique cinéma jardin"
).split()
_TAGS = ["#monday", "#photo", "#music", "#travel", "#food", "#news"]


post = partial(make_post, source="test", scoped=False, url=None)



def background(
    start: datetime,
    hours: float,
    per_minute: float = 2.0,
    seed: int = 1,
    authors: int = 400,
    prefix: str = "bg",
    extra_tag: str | None = None,
    extra_share: float = 0.0,
) -> list[Post]:
    """Ordinary chatter: random words from a fixed vocabulary, many authors.

    ``extra_tag`` appears in ``extra_share`` of posts throughout (a perennial tag).
    """
    rng = random.Random(seed)
    n = int(hours * 60 * per_minute)
    out = []
    for i in range(n):
        at = start + timedelta(seconds=i * 60.0 / per_minute + rng.random())
        words = rng.sample(_VOCAB, rng.randint(3, 7))
        if rng.random() < 0.2:
            words.append(rng.choice(_TAGS))
        if extra_tag and rng.random() < extra_share:
            words.append(extra_tag)
        out.append(post(f"{prefix}{i}", f"user{rng.randrange(authors)}", " ".join(words), at))
    return out


@dataclass
class Row:
    bucket: int
    t: float
    author: str
    pid: str
    features: frozenset[str]


class Recount:
    """The definition of every count, by brute force over all accepted posts.

    A post is accepted unless its id was accepted before or it is older than
    the longest window at arrival ("now" being the newest event time seen).
    """

    def __init__(self, bucket_s: int, windows: dict[str, int], cap: int) -> None:
        self.bucket_s = bucket_s
        self.windows = windows  # name -> length in buckets
        self.retain = max(windows.values())
        self.cap = cap
        self.head: int | None = None
        self.rows: list[Row] = []
        self.ids: set[str] = set()
        self._memo: dict[tuple[str, int, int], list[Row]] = {}

    def _bucket(self, t: float) -> int:
        return math.floor(t / self.bucket_s)

    def advance(self, now: datetime) -> None:
        b = self._bucket(now.timestamp())
        self.head = b if self.head is None else max(self.head, b)

    def add(self, p: Post, features: dict[str, str] | None) -> None:
        if p.id in self.ids:
            return
        t = p.created_at.timestamp()
        self.advance(p.created_at)
        assert self.head is not None
        b = self._bucket(t)
        if self.head - b >= self.retain:
            return
        assert features is not None
        self.ids.add(p.id)
        self.rows.append(Row(b, t, p.author_id or p.author, p.id, frozenset(features)))

    def in_window(self, name: str) -> list[Row]:
        assert self.head is not None
        key = (name, self.head, len(self.rows))
        if key not in self._memo:
            lo = self.head - self.windows[name]
            self._memo = {key: [r for r in self.rows if lo < r.bucket <= self.head]}
        return self._memo[key]

    def counts(self, name: str) -> dict[str, int]:
        pairs: dict[str, set[tuple[str, int]]] = {}
        for r in self.in_window(name):
            for f in r.features:
                pairs.setdefault(f, set()).add((r.author, r.bucket))
        return {f: len(s) for f, s in pairs.items()}

    def totals(self, name: str) -> tuple[int, int]:
        rows = self.in_window(name)
        return len({(r.author, r.bucket) for r in rows}), len(rows)

    def stats(self, f: str, name: str) -> dict[str, object]:
        rows = [r for r in self.in_window(name) if f in r.features]
        per_author: dict[str, set[int]] = {}
        for r in rows:
            per_author.setdefault(r.author, set()).add(r.bucket)
        return {
            "count": len({(r.author, r.bucket) for r in rows}),
            "posts": len(rows),
            "authors": len(per_author),
            "support": sum(min(len(b), self.cap) for b in per_author.values()),
            "first_seen": datetime.fromtimestamp(min(r.t for r in rows), UTC),
            "last_seen": datetime.fromtimestamp(max(r.t for r in rows), UTC),
        }
