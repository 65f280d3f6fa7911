"""One ``apply`` transaction: events, vectors and the cursor, written with set-based SQL.

A run of upserts is first copied (binary ``COPY``) into a session-local
staging table, then handled by a few statements over that table. COPY is
what makes this fast: binding the same rows as array parameters costs 15–25
times more client CPU (measured: 240 ms against 10 ms per 2,000 posts).

Upserts are idempotent by post id across partitions, through ``post_ids``:

1. One ``INSERT … ON CONFLICT (id) DO UPDATE`` over the staged ids, in id
   order, both claims a key for every new id and row-locks every known one
   (so two workers upserting the same post serialize, and always lock in the
   same order). Keys are drawn in arrival order, as SQLite's rowids are. The
   key, the ``created_at`` on record and whether the id is new go back into
   the staging table.
2. New posts are inserted in one statement.
3. Known posts are compared with what is stored: an unchanged replay is a
   no-op (not counted, index untouched); a post whose row is missing
   (retention dropped its partition before deleting its id) is inserted
   again; an edit is one ``UPDATE`` (a changed ``created_at`` moves the row
   to its new day partition, and ``post_ids`` follows).

Text that PostgreSQL cannot store is made storable rather than failing the
batch: NUL characters are dropped (``text`` cannot hold them), and a post id
longer than ``MAX_ID_BYTES`` (a B-tree key must fit a third of a page) becomes
a quarantine record with that reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import groupby
from typing import Any

import numpy as np
import psycopg

from townsquare.model import (
    Delete,
    Engage,
    Event,
    Identity,
    Post,
    Quarantine,
    Upsert,
    quarantine,
)
from townsquare.quantize import quantize
from townsquare.store.base import ApplyResult
from townsquare.store.people import directory_update, name_words, resolve_handles

MAX_ID_BYTES = 1024

_FIELDS = (
    "id, source, author, author_id, author_name, text, created_at, url, lang, hashtags, "
    "mentions, reply_to, quote_of, raw, likes, reposts, replies, quotes"
)
_FIELD_TYPES = ["int4", *(["text"] * 6), "timestamptz", *(["text"] * 7), *(["int4"] * 4)]

#: Created once per pooled writer connection (see ``Database``); emptied at every commit.
STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS stage_posts (
    n int4, id text, source text, author text, author_id text, author_name text, text text,
    created_at timestamptz, url text, lang text, hashtags text, mentions text, reply_to text,
    quote_of text, raw text, likes int4, reposts int4, replies int4, quotes int4,
    key bigint, old_created_at timestamptz, inserted boolean
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_vectors (id text, scale real, vec bytea)
    ON COMMIT DELETE ROWS;
"""

_CLAIM = """
WITH fresh AS (
    SELECT id, created_at, nextval('post_key_seq') AS key
    FROM (SELECT id, created_at FROM stage_posts ORDER BY n) AS ordered
), claimed AS (
    INSERT INTO post_ids AS i (id, key, created_at)
    SELECT id, key, created_at FROM fresh ORDER BY id
    ON CONFLICT (id) DO UPDATE SET id = excluded.id
    RETURNING i.id, i.key, i.created_at, (i.xmax = 0) AS inserted
)
UPDATE stage_posts s SET key = c.key, old_created_at = c.created_at, inserted = c.inserted
FROM claimed c WHERE s.id = c.id
RETURNING s.inserted
"""

