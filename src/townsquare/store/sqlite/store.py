"""The embedded store: posts, FTS5 index, vectors and cursors in one SQLite file."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from townsquare.index.quantize import quantize
from townsquare.model import Delete, Engage, Event, Identity, Post, Quarantine, Upsert
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
from townsquare.store.people import (
    Author,
    directory_update,
    name_words,
    resolve_handles,
)
from townsquare.store.sqlite import bm25
from townsquare.store.sqlite.accounts import AccountsMixin
from townsquare.store.sqlite.database import Database
from townsquare.store.sqlite.fts import query_tokens, quote_token
from townsquare.textfold import fold

#: Words of a query that get their own newest-first candidate slots.
MAX_LEXICAL_TOKENS = 8

_POST_COLS = (
    "p.key, p.id, p.source, p.author, p.author_id, p.author_name, p.text, p.created_ms, "
    "p.indexed_ms, p.url, p.lang, p.hashtags, p.mentions, p.reply_to, p.quote_of, "
    "e.likes, e.reposts, e.replies, e.quotes"
)
#: Posts with their engagement counts (a narrow table: a like rewrites 40 bytes, not a post).
_POSTS = "posts p LEFT JOIN engagement e ON e.post_key = p.key"

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

#: An author row, with its last post time and post count read from ``posts``.
_AUTHOR_COLS = (
    "a.id, a.source, a.handle, a.display_name, a.first_ms, "
    "(SELECT max(created_ms) FROM posts WHERE author_id = a.id), "
    "(SELECT count(*) FROM posts WHERE author_id = a.id)"
)


def to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _raw_text(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        return raw
    return json.dumps(raw, ensure_ascii=False, separators=(",", ":"), default=str)


def row_to_post(row: Sequence[Any]) -> Post:
    return Post(
        id=row[1],
        source=row[2],
        author=row[3],
        author_id=row[4],
        author_name=row[5],
        text=row[6],
        created_at=from_ms(row[7]),
        indexed_at=from_ms(row[8]),
        url=row[9],
        lang=row[10],
        hashtags=row[11].split() if row[11] else [],
        mentions=row[12].split() if row[12] else [],
        reply_to=row[13],
        quote_of=row[14],
        likes=row[15],
        reposts=row[16],
        replies=row[17],
        quotes=row[18],
    )


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


def row_to_author(row: Sequence[Any]) -> Author:
    return Author(id=row[0], source=row[1], handle=row[2], display_name=row[3],
                  first_seen=from_ms(row[4]), last_seen=from_ms(row[5] or row[4]),
                  posts=row[6] or 0)


class SQLiteStore(AccountsMixin, Store):
    """SQLite in WAL mode; see :mod:`townsquare.store.sqlite.database` for the threading."""

    kind = "sqlite"

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

    def set_embedder_name(self, name: str, dim: int) -> None:
        """Record which embedder writes vectors; refuse to mix two."""
        current = self.embedder_name()
        if current and current != f"{name}/{dim}":
            raise ValueError(
                f"this store holds vectors from embedder {current!r}, not {name}/{dim}; "
                "use the same --embedder or a fresh store"
            )
        if not current:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO meta(k, v) VALUES ('embedder', ?)", (f"{name}/{dim}",)
                )

    def get_cursor(self, stream_key: str) -> str | None:
        row = self.db.reader().execute(
            "SELECT cursor FROM cursors WHERE stream_key = ?", (stream_key,)
        ).fetchone()
        return row[0] if row else None

    def cursors(self) -> dict[str, str]:
        return dict(self.db.reader().execute("SELECT stream_key, cursor FROM cursors"))

    # -- reads --------------------------------------------------------------

    def get_post(self, post_id: str) -> Post | None:
        row = self.db.reader().execute(
            f"SELECT {_POST_COLS} FROM {_POSTS} WHERE p.id = ?", (post_id,)
        ).fetchone()
        return row_to_post(row) if row else None

    def posts_by_keys(
        self, keys: Sequence[int], filters: SearchFilters | None = None
    ) -> dict[int, Post]:
        if not keys:
            return {}
        where, params = _filter_sql(filters or SearchFilters())
        out: dict[int, Post] = {}
        conn = self.db.reader()
        for i in range(0, len(keys), 500):
            chunk = [int(k) for k in keys[i : i + 500]]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {_POST_COLS} FROM {_POSTS} WHERE p.key IN ({marks})"
            if where:
                sql += " AND " + " AND ".join(where)
            for row in conn.execute(sql, [*chunk, *params]):
                out[row[0]] = row_to_post(row)
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
        where, params = _filter_sql(filters)
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

    def recent(self, filters: SearchFilters, limit: int) -> list[Candidate]:
        where, params = _filter_sql(filters)
        sql = "SELECT key, created_ms FROM posts p"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_ms DESC LIMIT ?"
        rows = self.db.reader().execute(sql, [*params, limit]).fetchall()
        return [Candidate(key=r[0], score=r[1] / 1000.0) for r in rows]

    def last_key(self) -> int:
        row = self.db.reader().execute("SELECT coalesce(max(key), 0) FROM posts").fetchone()
        return int(row[0])

    def iter_posts(
        self, since: datetime | None = None, after_key: int = 0, batch: int = 1000
    ) -> Iterator[tuple[int, Post]]:
        conn = self.db.reader()
        last = after_key
        while True:
            sql = f"SELECT {_POST_COLS} FROM {_POSTS} WHERE p.key > ?"
            params: list[Any] = [last]
            if since is not None:
                sql += " AND p.created_ms >= ?"
                params.append(to_ms(since))
            rows = conn.execute(sql + " ORDER BY p.key LIMIT ?", [*params, batch]).fetchall()
            if not rows:
                return
            for row in rows:
                yield row[0], row_to_post(row)
            last = rows[-1][0]

    def vectors_since(self, seq: int, limit: int = 100_000) -> StoredVectors:
        rows = self.db.reader().execute(
            "SELECT seq, post_key, created_ms, scale, vec FROM embeddings WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
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
        row = self.db.reader().execute("SELECT v FROM meta WHERE k = 'embedder'").fetchone()
        return row[0] if row else None

    def stats(self) -> dict[str, Any]:
        conn = self.db.reader()
        sources = {
            src: {
                "posts": n,
                "newest_created_at": from_ms(newest),
                "newest_indexed_at": from_ms(ix),
            }
            for src, n, newest, ix in conn.execute(
                "SELECT source, count(*), max(created_ms), max(indexed_ms) FROM posts "
                "GROUP BY source ORDER BY source"
            )
        }
        quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        vectors = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        return {
            "store": f"sqlite:///{self.path}",
            "posts": sum(s["posts"] for s in sources.values()),
            "sources": sources,
            "quarantined": quarantined,
            "vectors": vectors,
            "embedder": self.embedder_name(),
            "file_bytes": pages * page_size,
        }

    def quarantined(self, limit: int = 50) -> list[QuarantineRecord]:
        rows = self.db.reader().execute(
            "SELECT id, source, raw, reason, at_ms FROM quarantine ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [QuarantineRecord(r[0], r[1], bytes(r[2]), r[3], from_ms(r[4])) for r in rows]

    # -- people and threads -------------------------------------------------

    def get_author(self, key: str) -> Author | None:
        conn = self.db.reader()
        row = conn.execute(
            f"SELECT {_AUTHOR_COLS} FROM authors a WHERE a.id = ?", (key,)
        ).fetchone()
        if row is None:
            row = conn.execute(
                f"SELECT {_AUTHOR_COLS} FROM authors a WHERE a.handle = ? COLLATE NOCASE "
                "ORDER BY a.first_ms DESC LIMIT 1", (key.lstrip("@"),)
            ).fetchone()
        return row_to_author(row) if row else None

    def find_authors(self, words: Sequence[str], limit: int = 20) -> list[tuple[Author, int]]:
        folded = list(dict.fromkeys(fold(w) for w in words if w))[:32]
        if not folded:
            return []
        marks = ",".join("?" * len(folded))
        # The best-matched few hundred, then their post counts (read from posts) rank them.
        rows = self.db.reader().execute(
            f"SELECT {_AUTHOR_COLS}, w.n FROM (SELECT author_id, count(*) AS n FROM author_words "
            f"WHERE word IN ({marks}) GROUP BY author_id ORDER BY n DESC LIMIT 200) w "
            "JOIN authors a ON a.id = w.author_id",
            folded,
        ).fetchall()
        rows.sort(key=lambda r: (r[7], r[6] or 0, r[5] or 0), reverse=True)
        return [(row_to_author(r), r[7]) for r in rows[:limit]]

    def authors_to_look_up(self, source: str, limit: int, retry_before: datetime) -> list[str]:
        rows = self.db.reader().execute(
            "SELECT id FROM authors WHERE handle = id AND source = ? "
            "AND (looked_up_ms IS NULL OR looked_up_ms < ?) ORDER BY first_ms DESC LIMIT ?",
            (source, to_ms(retry_before), limit),
        ).fetchall()
        return [r[0] for r in rows]

    def mark_looked_up(self, ids: Sequence[str], at: datetime) -> None:
        if not ids:
            return
        with self.db.transaction() as conn:
            conn.executemany("UPDATE authors SET looked_up_ms = ? WHERE id = ?",
                             [(to_ms(at), i) for i in ids])

    def related_posts(self, post_id: str, kind: Related, limit: int = 50) -> list[Post]:
        col = {"replies": "reply_to", "quotes": "quote_of"}[kind]
        rows = self.db.reader().execute(
            f"SELECT {_POST_COLS} FROM {_POSTS} WHERE p.{col} = ? ORDER BY p.created_ms LIMIT ?",
            (post_id, limit),
        ).fetchall()
        return [row_to_post(r) for r in rows]

    def integrity_check(self) -> str:
        return str(self.db.reader().execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def _filter_sql(f: SearchFilters) -> tuple[list[str], list[Any]]:
    """SQL predicates (on alias ``p``) for the filters, and their parameters."""
    where: list[str] = []
    params: list[Any] = []
    if f.since is not None:
        where.append("p.created_ms >= ?")
        params.append(to_ms(f.since))
    if f.until is not None:
        where.append("p.created_ms <= ?")
        params.append(to_ms(f.until))
    if f.authors:
        names = [a.lower().lstrip("@") for a in f.authors]
        marks = ",".join("?" * len(names))
        where.append(f"(lower(p.author) IN ({marks}) OR lower(p.author_id) IN ({marks}))")
        params += names + names
    if f.exclude_authors:
        names = [a.lower().lstrip("@") for a in f.exclude_authors]
        marks = ",".join("?" * len(names))
        where.append(f"lower(p.author) NOT IN ({marks}) AND lower(p.author_id) NOT IN ({marks})")
        params += names + names
    if f.sources:
        where.append(f"p.source IN ({','.join('?' * len(f.sources))})")
        params += list(f.sources)
    if f.langs:
        where.append(f"p.lang IN ({','.join('?' * len(f.langs))})")
        params += list(f.langs)
    for tag in f.hashtags:
        where.append("(' ' || p.hashtags || ' ') LIKE ?")
        params.append(f"% {tag.lower().lstrip('#')} %")
    if f.domains or f.exclude_domains:
        host = "url_host(p.url)"
        for domains, neg in ((f.domains, ""), (f.exclude_domains, "NOT ")):
            if not domains:
                continue
            names = [normalize_domain(d) for d in domains]
            tests = [f"({host} = ? OR substr({host}, -?) = ?)" for _ in names]
            where.append(f"{neg}(" + " OR ".join(tests) + ")")
            for d in names:
                params += [d, len(d) + 1, "." + d]
    if f.min_likes is not None:
        where.append("coalesce((SELECT likes FROM engagement WHERE post_key = p.key), 0) >= ?")
        params.append(f.min_likes)
    if f.scopes:
        alternatives = []
        for scope in f.scopes:
            sub, sub_params = _filter_sql(scope)
            alternatives.append("(" + (" AND ".join(sub) or "1") + ")")
            params += sub_params
        where.append("(" + " OR ".join(alternatives) + ")")
    return where, params


@STORES.register("sqlite")
def _open(path: Path | str, read_only: bool = False) -> SQLiteStore:
    return SQLiteStore(path, read_only=read_only)
