"""Sources, registered by name. ``source_from_spec('rss:https://…')`` builds one.

Spec grammar (CLI ``--source`` and config): ``KIND`` or ``KIND:TARGET`` where
TARGET is what the source reads (a path or glob for ``jsonl``, a feed URL for
``rss``, a websocket URL for ``jetstream``, an instance URL for ``mastodon``).
"""

from __future__ import annotations

from typing import Any

from townsquare.registry import Registry
from townsquare.retry import backoff_delays
from townsquare.sources.base import Source, SourceError

SOURCES: Registry[Source] = Registry(
    "source",
    "townsquare.sources",
    {
        "jsonl": "townsquare.sources.jsonl",
        "rss": "townsquare.sources.rss",
        "jetstream": "townsquare.sources.jetstream",
        "mastodon": "townsquare.sources.mastodon",
    },
)


def source_from_spec(spec: str, **options: Any) -> Source:
    """Build a source from ``KIND[:TARGET]``; options go to its constructor."""
    kind, _, target = spec.partition(":")
    return SOURCES.create(kind, target or None, **options)


__all__ = ["SOURCES", "Source", "SourceError", "backoff_delays", "source_from_spec"]