_INSERT = f"""
INSERT INTO posts (key, {_FIELDS}, indexed_at)
SELECT key, {_FIELDS}, %s::timestamptz FROM stage_posts s WHERE {{which}}
"""
_INSERT_NEW = _INSERT.format(which="s.inserted")
_INSERT_MISSING = _INSERT.format(
    which="NOT s.inserted AND NOT EXISTS (SELECT 1 FROM posts p "
    "WHERE p.key = s.key AND p.created_at = s.old_created_at)"
)
#: The fields whose change makes an upsert an edit (as in the SQLite store).
_COMPARED = "text, created_at, author, url, lang, author_name, reply_to, quote_of"
_UPDATE_CHANGED = f"""
UPDATE posts p SET source = s.source, author = s.author, author_id = s.author_id,
    author_name = s.author_name, text = s.text, created_at = s.created_at,
    indexed_at = %s::timestamptz, url = s.url, lang = s.lang, hashtags = s.hashtags,
    mentions = s.mentions, reply_to = s.reply_to, quote_of = s.quote_of, raw = s.raw
FROM stage_posts s
WHERE NOT s.inserted AND p.key = s.key AND p.created_at = s.old_created_at
  AND ({", ".join("p." + c for c in _COMPARED.split(", "))})
      IS DISTINCT FROM ({", ".join("s." + c for c in _COMPARED.split(", "))})
"""
#: Counts a source reports replace the stored ones (NULL: unknown, keep them).
_SET_COUNTS = """
UPDATE posts p SET likes = coalesce(s.likes, p.likes), reposts = coalesce(s.reposts, p.reposts),
    replies = coalesce(s.replies, p.replies), quotes = coalesce(s.quotes, p.quotes)
FROM stage_posts s
WHERE p.key = s.key AND p.created_at = s.created_at
  AND num_nonnulls(s.likes, s.reposts, s.replies, s.quotes) > 0
  AND (p.likes, p.reposts, p.replies, p.quotes) IS DISTINCT FROM
      (coalesce(s.likes, p.likes), coalesce(s.reposts, p.reposts),
       coalesce(s.replies, p.replies), coalesce(s.quotes, p.quotes))
"""
#: New replies and quotes count on the post they answer or quote.
_COUNT_THREAD = """
UPDATE posts p SET {col} = coalesce(p.{col}, 0) + c.n
FROM (SELECT {ref} AS pid, count(*) AS n FROM stage_posts
      WHERE inserted AND {ref} IS NOT NULL GROUP BY {ref}) c
JOIN post_ids i ON i.id = c.pid
WHERE p.key = i.key AND p.created_at = i.created_at
"""
_ENGAGE = """
UPDATE posts p SET likes = coalesce(p.likes, 0) + %s, reposts = coalesce(p.reposts, 0) + %s
FROM post_ids i WHERE i.id = %s AND p.key = i.key AND p.created_at = i.created_at
"""
_AUTHOR_INSERT = """
INSERT INTO authors (id, source, handle, display_name, first_at)
VALUES (%s, %s, %s, %s, to_timestamp(%s / 1000.0)) ON CONFLICT (id) DO NOTHING
"""

