"""A watch: one standing query saved by one API key, kept in the store.

Only the key that created a watch lists, reads or deletes it (any other key
gets 404). It is one of two kinds:

- ``posts`` (the default): every batch committed to the store, by this
  server's sources or by another process, is matched against it, new posts
  only;
- ``stories``: each story refresh matches the window's stories, and a story
  the watch has not reported yet (by id, which survives refreshes) is
  pushed once it has ``min_posts`` posts.

The store keeps the definition as JSON (:class:`~townsquare.store.StoredWatch`'s
``spec``) with the owner, the creation time and the signing secret, so a new
option here needs no migration.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

from townsquare.store.records import StoredWatch
from townsquare.trends.windows import DEFAULT_WINDOWS
from townsquare.watches.matcher import tokens
from townsquare.watches.webhooks import new_secret

MAX_WATCHES_PER_KEY = 50
WatchKind = Literal["posts", "stories"]
STORY_WINDOWS = tuple(spec.name for spec in DEFAULT_WINDOWS)

#: What ``spec`` holds (everything but identity, owner, time and secret).
_SPEC_FIELDS = ("query", "min_terms", "authors", "sources", "langs", "webhook_url", "kind",
                "window", "min_posts")


def _now_ms() -> float:
    """Now, to the millisecond: what a store gives back for a time it was given."""
    return datetime.fromtimestamp(int(time.time() * 1000) / 1000, UTC).timestamp()


@dataclass
class Watch:
    """One saved query, owned by the key id that created it."""

    id: str
    owner: int
    query: str
    min_terms: int
    authors: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    langs: list[str] = field(default_factory=list)
    webhook_url: str | None = None
    created_at: float = field(default_factory=_now_ms)
    kind: WatchKind = "posts"
    #: Stories: the trend window watched, and the size a story needs to be reported.
    window: str = "1h"
    min_posts: int = 1
    #: Signs webhook deliveries (HMAC-SHA256); shown to the owner only at creation.
    secret: str = field(default_factory=new_secret)

    @cached_property
    def terms(self) -> set[str]:
        return tokens(self.query)

    def public_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["owner"], out["secret"]
        if self.kind == "posts":
            del out["window"], out["min_posts"]
        out["object"] = "watch"
        return out

    def stored(self) -> StoredWatch:
        return StoredWatch(
            id=self.id, owner=self.owner, secret=self.secret,
            created_at=datetime.fromtimestamp(self.created_at, UTC),
            spec={name: getattr(self, name) for name in _SPEC_FIELDS},
        )

    @classmethod
    def from_stored(cls, row: StoredWatch) -> Watch:
        spec = {k: v for k, v in row.spec.items() if k in _SPEC_FIELDS}
        return cls(id=row.id, owner=row.owner, secret=row.secret,
                   created_at=row.created_at.timestamp(), **spec)
