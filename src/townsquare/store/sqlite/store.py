"""The embedded store: posts, FTS5 index, vectors and cursors in one SQLite file.

What both engines say alike (accounts, watches, the people and post reads,
filters) is :mod:`townsquare.store.sql`'s, spoken in :data:`DIALECT`; this
module is SQLite's own part: the ingest transaction, hydration by key and
BM25 over FTS5.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from townsquare.model import Delete, Engage, Event, Identity, Post, Quarantine, Upsert
from townsquare.quantize import quantize
from townsquare.store import STORES
from townsquare.store.base import ApplyResult, Candidate, SearchFilters, Store
from townsquare.store.people import directory_update, name_words, resolve_handles
from townsquare.store.query_words import query_tokens
from townsquare.store.sql.accounts import SqlAccounts
from townsquare.store.sql.dialect import Dialect
from townsquare.store.sql.filters import filter_sql
from townsquare.store.sql.posts import SqlPeople, SqlPosts
from townsquare.store.sql.watches import SqlWatches
from townsquare.store.sqlite import bm25
from townsquare.store.sqlite.database import Database

#: Times in epoch ms; engagement counts in a narrow side table (a like rewrites
#: 40 bytes, not a post); hosts through the ``url_host`` function ``Database``
#: registers (SQLite has no URL parser).
DIALECT = Dialect(
    name="sqlite", param="?", epoch_ms=True, same="IS",
    posts="posts p LEFT JOIN engagement e ON e.post_key = p.key", counts="e",
    host="url_host(p.url)",
    likes="coalesce((SELECT likes FROM engagement WHERE post_key = p.key), 0)",
    handle_is="a.handle = ? COLLATE NOCASE",
)


#: Words of a query that get their own newest-first candidate slots.
MAX_LEXICAL_TOKENS = 8

_INSERT = """
INSERT {verb} posts (id, source, author, author_id, author_name, text, created_ms, indexed_ms,
                   url, lang, hashtags, mentions, reply_to, quote_of, raw)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
"""
#: New posts only: a third cheaper per row than the upsert, which then runs only
#: when some ids were already stored (replays and edits), as a no-op for the rest.
_INSERT_NEW = _INSERT.format(verb="OR IGNORE INTO")
_UPSERT = _INSERT.format(verb="INTO") + """ON CONFLICT(id) DO UPDATE SET
    source=excluded.source, author=excluded.author, author_id=excluded.author_id,
    author_name=excluded.author_name, text=excluded.text, created_ms=excluded.created_ms,
    indexed_ms=excluded.indexed_ms, url=excluded.url, lang=excluded.lang,
    hashtags=excluded.hashtags, mentions=excluded.mentions, reply_to=excluded.reply_to,
    quote_of=excluded.quote_of, raw=excluded.raw
WHERE posts.text IS NOT excluded.text OR posts.created_ms IS NOT excluded.created_ms
   OR posts.author IS NOT excluded.author OR posts.url IS NOT excluded.url
   OR posts.lang IS NOT excluded.lang OR posts.author_name IS NOT excluded.author_name
   OR posts.reply_to IS NOT excluded.reply_to OR posts.quote_of IS NOT excluded.quote_of
"""

#: Counts a source reports (Mastodon) replace the stored ones; unknown (NULL) keeps them.
_SET_COUNTS = """
INSERT INTO engagement (post_key, likes, reposts, replies, quotes)
SELECT key, ?1, ?2, ?3, ?4 FROM posts WHERE id = ?5
ON CONFLICT(post_key) DO UPDATE SET likes = coalesce(excluded.likes, likes),
    reposts = coalesce(excluded.reposts, reposts), replies = coalesce(excluded.replies, replies),
    quotes = coalesce(excluded.quotes, quotes)