_MOVE_IDS = """
UPDATE post_ids i SET created_at = s.created_at FROM stage_posts s
WHERE NOT s.inserted AND i.id = s.id AND i.created_at <> s.created_at
"""
_INSERT_VECTORS = """
INSERT INTO embeddings (post_key, seq, created_ms, scale, vec)
SELECT i.key, nextval('embedding_seq'), floor(extract(epoch FROM i.created_at) * 1000)::bigint,
       s.scale, s.vec
FROM stage_vectors s JOIN post_ids i ON i.id = s.id
ON CONFLICT (post_key) DO UPDATE SET seq = excluded.seq, created_ms = excluded.created_ms,
    scale = excluded.scale, vec = excluded.vec
"""


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def clean(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; everything else is kept as is."""
    if value is not None and "\x00" in value:
        return value.replace("\x00", "")
    return value


def raw_text(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        raw = json.dumps(raw, ensure_ascii=False, separators=(",", ":"), default=str)
    return clean(raw)


def _row(n: int, p: Post) -> tuple[Any, ...]:
    """A staging row in ``n, _FIELDS`` order."""
    return (
        n, p.id, p.source, clean(p.author), clean(p.author_id or p.author), clean(p.author_name),
        clean(p.text), p.created_at, clean(p.url), clean(p.lang), " ".join(p.hashtags),
        " ".join(p.mentions), clean(p.reply_to), clean(p.quote_of), raw_text(p.raw),
        p.likes, p.reposts, p.replies, p.quotes,
    )


class BatchWriter:
    """Writes one batch on a connection that is inside a transaction."""

    def __init__(self, conn: psycopg.Connection, now: datetime) -> None:
        self.conn = conn
        self.now = now
        self.result = ApplyResult()

    def apply(self, events: Sequence[Event]) -> ApplyResult:
        """Apply events in order, consecutive events of one kind as one statement.

        Quarantine records and engagement touch no post row, so they do not cut
        a run of upserts (a like between every two posts made each post its own
        statements); they are written after the rest, engagement last (a like
        may come before its post in the batch).
        """
        ordered = [ev for ev in events if not isinstance(ev, Engage | Quarantine)]
        for kind, group in groupby(ordered, key=type):
            run = list(group)
            if kind is Upsert:
                self._upsert([ev.post for ev in run])  # type: ignore[union-attr]
            elif kind is Delete:
                self._delete([ev.id for ev in run])  # type: ignore[union-attr]
            elif kind is Identity:
                for ev in run:
                    assert isinstance(ev, Identity)
                    self.conn.execute(
                        "UPDATE posts SET author = %s WHERE author_id = %s AND author <> %s",
                        (ev.handle, ev.did, ev.handle),
                    )
                    self._identity(ev)
                    self.result.identities += 1
        quarantined = [ev for ev in events if isinstance(ev, Quarantine)]
        if quarantined:
            self._quarantine(quarantined)
        engaged = [ev for ev in events if isinstance(ev, Engage)]
        if engaged:
            self._engage(engaged)
        return self.result

    # -- upserts --------------------------------------------------------------

    def _upsert(self, posts: list[Post]) -> None:
        latest = {p.id: p for p in posts}  # the last version in a run wins
        bad = [p for p in latest.values() if len(p.id.encode()) > MAX_ID_BYTES]
        if bad:
            self._quarantine([
                quarantine(p.source, raw_text(p.raw) or p.id,
                           f"post id longer than {MAX_ID_BYTES} bytes")
                for p in bad
            ])
        rejected = {p.id for p in bad}
        todo = [p for p in latest.values() if p.id not in rejected]
        if not todo:
            return
        known = self._known_authors(todo)
        resolve_handles(todo, known)
        with self.conn.cursor() as cur:
            cur.execute("DELETE FROM stage_posts")  # an earlier run in this transaction
            with cur.copy(f"COPY stage_posts (n, {_FIELDS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_FIELD_TYPES)
                for n, p in enumerate(todo):
                    copy.write_row(_row(n, p))
            inserted = [row[0] for row in cur.execute(_CLAIM).fetchall()]
            new = sum(inserted)
            if new:
                cur.execute(_INSERT_NEW, (self.now,))
            if new < len(inserted):  # replays or edits of known posts
                missing = cur.execute(_INSERT_MISSING, (self.now,)).rowcount
                changed = cur.execute(_UPDATE_CHANGED, (self.now,)).rowcount
                cur.execute(_MOVE_IDS)
                self.result.upserted += max(0, missing) + max(0, changed)
            if any((p.likes, p.reposts, p.replies, p.quotes) != (None,) * 4 for p in todo):
                cur.execute(_SET_COUNTS)
            if new and any(p.reply_to or p.quote_of for p in todo):
                for col, ref in (("replies", "reply_to"), ("quotes", "quote_of")):
                    cur.execute(_COUNT_THREAD.format(col=col, ref=ref))
            update = directory_update(todo, known, _ms)
            if update.new:  # id order: concurrent writers lock alike
                cur.executemany(_AUTHOR_INSERT, sorted(update.new))
            if update.changed:
                renamed = sorted(update.changed, key=lambda row: row[2])
                cur.executemany("UPDATE authors SET handle = %s, display_name = %s WHERE id = %s",
                                renamed)
            self._rewrite_words(cur, update.words)
        self.result.upserted += new

    # -- the author directory ---------------------------------------------------

    def _known_authors(self, posts: list[Post]) -> dict[str, tuple[str, str | None]]:
        ids = sorted({clean(p.author_id or p.author) or "" for p in posts})
        rows = self.conn.execute(
            "SELECT id, handle, display_name FROM authors WHERE id = ANY(%s)", (ids,)
        ).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    @staticmethod
    def _rewrite_words(cur: psycopg.Cursor[Any], rewrites: list[tuple[str, list[str]]]) -> None:
        if not rewrites:
            return
        cur.execute("DELETE FROM author_words WHERE author_id = ANY(%s)",
                    ([aid for aid, _ in rewrites],))
        cur.executemany(
            "INSERT INTO author_words (word, author_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [(w, aid) for aid, ws in rewrites for w in ws],
        )

    def _identity(self, ev: Identity) -> None:
        row = self.conn.execute(
            "SELECT handle, display_name FROM authors WHERE id = %s", (ev.did,)
        ).fetchone()
        name = ev.display_name if ev.display_name is not None else (row[1] if row else None)
        self.conn.execute(
            "INSERT INTO authors AS a (id, source, handle, display_name, first_at, "
            "looked_up_at) VALUES (%s, 'bluesky', %s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET handle = excluded.handle, "
            "display_name = excluded.display_name, looked_up_at = excluded.looked_up_at",
            (ev.did, ev.handle, name, self.now, self.now),
        )
        if row is None or (row[0], row[1]) != (ev.handle, name):
            with self.conn.cursor() as cur:
                self._rewrite_words(cur, [(ev.did, name_words(ev.handle, name))])

    def _engage(self, events: list[Engage]) -> None:
        totals: dict[str, list[int]] = {}
        for ev in events:
            t = totals.setdefault(ev.post_id, [0, 0])
            t[0] += ev.likes
            t[1] += ev.reposts
        with self.conn.cursor() as cur:
            cur.executemany(_ENGAGE, [(lk, rp, pid) for pid, (lk, rp) in sorted(totals.items())])

    # -- the rest ---------------------------------------------------------------

    def _delete(self, ids: list[str]) -> None:
        cur = self.conn.execute(
            "WITH gone AS (DELETE FROM post_ids WHERE id = ANY(%s) RETURNING key, created_at) "
            "DELETE FROM posts p USING gone WHERE p.key = gone.key "
            "AND p.created_at = gone.created_at",
            (sorted(set(ids)),),
        )
        self.result.deleted += max(0, cur.rowcount)

    def _quarantine(self, records: list[Quarantine]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO quarantine(source, raw, reason, at, digest) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (digest) DO NOTHING",
                [(clean(q.source), q.raw, clean(q.reason), self.now, q.digest())
                 for q in records],
            )
        self.result.quarantined += len(records)

    def write_vectors(self, vectors: Mapping[str, np.ndarray], seq_lock: int) -> None:
        """Store quantized vectors for posts that exist, under the sequence lock.

        The lock is held from drawing sequence numbers until this transaction
        commits, so ``embeddings.seq`` values become visible in increasing
        order and ``vectors_since`` readers never step over one that commits
        late. The rows are staged before the lock is taken, and the cursor is
        all that follows it, so the section writers serialize on is short.
        """
        ids = list(vectors)
        if not ids:
            return
        q, scales = quantize(np.stack([vectors[pid] for pid in ids]))
        with self.conn.cursor() as cur:
            with cur.copy("COPY stage_vectors (id, scale, vec) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "float4", "bytea"])
                for i, pid in enumerate(ids):
                    copy.write_row((pid, float(scales[i]), q[i].tobytes()))
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (seq_lock,))
            cur.execute(_INSERT_VECTORS)

    def save_cursor(self, stream_key: str, cursor: str | None) -> None:
        self.conn.execute(
            "INSERT INTO cursors(stream_key, cursor, updated_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (stream_key) DO UPDATE SET cursor = excluded.cursor, "
            "updated_at = excluded.updated_at",
            (stream_key, cursor, self.now),
        )
