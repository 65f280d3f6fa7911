"""The PostgreSQL store: the Store interface for several writers and replicas.

Same semantics as the SQLite store (the contract tests run against both):
idempotent upserts by post id, the cursor saved in the batch's transaction,
the same filters, OR-semantics full-text search over escaped user text. What
differs is how it scales: day partitions pruned by ``since`` and dropped for
retention, any number of processes writing at once (two index workers) and
reading (``serve`` replicas), and no single-writer lock.

Dense search stays in-process: the server here has no pgvector, and the
in-process index (exact int8 scan, time-blocked) is what every replica
already runs; each replica rebuilds it from ``embeddings`` at start and then
follows ``vectors_since``, whose sequence numbers become visible strictly in
order (see :meth:`BatchWriter.write_vectors`). So a replica needs no bus
consumer of its own to see what the index workers write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from townsquare.model import Event, Post, Upsert
from townsquare.retry import Backoff, Retry
from townsquare.store import STORES
from townsquare.store.base import (
    ApplyResult,
    Candidate,
    QuarantineRecord,
    Related,
    SearchFilters,
    Store,
    StoredVectors,
    normalize_domain,
)
from townsquare.store.people import Author
from townsquare.store.postgres.accounts import AccountsMixin
from townsquare.store.postgres.database import Database, lock_key
from townsquare.store.postgres.partitions import Partitions, RetentionResult
from townsquare.store.postgres.textsearch import (
    LANGUAGE_CONFIGS,
    RANK_NORMALIZATION,
    RANK_WEIGHTS,
    tsquery_sql,
)
from townsquare.store.postgres.writer import BatchWriter
from townsquare.text import fold

log = logging.getLogger(__name__)

_POST_COLS = (
    "p.key, p.id, p.source, p.author, p.author_id, p.author_name, p.text, p.created_at, "
    "p.indexed_at, p.url, p.lang, p.hashtags, p.mentions, p.reply_to, p.quote_of, "
    "p.likes, p.reposts, p.replies, p.quotes"
)
#: An author row, with its last post time and post count read from ``posts``.
_AUTHOR_COLS = (
    "a.id, a.source, a.handle, a.display_name, a.first_at, "
    "(SELECT max(created_at) FROM posts WHERE author_id = a.id), "
    "(SELECT count(*) FROM posts WHERE author_id = a.id)"
)
#: Transient conflicts between concurrent writers: the transaction is retried whole.
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
APPLY_RETRY = Retry(attempts=6, backoff=Backoff(base=0.05, cap=1.0), retry_on=_RETRYABLE)
#: Full-text matches ranked per query: the newest this many (see ``lexical``).
LEXICAL_WINDOW = 1000


_LEXICAL = sql.SQL(
    "SELECT m.key, ts_rank_cd({weights}, m.tsv, %s::tsquery, {norm}) AS s FROM ("
    "SELECT p.key, p.tsv, p.created_at FROM posts p WHERE p.tsv @@ %s::tsquery{where} "
    "ORDER BY p.created_at DESC LIMIT {window}) AS m ORDER BY s DESC, m.created_at DESC LIMIT %s"
)


def row_to_post(row: Sequence[Any]) -> Post:
    return Post(
        id=row[1], source=row[2], author=row[3], author_id=row[4], author_name=row[5],
        text=row[6], created_at=row[7], indexed_at=row[8], url=row[9], lang=row[10],
        hashtags=row[11].split() if row[11] else [],
        mentions=row[12].split() if row[12] else [],
        reply_to=row[13], quote_of=row[14],
        likes=row[15], reposts=row[16], replies=row[17], quotes=row[18],
    )


def row_to_author(row: Sequence[Any]) -> Author:
    return Author(id=row[0], source=row[1], handle=row[2], display_name=row[3],
                  first_seen=row[4], last_seen=row[5] or row[4], posts=int(row[6] or 0))


def filter_sql(f: SearchFilters) -> tuple[list[str], list[Any]]:
    """SQL predicates (on alias ``p``) for the filters, and their parameters."""
    where: list[str] = []
    params: list[Any] = []
    if f.since is not None:
        where.append("p.created_at >= %s")
        params.append(f.since)
    if f.until is not None:
        where.append("p.created_at <= %s")
        params.append(f.until)
    if f.authors:
        names = [a.lower().lstrip("@") for a in f.authors]
        where.append("(lower(p.author) = ANY(%s) OR lower(p.author_id) = ANY(%s))")
        params += [names, names]
    if f.exclude_authors:
        names = [a.lower().lstrip("@") for a in f.exclude_authors]
        where.append("lower(p.author) <> ALL(%s) AND lower(p.author_id) <> ALL(%s)")
        params += [names, names]
    if f.sources:
        where.append("p.source = ANY(%s)")
        params.append(list(f.sources))
    if f.langs:
        where.append("p.lang = ANY(%s)")
        params.append(list(f.langs))
    for tag in f.hashtags:
        where.append("position(' ' || %s || ' ' in ' ' || p.hashtags || ' ') > 0")
        params.append(tag.lower().lstrip("#"))
    for domains, neg in ((f.domains, ""), (f.exclude_domains, "NOT ")):
        if domains:
            names = [normalize_domain(d) for d in domains]
            host = f"coalesce({_HOST}, '')"
            where.append(f"{neg}({host} = ANY(%s) OR {host} LIKE ANY(%s))")
            params += [names, ["%." + _like(d) for d in names]]
    if f.min_likes is not None:
        where.append("coalesce(p.likes, 0) >= %s")
        params.append(f.min_likes)
    if f.scopes:
        alternatives = []
        for scope in f.scopes:
            sub, sub_params = filter_sql(scope)
            alternatives.append("(" + (" AND ".join(sub) or "TRUE") + ")")
            params += sub_params
        where.append("(" + " OR ".join(alternatives) + ")")
    return where, params


#: The lower-cased host of a post's URL (scheme, optional user info, host).
_HOST = r"lower(substring(p.url from '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/@?#]*@)?([^/:?#]+)'))"


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _and(where: list[str]) -> str:
    return "".join(" AND " + w for w in where)


class PostgresStore(AccountsMixin, Store):
    """PostgreSQL 13+; see :mod:`townsquare.store.postgres.migrations` for the layout."""

    kind = "postgresql"

    def __init__(self, url: str, read_only: bool = False) -> None:
        self.db = Database(url, read_only=read_only)
        self.partitions = Partitions(self.db)
        self._seq_lock = lock_key(self.db.schema, "embedding_seq")

    # -- ingest -------------------------------------------------------------

    def apply(
        self,
        stream_key: str,
        events: Sequence[Event],
        cursor: str | None,
        vectors: Mapping[str, np.ndarray] | None = None,
        staged: Callable[[], None] | None = None,
    ) -> ApplyResult:
        if staged is not None:
            # Mostly waiting on the server, which releases the GIL: let the
            # pipeline parse the next batch meanwhile.
            staged()
        self.partitions.ensure(ev.post.created_at for ev in events if isinstance(ev, Upsert))

        def attempt() -> ApplyResult:
            with self.db.transaction() as conn:
                writer = BatchWriter(conn, datetime.now(UTC))
                writer.apply(events)
                if vectors:
                    writer.write_vectors(vectors, self._seq_lock)
                writer.save_cursor(stream_key, cursor)
            return writer.result

        return APPLY_RETRY.call(attempt, on_retry=lambda exc, n: log.info(
            "apply: %s; retrying (%d)", type(exc).__name__, n))

    def refused_record(self, exc: BaseException) -> bool:
        """Data errors: a value the server will not take (bad encoding, out of
        range, a B-tree entry over its size limit, a constraint). Connection
        loss, a shutdown or a full disk are the engine's, and are not."""
        return super().refused_record(exc) or isinstance(
            exc, psycopg.errors.DataError | psycopg.errors.IntegrityError
            | psycopg.errors.ProgramLimitExceeded
        )

    def set_embedder_name(self, name: str, dim: int) -> None:
        """Record which embedder writes vectors; refuse to mix two."""
        wanted = f"{name}/{dim}"
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO meta(k, v) VALUES ('embedder', %s) ON CONFLICT (k) DO NOTHING",
                (wanted,),
            )
        current = self.embedder_name()
        if current != wanted:
            raise ValueError(
                f"this store holds vectors from embedder {current!r}, not {wanted}; "
                "use the same --embedder or a fresh store"
            )

    def get_cursor(self, stream_key: str) -> str | None:
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT cursor FROM cursors WHERE stream_key = %s", (stream_key,)
            ).fetchone()
        return row[0] if row else None

    def cursors(self) -> dict[str, str]:
        with self.db.connection() as conn:
            return dict(conn.execute("SELECT stream_key, cursor FROM cursors").fetchall())

    # -- reads --------------------------------------------------------------

    def get_post(self, post_id: str) -> Post | None:
        with self.db.connection() as conn:
            row = conn.execute(
                f"SELECT {_POST_COLS} FROM post_ids i JOIN posts p "
                "ON p.key = i.key AND p.created_at = i.created_at WHERE i.id = %s",
                (post_id,),
            ).fetchone()
        return row_to_post(row) if row else None

    def posts_by_keys(
        self, keys: Sequence[int], filters: SearchFilters | None = None
    ) -> dict[int, Post]:
        if not len(keys):
            return {}
        where, params = filter_sql(filters or SearchFilters())
        # post_ids says which partitions hold the keys: only those are probed.
        query = (
            f"SELECT {_POST_COLS} FROM posts p WHERE p.key = ANY(%s) AND p.created_at = ANY("
            "ARRAY(SELECT created_at FROM post_ids WHERE key = ANY(%s)))" + _and(where)
        )
        wanted = [int(k) for k in keys]
        with self.db.connection() as conn:
            rows = conn.execute(query, [wanted, wanted, *params]).fetchall()
        return {row[0]: row_to_post(row) for row in rows}

    def lexical(self, query: str, filters: SearchFilters, limit: int) -> list[Candidate]:
        """The best of the newest ``LEXICAL_WINDOW`` matches, by ``ts_rank_cd``.

        Ranking costs tens of microseconds a row and a common word matches a
        sixth of all posts, so ranking every match does not scale (seconds at
        a million posts). The newest matches come cheaply off the per-day
        ``created_at`` indexes (or, for rare words, the GIN index; the planner
        picks), and recency is what retrieval rewards anyway. Older matches
        stay reachable through ``since``/``until``. SQLite ranks every match;
        on small stores the two agree.
        """
        built = tsquery_sql(query, [lang for lang in filters.langs if lang in LANGUAGE_CONFIGS])
        if built is None:
            return []
        tsquery, qparams = built
        where, params = filter_sql(filters)
        with self.db.connection() as conn:
            # Normalize first, then search with the tsquery as a plain value,
            # planned for that value (prepare=False: never a generic plan). With
            # the tsquery known only at run time, the planner cannot tell a
            # common word from a rare one and scans everything (measured: 420 ms
            # against 11 ms at a million posts).
            row = conn.execute(sql.SQL("SELECT ({})::text").format(tsquery), qparams).fetchone()
            if row is None or row[0] is None:
                return []  # nothing but stop words
            stmt = _LEXICAL.format(
                weights=sql.Literal(RANK_WEIGHTS), norm=sql.Literal(RANK_NORMALIZATION),
                window=sql.Literal(LEXICAL_WINDOW), where=sql.SQL(_and(where)),
            )
            rows = conn.execute(stmt, [row[0], row[0], *params, limit], prepare=False).fetchall()
        return [Candidate(key=r[0], score=float(r[1])) for r in rows]

    def recent(self, filters: SearchFilters, limit: int) -> list[Candidate]:
        where, params = filter_sql(filters)
        query = (
            "SELECT p.key, extract(epoch FROM p.created_at)::float8 FROM posts p WHERE true"
            + _and(where) + " ORDER BY p.created_at DESC LIMIT %s"
        )
        with self.db.connection() as conn:
            rows = conn.execute(query, [*params, limit]).fetchall()
        return [Candidate(key=r[0], score=float(r[1])) for r in rows]

    def last_key(self) -> int:
        with self.db.connection() as conn:
            row = conn.execute("SELECT coalesce(max(key), 0) FROM posts").fetchone()
        return int(row[0]) if row else 0

    def iter_posts(
        self, since: datetime | None = None, after_key: int = 0, batch: int = 1000
    ) -> Iterator[tuple[int, Post]]:
        last = after_key
        while True:
            query = f"SELECT {_POST_COLS} FROM posts p WHERE p.key > %s"
            params: list[Any] = [last]
            if since is not None:
                query += " AND p.created_at >= %s"
                params.append(since)
            with self.db.connection() as conn:
                rows = conn.execute(query + " ORDER BY p.key LIMIT %s", [*params, batch]).fetchall()
            if not rows:
                return
            for row in rows:
                yield row[0], row_to_post(row)
            last = rows[-1][0]

    def vectors_since(self, seq: int, limit: int = 100_000) -> StoredVectors:
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT seq, post_key, created_ms, scale, vec FROM embeddings WHERE seq > %s "
                "ORDER BY seq LIMIT %s",
                (seq, limit),
            ).fetchall()
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
        with self.db.connection() as conn:
            row = conn.execute("SELECT v FROM meta WHERE k = 'embedder'").fetchone()
        return row[0] if row else None

    def stats(self) -> dict[str, Any]:
        with self.db.connection() as conn:
            sources = {
                src: {"posts": n, "newest_created_at": newest, "newest_indexed_at": ix}
                for src, n, newest, ix in conn.execute(
                    "SELECT source, count(*), max(created_at), max(indexed_at) FROM posts "
                    "GROUP BY source ORDER BY source"
                )
            }
            quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()
            vectors = conn.execute("SELECT count(*) FROM embeddings").fetchone()
            size = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
                (self.db.schema,),
            ).fetchone()
        return {
            "store": self.db.target.redacted(),
            "posts": sum(s["posts"] for s in sources.values()),
            "sources": sources,
            "quarantined": int(quarantined[0]) if quarantined else 0,
            "vectors": int(vectors[0]) if vectors else 0,
            "embedder": self.embedder_name(),
            "file_bytes": int(size[0]) if size else 0,
            "partitions": len(self.partitions.existing()),
            "unaccent": self.db.info.unaccent is not None,
            "dense": "in-process (vectors_since)",
        }

    def quarantined(self, limit: int = 50) -> list[QuarantineRecord]:
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT id, source, raw, reason, at FROM quarantine ORDER BY id DESC LIMIT %s",
                (limit,),
            ).fetchall()
        return [QuarantineRecord(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in rows]

    # -- people and threads -------------------------------------------------

    def get_author(self, key: str) -> Author | None:
        with self.db.connection() as conn:
            row = conn.execute(
                f"SELECT {_AUTHOR_COLS} FROM authors a WHERE a.id = %s", (key,)
            ).fetchone() or conn.execute(
                f"SELECT {_AUTHOR_COLS} FROM authors a WHERE lower(a.handle) = lower(%s) "
                "ORDER BY a.first_at DESC LIMIT 1", (key.lstrip("@"),)
            ).fetchone()
        return row_to_author(row) if row else None

    def find_authors(self, words: Sequence[str], limit: int = 20) -> list[tuple[Author, int]]:
        folded = list(dict.fromkeys(fold(w) for w in words if w))[:32]
        if not folded:
            return []
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT {_AUTHOR_COLS}, w.n FROM (SELECT author_id, count(*) AS n "
                "FROM author_words WHERE word = ANY(%s) GROUP BY author_id "
                "ORDER BY n DESC LIMIT 200) w JOIN authors a ON a.id = w.author_id",
                (folded,),
            ).fetchall()
        floor = datetime.min.replace(tzinfo=UTC)
        rows.sort(key=lambda r: (r[7], r[6] or 0, r[5] or floor), reverse=True)
        return [(row_to_author(r), int(r[7])) for r in rows[:limit]]

    def authors_to_look_up(self, source: str, limit: int, retry_before: datetime) -> list[str]:
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT id FROM authors WHERE handle = id AND source = %s "
                "AND (looked_up_at IS NULL OR looked_up_at < %s) ORDER BY first_at DESC LIMIT %s",
                (source, retry_before, limit),
            ).fetchall()
        return [r[0] for r in rows]

    def mark_looked_up(self, ids: Sequence[str], at: datetime) -> None:
        if not ids:
            return
        with self.db.transaction() as conn:
            conn.execute("UPDATE authors SET looked_up_at = %s WHERE id = ANY(%s)",
                         (at, sorted(ids)))

    def related_posts(self, post_id: str, kind: Related, limit: int = 50) -> list[Post]:
        col = {"replies": "reply_to", "quotes": "quote_of"}[kind]
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT {_POST_COLS} FROM posts p WHERE p.{col} = %s "
                "ORDER BY p.created_at LIMIT %s",
                (post_id, limit),
            ).fetchall()
        return [row_to_post(r) for r in rows]

    # -- retention ------------------------------------------------------------

    def drop_partitions_before(self, cutoff: datetime, dry_run: bool = False) -> RetentionResult:
        """Drop whole day partitions older than ``cutoff`` and forget their posts."""
        return self.partitions.drop_before(cutoff, dry_run=dry_run)

    def close(self) -> None:
        self.db.close()


@STORES.register("postgresql")
def _open(url: str, read_only: bool = False) -> PostgresStore:
    return PostgresStore(url, read_only=read_only)
