"""What differs between SQLite's and PostgreSQL's SQL, declared once per engine.

A shared statement is written with ``?`` placeholders and ``{name}`` fields:

- a time column by its stem (``{created}``, ``{indexed}``, ``{at}``,
  ``{revoked}``, ``{first}``, ``{looked_up}``): SQLite keeps epoch
  milliseconds in ``created_ms``, PostgreSQL a ``timestamptz`` in
  ``created_at`` (and ``at`` for the usage ledger's and quarantine's ``at``);
- ``{same}``: the null-safe equality (``IS`` / ``IS NOT DISTINCT FROM``);
- ``{posts}`` and ``{post_cols}``: where a post row and its engagement
  counts are read from (SQLite keeps counts in a narrow side table);
- ``{host}``: the lower-cased host of ``p.url``; ``{likes}``: ``p``'s likes.

:meth:`Dialect.sql` renders it for the engine (cached), and the value
helpers turn Python values into what the engine binds and back.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from townsquare.model import Post

#: Time columns by stem (what the shared SQL names them).
TIME_STEMS = ("created", "indexed", "at", "revoked", "first", "looked_up")

#: The columns a post is read with, in :func:`row_to_post`'s order (``{likes}`` etc. filled in).
_POST_COLS = (
    "p.key, p.id, p.source, p.author, p.author_id, p.author_name, p.text, p.{created}, "
    "p.{indexed}, p.url, p.lang, p.hashtags, p.mentions, p.reply_to, p.quote_of, "
    "{counts}.likes, {counts}.reposts, {counts}.replies, {counts}.quotes"
)


@dataclass(frozen=True)
class Dialect:
    """One engine's spellings. Frozen and hashable: rendered statements are cached by it."""

    name: str
    #: The placeholder the driver takes (``?`` or ``%s``).
    param: str
    #: Times as epoch milliseconds (SQLite) or as aware datetimes (PostgreSQL).
    epoch_ms: bool
    #: Null-safe equality.
    same: str
    #: Where posts are read from, as alias ``p``, and the alias of their counts.
    posts: str
    counts: str
    #: SQL for the lower-cased host of ``p.url`` ("" when there is none).
    host: str
    #: SQL for ``p``'s like count (0 when unknown).
    likes: str
    #: Handle comparison ignoring case, with one placeholder in the engine's own
    #: spelling (fields are filled in after placeholders are rendered).
    handle_is: str
    #: Binds a JSON object (text, or the driver's JSON wrapper).
    json_value: Callable[[Any], Any] = field(default=lambda obj: json.dumps(obj, default=str))

    def col(self, stem: str) -> str:
        """A time column's name: ``created`` -> ``created_ms`` / ``created_at``."""
        if self.epoch_ms:
            return f"{stem}_ms"
        return stem if stem == "at" else f"{stem}_at"

    def sql(self, text: str) -> str:
        """Render a shared statement for this engine."""
        return _render(self, text)

    def time(self, dt: datetime | None = None) -> Any:
        """A time as the engine stores it (now when None)."""
        dt = dt or datetime.now(UTC)
        return int(dt.timestamp() * 1000) if self.epoch_ms else dt

    def from_time(self, value: Any) -> datetime:
        """A stored time as an aware UTC datetime."""
        if self.epoch_ms:
            return datetime.fromtimestamp(value / 1000, UTC)
        return value  # type: ignore[no-any-return]

    def json(self, obj: Any) -> Any:
        return self.json_value(obj)

    @staticmethod
    def from_json(value: Any) -> dict[str, Any]:
        """A stored JSON object (text from SQLite, already decoded by psycopg)."""
        if isinstance(value, str | bytes):
            return dict(json.loads(value))
        return dict(value)

    def marks(self, n: int) -> str:
        """``n`` placeholders, comma-separated (for ``IN (…)``)."""
        return ",".join([self.param] * n)


@lru_cache(maxsize=512)
def _render(dialect: Dialect, text: str) -> str:
    fields: dict[str, str] = {stem: dialect.col(stem) for stem in TIME_STEMS}
    fields.update(same=dialect.same, posts=dialect.posts, host=dialect.host,
                  likes=dialect.likes, handle_is=dialect.handle_is)
    fields["post_cols"] = _POST_COLS.format(counts=dialect.counts, **fields)
    # Placeholders first: a field may hold a literal "?" (PostgreSQL's host regex).
    if dialect.param != "?":
        text = text.replace("?", dialect.param)
    return text.format(**fields)


def row_to_post(row: Sequence[Any], from_time: Callable[[Any], datetime]) -> Post:
    """A row read with ``{post_cols}`` as a :class:`Post`."""
    return Post(
        id=row[1], source=row[2], author=row[3], author_id=row[4], author_name=row[5],
        text=row[6], created_at=from_time(row[7]), indexed_at=from_time(row[8]),
        url=row[9], lang=row[10],
        hashtags=row[11].split() if row[11] else [],
        mentions=row[12].split() if row[12] else [],
        reply_to=row[13], quote_of=row[14],
        likes=row[15], reposts=row[16], replies=row[17], quotes=row[18],
    )


class SqlTables(ABC):
    """The base of every shared-SQL mixin: an engine's dialect and its two ways in."""

    dialect: Dialect

    @abstractmethod
    def _reading(self) -> AbstractContextManager[Any]:
        """A connection to read with (SQLite: this thread's read-only one)."""

    @abstractmethod
    def _writing(self) -> AbstractContextManager[Any]:
        """A connection inside one write transaction, committed on exit."""

    def _read(self, text: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of one shared statement."""
        with self._reading() as conn:
            return list(conn.execute(self.dialect.sql(text), params).fetchall())

    def _read_one(self, text: str, params: Sequence[Any] = ()) -> Any:
        with self._reading() as conn:
            return conn.execute(self.dialect.sql(text), params).fetchone()

    def _write(self, text: str, params: Sequence[Any] = ()) -> int:
        """Run one shared statement in its own transaction; the rows it changed."""
        with self._writing() as conn:
            return int(conn.execute(self.dialect.sql(text), params).rowcount)
