"""Replaying recorded traffic through trend detection.

``load_tweets_csv`` reads the Twitter US Airline Sentiment export
(``../shared/data/tweets/Tweets.csv``: eight days of February 2015 airline
mentions) into posts in time order; ``replay`` feeds posts to a detector and
yields what trended at regular event-time checkpoints, which is how the
acceptance report and the benchmark look for the dataset's real bursts.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from townsquare.model import Post
from townsquare.trends.detector import TrendDetector
from townsquare.trends.results import Trend


def load_tweets_csv(path: Path) -> list[Post]:
    """Tweets.csv rows as posts (first row per tweet id), oldest first."""
    posts: dict[str, Post] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            tid = row["tweet_id"].strip()
            if not tid or tid in posts:
                continue
            created = datetime.strptime(row["tweet_created"].strip(), "%Y-%m-%d %H:%M:%S %z")
            handle = row["name"].strip()
            posts[tid] = Post(
                id=f"tweets:{tid}",
                source="tweets",
                author=handle,
                text=row["text"],
                created_at=created,
                url=f"https://twitter.com/{handle}/status/{tid}",
                lang="en",
                raw={"airline": row.get("airline"), "sentiment": row.get("airline_sentiment")},
            )
    return sorted(posts.values(), key=lambda p: (p.created_at, p.id))


@dataclass(slots=True)
class Checkpoint:
    """What trended at one moment of a replay."""

    at: datetime
    window: str
    trends: list[Trend]


def replay(
    detector: TrendDetector,
    posts: Iterable[Post],
    every: timedelta,
    windows: Iterable[str] = ("1h",),
    limit: int = 5,
) -> Iterator[Checkpoint]:
    """Feed ``posts`` (in time order) and report trends each ``every`` of event time.

    A checkpoint falls at each multiple of ``every`` that the stream passes,
    evaluated just before the first post at or after it.
    """
    step = every.total_seconds()
    names = list(windows)
    next_at: float | None = None
    for post in posts:
        t = post.created_at.timestamp()
        if next_at is None:
            next_at = (t // step + 1) * step
        while t >= next_at:
            at = datetime.fromtimestamp(next_at, post.created_at.tzinfo)
            # The window ends just before the checkpoint: the last full buckets.
            detector.advance(at - timedelta(microseconds=1))
            for name in names:
                yield Checkpoint(at, name, detector.trends(name, limit))
            next_at += step
        detector.add(post)
