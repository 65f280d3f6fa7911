"""The one way tests make posts.

``make_post(pid, author, text, when)`` builds a :class:`~townsquare.model.Post`
with id ``<source>:<pid>`` (``scoped=False``: ``pid`` itself). ``when`` is
minutes before ``now`` (a number), an age (a ``timedelta``) or the time itself
(a ``datetime``); ``now`` defaults to the current time, so posts a live window
must see are dated by the clock, and tests that pin the engine's clock pass
their own (``partial(make_post, now=NOW)``). The URL defaults to
``https://example.org/<pid>``; pass ``url=None`` for a post without one. Any
other field goes through as is.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from townsquare.model import Post

_AUTO: Any = object()


def make_post(
    pid: str | int,
    author: str = "alice",
    text: str = "harbour ferry news",
    when: float | timedelta | datetime = 0.0,
    *,
    source: str = "jsonl",
    now: datetime | None = None,
    url: str | None = _AUTO,
    scoped: bool = True,
    **fields: Any,
) -> Post:
    if isinstance(when, datetime):
        created = when
    else:
        age = when if isinstance(when, timedelta) else timedelta(minutes=when)
        created = (now or datetime.now(UTC)) - age
    return Post(
        id=f"{source}:{pid}" if scoped else str(pid), source=source, author=author, text=text,
        created_at=created, url=f"https://example.org/{pid}" if url is _AUTO else url,
        **fields,
    )
