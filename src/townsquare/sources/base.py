"""The Source interface: read a stream, yield batches of events with a cursor.

A source knows how to talk to one kind of upstream (a file, a feed, a
websocket) and nothing about storage. It yields :class:`~townsquare.model.Batch`
objects; the ingest pipeline commits each batch's events *and* its cursor in
one transaction, and on restart hands the saved cursor back to ``stream``.

Network sources reconnect forever with :func:`townsquare.retry.backoff_delays`
(capped exponential with full jitter) and resume from the last cursor they yielded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import ClassVar

from townsquare.errors import ConfigError
from townsquare.model import Batch


class SourceError(ConfigError):
    """A source cannot start at all (bad path, bad URL): a user error, not a blip."""


class Source(ABC):
    """One upstream stream of posts.

    ``kind`` is the registry name (``jsonl``, ``rss``, ``jetstream``, ``mastodon``).
    ``key`` identifies this particular stream (kind plus target) and is what the
    cursor is saved under, so two files or two instances resume independently.
    """

    kind: ClassVar[str]
    #: What the status page shows: network sources track their connection and
    #: last error; a file is "connected" while it is read.
    connected: bool = True
    last_error: str | None = None

    @property
    @abstractmethod
    def key(self) -> str: ...

    @abstractmethod
    def stream(self, cursor: str | None) -> AsyncIterator[Batch]:
        """Yield batches from ``cursor`` on (``None``: from the beginning or live)."""

    def describe(self) -> str:
        """One line for logs and the status page."""
        return self.key
