"""The post and people reads both engines answer with the same statements.

What stays an engine's own: the ingest transaction (``apply``), hydration
by key (PostgreSQL probes only the partitions that hold the keys), full-text
ranking (FTS5 + BM25 against tsvector + ``ts_rank_cd``) and the engine's
part of ``stats``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from townsquare.model import Post
from townsquare.store.base import PeopleStore, PostsStore
from townsquare.store.people import Author
from townsquare.store.records import (
    Candidate,
    QuarantineRecord,
    Related,
    SearchFilters,
    StoredVectors,
)
from townsquare.store.sql.dialect import SqlTables, row_to_post
from townsquare.store.sql.filters import filter_sql
from townsquare.text import fold

#: An author row, with its last post time and post count read from ``posts``.
_AUTHOR_COLS = (
    "a.id, a.source, a.handle, a.display_name, a.{first}, "
    "(SELECT max({created}) FROM posts WHERE author_id = a.id), "
    "(SELECT count(*) FROM posts WHERE author_id = a.id)"
)


class SqlPosts(SqlTables, PostsStore):
    """Cursors, the newest posts, post iteration, vectors, quarantine, threads, stats."""

    def _post(self, row: Sequence[Any]) -> Post:
        return row_to_post(row, self.dialect.from_time)

    def get_cursor(self, stream_key: str) -> str | None:
        row = self._read_one("SELECT cursor FROM cursors WHERE stream_key = ?", (stream_key,))
        return row[0] if row else None

    def cursors(self) -> dict[str, str]:
        return {k: v for k, v in self._read("SELECT stream_key, cursor FROM cursors")}

    def recent(self, filters: SearchFilters, limit: int) -> list[Candidate]:
        where, params = filter_sql(filters, self.dialect)
        query = "SELECT p.key, p.{created} FROM posts p"
        query = self.dialect.sql(query) + (" WHERE " + " AND ".join(where) if where else "")
        query += self.dialect.sql(" ORDER BY p.{created} DESC LIMIT ?")
        with self._reading() as conn:
            rows = conn.execute(query, [*params, limit]).fetchall()
        t = self.dialect.from_time
        return [Candidate(key=r[0], score=t(r[1]).timestamp()) for r in rows]

    def last_key(self) -> int:
        row = self._read_one("SELECT coalesce(max(key), 0) FROM posts")
        return int(row[0]) if row else 0

    def iter_posts(
        self, since: datetime | None = None, after_key: int = 0, batch: int = 1000
    ) -> Iterator[tuple[int, Post]]:
        last = after_key
        query = "SELECT {post_cols} FROM {posts} WHERE p.key > ?"
        if since is not None:
            query += " AND p.{created} >= ?"
        query += " ORDER BY p.key LIMIT ?"
        bound = [] if since is None else [self.dialect.time(since)]
        while True:
            rows = self._read(query, [last, *bound, batch])
            if not rows:
                return
            for row in rows:
                yield row[0], self._post(row)
            last = rows[-1][0]

    def related_posts(self, post_id: str, kind: Related, limit: int = 50) -> list[Post]:
        col = {"replies": "reply_to", "quotes": "quote_of"}[kind]
        rows = self._read(
            f"SELECT {{post_cols}} FROM {{posts}} WHERE p.{col} = ? "
            "ORDER BY p.{created} LIMIT ?", (post_id, limit))
        return [self._post(r) for r in rows]

    def vectors_since(self, seq: int, limit: int = 100_000) -> StoredVectors:
        rows = self._read(
            "SELECT seq, post_key, created_ms, scale, vec FROM embeddings WHERE seq > ? "
            "ORDER BY seq LIMIT ?", (seq, limit))
        if not rows:
            empty = np.zeros(0, dtype=np.int64)
            return StoredVectors(empty, empty, empty, np.zeros((0, 0), np.int8),
                                 np.zeros(0, np.float32))
        vecs = np.frombuffer(b"".join(r[4] for r in rows), dtype=np.int8).reshape(len(rows), -1)
        return StoredVectors(
            seqs=np.fromiter((r[0] for r in rows), np.int64, len(rows)),
            keys=np.fromiter((r[1] for r in rows), np.int64, len(rows)),
            created_ms=np.fromiter((r[2] for r in rows), np.int64, len(rows)),
            vectors=vecs,
            scales=np.fromiter((r[3] for r in rows), np.float32, len(rows)),
        )

    def embedder_name(self) -> str | None:
        row = self._read_one("SELECT v FROM meta WHERE k = 'embedder'")
        return row[0] if row else None

    def set_embedder_name(self, name: str, dim: int) -> None:
        wanted = f"{name}/{dim}"
        current = self.embedder_name()
        if current is None:  # the first writer to record one wins; the others compare
            self._write("INSERT INTO meta(k, v) VALUES ('embedder', ?) ON CONFLICT (k) DO NOTHING",
                        (wanted,))
            current = self.embedder_name()
        if current != wanted:
            raise ValueError(
                f"this store holds vectors from embedder {current!r}, not {wanted}; "
                "use the same --embedder or a fresh store"
            )

    def quarantined(self, limit: int = 50) -> list[QuarantineRecord]:
        rows = self._read(
            "SELECT id, source, raw, reason, {at} FROM quarantine ORDER BY id DESC LIMIT ?",
            (limit,))
        t = self.dialect.from_time
        return [QuarantineRecord(r[0], r[1], bytes(r[2]), r[3], t(r[4])) for r in rows]

    def stats(self) -> dict[str, Any]:
        t = self.dialect.from_time
        with self._reading() as conn:
            sources = {
                src: {"posts": int(n), "newest_created_at": t(newest),
                      "newest_indexed_at": t(ix)}
                for src, n, newest, ix in conn.execute(self.dialect.sql(
                    "SELECT source, count(*), max({created}), max({indexed}) FROM posts "
                    "GROUP BY source ORDER BY source")).fetchall()
            }
            quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
            vectors = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
            engine = self._engine_stats(conn)
        return {
            "store": engine.pop("store"),
            "posts": sum(s["posts"] for s in sources.values()),
            "sources": sources,
            "quarantined": int(quarantined),
            "vectors": int(vectors),
            "embedder": self.embedder_name(),
            **engine,
        }

    @abstractmethod
    def _engine_stats(self, conn: Any) -> dict[str, Any]:
        """``store`` (where, for people), ``file_bytes`` and what else only this engine says."""


class SqlPeople(SqlTables, PeopleStore):
    """The author directory's reads (its writes are part of the ingest transaction)."""

    def _author(self, row: Sequence[Any]) -> Author:
        t = self.dialect.from_time
        return Author(id=row[0], source=row[1], handle=row[2], display_name=row[3],
                      first_seen=t(row[4]), last_seen=t(row[5] if row[5] is not None else row[4]),
                      posts=int(row[6] or 0))

    def get_author(self, key: str) -> Author | None:
        row = self._read_one(f"SELECT {_AUTHOR_COLS} FROM authors a WHERE a.id = ?", (key,))
        if row is None:
            row = self._read_one(
                f"SELECT {_AUTHOR_COLS} FROM authors a WHERE {{handle_is}} "
                "ORDER BY a.{first} DESC LIMIT 1", (key.lstrip("@"),))
        return self._author(row) if row else None

    def find_authors(self, words: Sequence[str], limit: int = 20) -> list[tuple[Author, int]]:
        folded = list(dict.fromkeys(fold(w) for w in words if w))[:32]
        if not folded:
            return []
        marks = ",".join("?" * len(folded))
        # The best-matched few hundred, then their post counts (read from posts) rank them.
        rows = self._read(
            f"SELECT {_AUTHOR_COLS}, w.n FROM (SELECT author_id, count(*) AS n FROM author_words "
            f"WHERE word IN ({marks}) GROUP BY author_id ORDER BY n DESC LIMIT 200) w "
            "JOIN authors a ON a.id = w.author_id", folded)
        rows.sort(key=lambda r: (r[7], r[6] or 0, r[5] if r[5] is not None else r[4]),
                  reverse=True)
        return [(self._author(r), int(r[7])) for r in rows[:limit]]

    def authors_to_look_up(self, source: str, limit: int, retry_before: datetime) -> list[str]:
        rows = self._read(
            "SELECT id FROM authors WHERE handle = id AND source = ? "
            "AND ({looked_up} IS NULL OR {looked_up} < ?) ORDER BY {first} DESC LIMIT ?",
            (source, self.dialect.time(retry_before), limit))
        return [r[0] for r in rows]

    def mark_looked_up(self, ids: Sequence[str], at: datetime) -> None:
        if not ids:
            return
        ordered = sorted(set(ids))  # one lock order for concurrent writers
        with self._writing() as conn:
            for i in range(0, len(ordered), 500):
                chunk = ordered[i : i + 500]
                conn.execute(self.dialect.sql(
                    "UPDATE authors SET {looked_up} = ? WHERE id IN "
                    f"({','.join('?' * len(chunk))})"), [self.dialect.time(at), *chunk])