"""

#: Engagement counted from the stream adds up (``{col}``: likes+reposts, replies, quotes).
_ADD = """
INSERT INTO engagement (post_key, {cols}) SELECT key, {marks} FROM posts WHERE id = ?
ON CONFLICT(post_key) DO UPDATE SET {sets}
"""


def _add_sql(*cols: str) -> str:
    return _ADD.format(cols=", ".join(cols), marks=", ".join("?" * len(cols)),
                       sets=", ".join(f"{c} = coalesce({c}, 0) + excluded.{c}" for c in cols))


_ENGAGE = _add_sql("likes", "reposts")
_COUNT_REPLIES = _add_sql("replies")
_COUNT_QUOTES = _add_sql("quotes")

_AUTHOR_INSERT = """
INSERT INTO authors (id, source, handle, display_name, first_ms) VALUES (?,?,?,?,?)
ON CONFLICT(id) DO NOTHING
"""

def to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def quote_token(token: str) -> str:
    """One token as an FTS5 string literal: never an operator, column or prefix
    (datasette's ``quote_fts``): ``NOT``, ``OR``, ``*``, ``NEAR``, ``col:`` and
    stray quotes stay plain words."""
    return '"' + token.replace('"', '""') + '"'


def _raw_text(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        return raw
    return json.dumps(raw, ensure_ascii=False, separators=(",", ":"), default=str)


def _count_thread(conn: Any, new: Sequence[Post]) -> None:
    """New replies and quotes add to their parent's and quoted post's counts."""
    replies: dict[str, int] = {}
    quotes: dict[str, int] = {}
    for p in new:
        if p.reply_to:
            replies[p.reply_to] = replies.get(p.reply_to, 0) + 1
        if p.quote_of:
            quotes[p.quote_of] = quotes.get(p.quote_of, 0) + 1
    if replies:
        conn.executemany(_COUNT_REPLIES, [(n, pid) for pid, n in replies.items()])
    if quotes:
        conn.executemany(_COUNT_QUOTES, [(n, pid) for pid, n in quotes.items()])


class SQLiteStore(SqlPosts, SqlPeople, SqlAccounts, SqlWatches, Store):
    """SQLite in WAL mode; see :mod:`townsquare.store.sqlite.database` for the threading."""

    kind = "sqlite"
    dialect = DIALECT

    def __init__(self, path: Path | str, read_only: bool = False) -> None:
        sync = os.environ.get("TOWNSQUARE_SQLITE_SYNC", "NORMAL").upper()
        self.db = Database(Path(path), read_only=read_only, synchronous=sync)
        self.path = self.db.path
        self._running_max_ms: int = 0
        self._max_key: int = 0
        self._next_seq: int | None = None
        self._terms = bm25.TermStats()

    # -- ingest -------------------------------------------------------------

    def apply(
        self,
        stream_key: str,
        events: Sequence[Event],
        cursor: str | None,
        vectors: Mapping[str, np.ndarray] | None = None,
        staged: Callable[[], None] | None = None,
    ) -> ApplyResult:
        result = ApplyResult()
        now_ms = int(time.time() * 1000)
        try:
            with self.db.transaction() as conn:
                if self._next_seq is None:
                    self._load_counters(conn)
                old_max_key = self._max_key
                run: list[Post] = []
                engaged: list[Engage] = []
                quarantined: list[Quarantine] = []
                for ev in events:
                    if isinstance(ev, Upsert):
                        run.append(ev.post)
                        continue
                    # Counts and quarantine records touch no post row: they must not
                    # cut a run of upserts (a like between every post of a Jetstream
                    # batch made each post its own run of statements).
                    if isinstance(ev, Engage):
                        engaged.append(ev)
                        continue
                    if isinstance(ev, Quarantine):
                        quarantined.append(ev)
                        continue
                    if run:
                        changed, new_after = self._write_rows(conn, run, now_ms)
                        self._index_new(conn, new_after)
                        result.upserted += changed
                        run = []
                    if isinstance(ev, Delete):
                        cur = conn.execute("DELETE FROM posts WHERE id = ?", (ev.id,))
                        result.deleted += cur.rowcount
                    elif isinstance(ev, Identity):
                        conn.execute(
                            "UPDATE posts SET author = ? WHERE author_id = ? AND author != ?",
                            (ev.handle, ev.did, ev.handle),
                        )
                        self._identity(conn, ev, now_ms)
                        result.identities += 1
                if quarantined:
                    conn.executemany(
                        "INSERT INTO quarantine(source, raw, reason, at_ms, digest) "
                        "VALUES (?,?,?,?,?) ON CONFLICT(digest) DO NOTHING",
                        [(q.source, q.raw, q.reason, now_ms, q.digest()) for q in quarantined],
                    )
                    result.quarantined += len(quarantined)
                new_after = None
                if run:
                    changed, new_after = self._write_rows(conn, run, now_ms)
                    result.upserted += changed
                if self._max_key > old_max_key:
                    conn.execute(
                        "INSERT OR REPLACE INTO time_marks(key, max_created_ms) VALUES (?, ?)",
                        (self._max_key, self._running_max_ms),
                    )
                if engaged:
                    self._engage(conn, engaged)
                if vectors:
                    self._write_vectors(conn, vectors)
                conn.execute(
                    "INSERT INTO cursors(stream_key, cursor, updated_ms) VALUES (?,?,?) "
                    "ON CONFLICT(stream_key) DO UPDATE SET cursor=excluded.cursor, "
                    "updated_ms=excluded.updated_ms",
                    (stream_key, cursor, now_ms),
                )
                if staged is not None:
                    staged()  # what is left runs in SQLite without the GIL
                # The last run's new rows join the lexical index last: nothing after
                # them in this batch can edit or delete them before they are in it.
                self._index_new(conn, new_after)
        except BaseException:
            self._next_seq = None  # rolled back: re-read the counters from the file
            raise
        return result

    def refused_record(self, exc: BaseException) -> bool:
        """Data errors: a value SQLite will not bind or store (``OperationalError``,
        a locked or full database, is the engine's, and is not one)."""
        return super().refused_record(exc) or isinstance(
            exc, sqlite3.DataError | sqlite3.IntegrityError | sqlite3.InterfaceError
            | sqlite3.ProgrammingError
        )

    def _write_rows(self, conn: Any, posts: list[Post], now_ms: int) -> tuple[int, int | None]:
        """executemany the upserts: (rows inserted or changed, key after which rows are new).

        Unchanged replays are no-ops (the upsert's WHERE), so they neither
        count nor touch the FTS index. New rows get keys above every existing
        key, which keeps the time marks valid; an edit of an older row that
        moves it later in time would not, so then the marks from that row on
        are dropped (future `since` scans just start earlier). The new rows
        are not in the lexical index until :meth:`_index_new` (edits are:
        the ``posts_au`` trigger).
        """
        # One row per id, its last version, at its first position: a row inserted
        # and edited in one statement would reach the edit trigger before the
        # index has it (new rows are indexed after the statement).
        posts = list({p.id: p for p in posts}.values())
        known = self._known_authors(conn, posts)
        resolve_handles(posts, known)
        # One pass, nothing called per post that can be inlined: this loop runs
        # for every post ingested.
        rows = [
            (
                p.id, p.source, p.author, p.author_id or p.author, p.author_name, p.text,
                int(p.created_at.timestamp() * 1000), now_ms, p.url, p.lang,
                " ".join(p.hashtags) if p.hashtags else "",
                " ".join(p.mentions) if p.mentions else "", p.reply_to, p.quote_of,
                raw if (raw := p.raw) is None or type(raw) is str else _raw_text(raw),
            )
            for p in posts
        ]
        newest = max(self._running_max_ms, *(r[6] for r in rows))
        before = conn.execute("SELECT coalesce(max(key), 0) FROM posts").fetchone()[0]
        # rowcount sums sqlite3_changes() per row: direct changes only, not triggers'.
        changed = max(0, conn.executemany(_INSERT_NEW, rows).rowcount)
        if changed < len(rows):
            # Some ids were stored already (or a row broke a constraint, which the
            # upsert raises): edits update them, the rows just inserted are unchanged.
            changed += max(0, conn.executemany(_UPSERT, rows).rowcount)
        max_key = conn.execute("SELECT coalesce(max(key), 0) FROM posts").fetchone()[0]
        inserted = max(0, max_key - before)
        if changed > inserted:  # some rows were edits of existing posts
            marks = ",".join("?" * len(posts))
            row = conn.execute(
                f"SELECT min(key) FROM posts WHERE key <= ? AND id IN ({marks})",
                [before, *(p.id for p in posts)],
            ).fetchone()
            if row[0] is not None:
                conn.execute("DELETE FROM time_marks WHERE key >= ?", (row[0],))
        self._max_key = max_key
        self._running_max_ms = newest
        counted = [(p.likes, p.reposts, p.replies, p.quotes, p.id) for p in posts
                   if p.likes is not None or p.reposts is not None or p.replies is not None
                   or p.quotes is not None]
        if counted:  # reported counts replace stored ones, edited text or not
            conn.executemany(_SET_COUNTS, counted)
        if inserted:
            new = posts if inserted == len(posts) else self._new_posts(conn, posts, before)
            _count_thread(conn, new)
        update = directory_update(posts, known, to_ms)
        if update.new:
            conn.executemany(_AUTHOR_INSERT, update.new)
        if update.changed:
            conn.executemany("UPDATE authors SET handle = ?, display_name = ? WHERE id = ?",
                             update.changed)
        self._rewrite_words(conn, update.words)
        return changed, before if inserted else None

    @staticmethod
    def _new_posts(conn: Any, posts: list[Post], before: int) -> list[Post]:
        """Which of a run's posts were inserted (some were replays or edits)."""
        fresh = {r[0] for r in conn.execute("SELECT id FROM posts WHERE key > ?", (before,))}
        return [p for p in posts if p.id in fresh]

    # -- the author directory ------------------------------------------------

    @staticmethod
    def _known_authors(conn: Any, posts: Sequence[Post]) -> dict[str, tuple[str, str | None]]:
        ids = list({p.author_id or p.author for p in posts})
        known: dict[str, tuple[str, str | None]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for aid, handle, name in conn.execute(
                f"SELECT id, handle, display_name FROM authors WHERE id IN ({marks})", chunk
            ):
                known[aid] = (handle, name)
        return known

    @staticmethod
    def _rewrite_words(conn: Any, rewrites: list[tuple[str, list[str]]]) -> None:
        if not rewrites:
            return
        conn.executemany("DELETE FROM author_words WHERE author_id = ?",
                         [(aid,) for aid, _ in rewrites])
        conn.executemany("INSERT OR IGNORE INTO author_words(word, author_id) VALUES (?, ?)",
                         [(w, aid) for aid, ws in rewrites for w in ws])

    def _identity(self, conn: Any, ev: Identity, now_ms: int) -> None:
        """A handle (and maybe a display name) for an account, seen posting or not."""
        row = conn.execute(
            "SELECT handle, display_name FROM authors WHERE id = ?", (ev.did,)
        ).fetchone()
        name = ev.display_name if ev.display_name is not None else (row[1] if row else None)
        if row is None:
            conn.execute(
                "INSERT INTO authors (id, source, handle, display_name, first_ms, "
                "looked_up_ms) VALUES (?, 'bluesky', ?, ?, ?, ?)",
                (ev.did, ev.handle, name, now_ms, now_ms),
            )
        else:
            conn.execute(
                "UPDATE authors SET handle = ?, display_name = ?, looked_up_ms = ? WHERE id = ?",
                (ev.handle, name, now_ms, ev.did),
            )
        if row is None or (row[0], row[1]) != (ev.handle, name):
            self._rewrite_words(conn, [(ev.did, name_words(ev.handle, name))])

    @staticmethod
    def _engage(conn: Any, events: list[Engage]) -> None:
        totals: dict[str, list[int]] = {}
        for ev in events:
            t = totals.setdefault(ev.post_id, [0, 0])
            t[0] += ev.likes
            t[1] += ev.reposts
        conn.executemany(_ENGAGE, [(lk, rp, pid) for pid, (lk, rp) in totals.items()])

    @staticmethod
    def _index_new(conn: Any, after: int | None) -> None:
        """New rows (keys above ``after``) join the lexical index in one statement.

        Edits and deletes reach it through triggers (see migration m003); a
        trigger per insert would make FTS5 flush a segment per post.
        """
        if after is not None:
            conn.execute(
                "INSERT INTO posts_fts(rowid, text, author, hashtags) "
                "SELECT key, text, author, hashtags FROM posts WHERE key > ?",
                (after,),
            )

    def _load_counters(self, conn: Any) -> None:
        row = conn.execute("SELECT max(max_created_ms) FROM time_marks").fetchone()
        self._running_max_ms = row[0] or 0
        self._max_key = conn.execute("SELECT coalesce(max(key), 0) FROM posts").fetchone()[0]
        row = conn.execute("SELECT max(seq) FROM embeddings").fetchone()
        stored = conn.execute("SELECT v FROM meta WHERE k = 'vector_seq'").fetchone()
        self._next_seq = max(row[0] or 0, int(stored[0]) if stored else 0) + 1

    def _write_vectors(self, conn: Any, vectors: Mapping[str, np.ndarray]) -> None:
        ids = list(vectors)
        found: dict[str, tuple[int, int]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for pid, key, created_ms in conn.execute(
                f"SELECT id, key, created_ms FROM posts WHERE id IN ({marks})", chunk
            ):
                found[pid] = (key, created_ms)
        ids = [pid for pid in ids if pid in found]
        if not ids:
            return
        q, scales = quantize(np.stack([vectors[pid] for pid in ids]))
        assert self._next_seq is not None
        seq = self._next_seq
        # Rows from whole arrays (one tobytes, one tolist), not per-row numpy calls.
        width = q.shape[1]
        blob = q.tobytes()
        keys = [found[pid] for pid in ids]
        rows = [
            (key, seq + i, created_ms, scale, blob[i * width : (i + 1) * width])
            for i, ((key, created_ms), scale) in enumerate(zip(keys, scales.tolist(),
                                                               strict=True))
        ]
        self._next_seq = seq + len(rows)
        conn.executemany(
            "INSERT OR REPLACE INTO embeddings(post_key, seq, created_ms, scale, vec) "
            "VALUES (?,?,?,?,?)",
            rows,
        )
        conn.execute(
            "INSERT OR REPLACE INTO meta(k, v) VALUES ('vector_seq', ?)", (str(self._next_seq),)
        )

    # -- reads --------------------------------------------------------------

    def get_post(self, post_id: str) -> Post | None:
        row = self.db.reader().execute(
            DIALECT.sql("SELECT {post_cols} FROM {posts} WHERE p.id = ?"), (post_id,)
        ).fetchone()
        return self._post(row) if row else None

    def posts_by_keys(
        self, keys: Sequence[int], filters: SearchFilters | None = None
    ) -> dict[int, Post]:
        if not keys:
            return {}
        where, params = filter_sql(filters or SearchFilters(), DIALECT)
        out: dict[int, Post] = {}
        conn = self.db.reader()
        for i in range(0, len(keys), 500):
            chunk = [int(k) for k in keys[i : i + 500]]
            marks = ",".join("?" * len(chunk))
            sql = DIALECT.sql("SELECT {post_cols} FROM {posts} WHERE p.key IN ") + f"({marks})"
            if where:
                sql += " AND " + " AND ".join(where)
            for row in conn.execute(sql, [*chunk, *params]):
                out[row[0]] = self._post(row)
        return out

    def lexical(self, query: str, filters: SearchFilters, limit: int) -> list[Candidate]:
        """BM25 over a bounded, newest-first candidate set (Earlybird's trade).

        Scoring every posting of every query word costs O(matches): tens of
        milliseconds for common words at a million posts. Instead, take the
        newest ``limit`` matches of each word on its own and of all the words
        together (FTS5 walks a doclist in descending rowid and stops at the
        LIMIT; the time-mark lower bound skips everything older than
        ``since``), and score only those with BM25 from cached statistics
        (:mod:`townsquare.store.sqlite.bm25`; FTS5's own ``bm25()`` would
        count each word's whole doclist per query). A post's words are the
        ones whose list found it, or all of them if the all-words query did.
        A rare word keeps its own slots and is not crowded out by a common
        one; what is lost is an old match of a common word beyond its newest
        ``limit``, which the recency factor ranks low anyway.
        """
        tokens = query_tokens(query)[:MAX_LEXICAL_TOKENS]
        if not tokens:
            return []
        where, params = filter_sql(filters, DIALECT)
        conn = self.db.reader()
        lower = self._key_lower_bound(conn, filters.since)
        body = (
            " FROM posts_fts JOIN posts p ON p.key = posts_fts.rowid "
            "WHERE posts_fts MATCH ? AND posts_fts.rowid >= ?"
        )
        if where:
            body += " AND " + " AND ".join(where)
        body += " ORDER BY posts_fts.rowid DESC LIMIT ?"
        # One marker per matched word and column: term frequencies, read for
        # the returned rows only (FTS5 stops at the LIMIT).
        per_word = (
            "SELECT posts_fts.rowid, highlight(posts_fts, 0, char(1), ''), "
            "highlight(posts_fts, 1, char(1), ''), highlight(posts_fts, 2, char(1), '')" + body
        )
        quoted = [quote_token(t) for t in tokens]
        # post key -> query word index -> weighted term frequency
        held: dict[int, dict[int, float]] = {}
        for i, match in enumerate(quoted):
            for key, *columns in conn.execute(per_word, [match, lower, *params, limit]):
                held.setdefault(key, {})[i] = bm25.weighted_tf(columns)
        if len(quoted) > 1:
            all_words = "SELECT posts_fts.rowid" + body
            for (key,) in conn.execute(all_words, [" AND ".join(quoted), lower, *params, limit]):
                words = held.setdefault(key, {})
                for i in range(len(quoted)):
                    words.setdefault(i, 1.0)
        if not held:
            return []
        max_key = conn.execute("SELECT coalesce(max(rowid), 0) FROM posts").fetchone()[0]
        idfs = self._terms.idf(conn, quoted, max_key)
        avg = self._terms.average_length(conn)
        lengths = self._terms.lengths(conn, held)
        scored = [
            (key, bm25.score(idfs, words, lengths.get(key, avg), avg))
            for key, words in held.items()
        ]
        scored.sort(key=lambda kv: (kv[1], kv[0]), reverse=True)
        return [Candidate(key=k, score=v) for k, v in scored[:limit]]

    def _key_lower_bound(self, conn: Any, since: datetime | None) -> int:
        if since is None:
            return 0
        row = conn.execute(
            "SELECT max(key) FROM time_marks WHERE max_created_ms < ?", (to_ms(since),)
        ).fetchone()
        return (row[0] or 0) + 1

    def _reading(self) -> AbstractContextManager[sqlite3.Connection]:
        return nullcontext(self.db.reader())

    def _writing(self) -> AbstractContextManager[sqlite3.Connection]:
        return self.db.transaction()

    def _engine_stats(self, conn: Any) -> dict[str, Any]:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        return {"store": f"sqlite:///{self.path}", "file_bytes": pages * page_size}

    def integrity_check(self) -> str:
        return str(self.db.reader().execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self.db.close()


@STORES.register("sqlite")
def _open(path: Path | str, read_only: bool = False) -> SQLiteStore:
    return SQLiteStore(path, read_only=read_only)
