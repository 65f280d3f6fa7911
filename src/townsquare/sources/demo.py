"""``demo``: replays the sample stream the project ships, so it works without network.

``townsquare serve --demo`` runs this source instead of the network ones.
The sample (``townsquare/data/demo.jsonl``, ~200 original posts by made-up
people about made-up events, in English and French) is replayed relative to
*now*: half of it arrives at once, time-shifted so its newest post is a few
seconds old (there is something to search and ask about immediately); the
rest trickles in one post every ``interval`` seconds (jittered) stamped with
the current time, so the live indicator moves. At the end it starts over
with fresh ids (``demo:<id>~2``...), unless ``loop`` is off.

The cursor is ignored: every start replays the sample anew, shifted to the
new "now" (upserts by id make that harmless).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from townsquare.model import Batch, Event, Post, Upsert
from townsquare.sources import SOURCES
from townsquare.sources.base import Source, SourceError
from townsquare.sources.jsonl import parse_line
from townsquare.timeutil import utcnow

SOURCE = "demo"


def sample_lines(path: str | None = None) -> list[bytes]:
    """The shipped sample (or another JSONL file), one record per line."""
    if path:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise SourceError(f"demo: cannot read {path}: {exc}") from None
    else:
        data = resources.files("townsquare").joinpath("data", "demo.jsonl").read_bytes()
    return [line for line in data.splitlines() if line.strip()]


def sample_posts(path: str | None = None) -> list[Post]:
    """The sample's posts in time order (lines that do not parse are skipped)."""
    posts = []
    for line in sample_lines(path):
        event = parse_line(line, source=SOURCE)
        if isinstance(event, Upsert):
            posts.append(event.post)
    posts.sort(key=lambda p: p.created_at)
    return posts


class DemoSource(Source):
    kind = "demo"

    def __init__(
        self,
        target: str | None = None,
        interval: float = 3.0,
        backlog: float = 0.5,
        loop: bool = True,
        seed: int | None = None,
        **options: Any,
    ) -> None:
        if options:
            raise SourceError(f"demo does not take option(s): {', '.join(options)}")
        if not 0 <= backlog <= 1:
            raise SourceError("demo: backlog is a fraction between 0 and 1")
        self.target = target
        self.posts = sample_posts(target)
        if not self.posts:
            raise SourceError("demo: the sample holds no posts")
        self.interval = interval
        self.backlog = backlog
        self.loop = loop
        self.rng = random.Random(seed)
        self.connected = True
        self.last_error: str | None = None

    @property
    def key(self) -> str:
        return f"demo:{self.target or 'sample'}"

    async def stream(self, cursor: str | None) -> AsyncIterator[Batch]:
        del cursor  # a replay relative to now has nothing to resume
        n_backlog = round(len(self.posts) * self.backlog)
        if n_backlog:
            now = utcnow()
            head = self.posts[:n_backlog]
            shift = now - timedelta(seconds=self.interval) - head[-1].created_at
            events: list[Event] = [
                Upsert(replace(p, created_at=p.created_at + shift, indexed_at=None))
                for p in head
            ]
            yield Batch(events, None, source_time=now)
        rest = self.posts[n_backlog:]
        round_no = 1
        while True:
            for post in rest:
                await asyncio.sleep(self.interval * self.rng.uniform(0.5, 1.5))
                now = utcnow()
                post_id = post.id if round_no == 1 else f"{post.id}~{round_no}"
                fresh = replace(post, id=post_id, created_at=now, indexed_at=None)
                yield Batch([Upsert(fresh)], None, source_time=now)
            if not self.loop:
                return
            round_no += 1
            rest = self.posts


@SOURCES.register("demo")
def _create(target: str | None = None, **options: Any) -> DemoSource:
    return DemoSource(target, **options)
