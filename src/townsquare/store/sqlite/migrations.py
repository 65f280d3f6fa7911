"""Numbered schema migrations, recorded in ``_migrations`` (simonw/llm's habit).

Each migration is a plain function ``mNNN_what(conn)``; ``migrate`` applies
the ones not yet recorded, in order, each in its own transaction. Never edit
a released migration: add the next one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute statements one by one, inside the caller's transaction.

    (``executescript`` would COMMIT first, breaking migration atomicity.)
    """
    stmt = ""
    for line in script.splitlines(keepends=True):
        stmt += line
        if sqlite3.complete_statement(stmt):
            conn.execute(stmt)
            stmt = ""
    if stmt.strip():
        raise ValueError(f"incomplete SQL statement in migration: {stmt[:80]!r}")


def m001_posts(conn: sqlite3.Connection) -> None:
    run_script(conn,
        """
        CREATE TABLE posts (
            key INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            source TEXT NOT NULL,
            author TEXT NOT NULL,
            author_id TEXT NOT NULL,
            author_name TEXT,
            text TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            indexed_ms INTEGER NOT NULL,
            url TEXT,
            lang TEXT,
            hashtags TEXT NOT NULL DEFAULT '',
            mentions TEXT NOT NULL DEFAULT '',
            reply_to TEXT,
            quote_of TEXT,
            raw TEXT
        );
        CREATE INDEX posts_created ON posts(created_ms);
        CREATE INDEX posts_author_id ON posts(author_id);
        -- Lexical index: external-content FTS5 kept in step by triggers.
        -- remove_diacritics 2 folds accents so "ecole" finds "école"; porter
        -- stems English ("trains" finds "train").
        CREATE VIRTUAL TABLE posts_fts USING fts5(
            text, author, hashtags,
            content='posts', content_rowid='key',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER posts_ai AFTER INSERT ON posts BEGIN
            INSERT INTO posts_fts(rowid, text, author, hashtags)
            VALUES (new.key, new.text, new.author, new.hashtags);
        END;
        CREATE TRIGGER posts_ad AFTER DELETE ON posts BEGIN
            INSERT INTO posts_fts(posts_fts, rowid, text, author, hashtags)
            VALUES ('delete', old.key, old.text, old.author, old.hashtags);
            DELETE FROM embeddings WHERE post_key = old.key;
        END;
        CREATE TRIGGER posts_au AFTER UPDATE OF text, author, hashtags ON posts BEGIN
            INSERT INTO posts_fts(posts_fts, rowid, text, author, hashtags)
            VALUES ('delete', old.key, old.text, old.author, old.hashtags);
            INSERT INTO posts_fts(rowid, text, author, hashtags)
            VALUES (new.key, new.text, new.author, new.hashtags);
        END;
        -- (last key of a write batch, running max of created_ms up to it):
        -- turns a `since` bound into a lower bound on keys for the FTS scan.
        CREATE TABLE time_marks (
            key INTEGER PRIMARY KEY,
            max_created_ms INTEGER NOT NULL
        );
        CREATE INDEX time_marks_max ON time_marks(max_created_ms);
        CREATE TABLE embeddings (
            post_key INTEGER PRIMARY KEY,
            seq INTEGER NOT NULL UNIQUE,
            created_ms INTEGER NOT NULL,
            scale REAL NOT NULL,
            vec BLOB NOT NULL
        );
        CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
        CREATE TABLE cursors (
            stream_key TEXT PRIMARY KEY,
            cursor TEXT,
            updated_ms INTEGER NOT NULL
        );
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            raw BLOB NOT NULL,
            reason TEXT NOT NULL,
            at_ms INTEGER NOT NULL
        );
        """
    )


def m002_accounts(conn: sqlite3.Connection) -> None:
    run_script(conn,
        """
        CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            tier TEXT NOT NULL,
            prefix TEXT NOT NULL,
            key_hash TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            revoked_ms INTEGER
        );
        CREATE INDEX api_keys_prefix ON api_keys(prefix);
        CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            key_id INTEGER,
            model TEXT NOT NULL,
            route TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            at_ms INTEGER NOT NULL
        );
        CREATE INDEX usage_key_at ON usage(key_id, at_ms);
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            owner TEXT,
            mode TEXT NOT NULL,
            created_ms INTEGER NOT NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            created_ms INTEGER NOT NULL
        );
        CREATE INDEX messages_conv ON messages(conversation_id, id);
        """
    )


def m003_fts_insert_without_trigger(conn: sqlite3.Connection) -> None:
    """New rows reach the FTS index from one INSERT ... SELECT per batch (see
    ``SQLiteStore._index_new``), not from a per-row trigger: a virtual-table
    write inside a trigger opens a statement savepoint, and FTS5 flushes its
    pending terms at every savepoint, writing one tiny segment per post for
    the merger to fold (55 µs a post against 11). Edits and deletes keep
    their triggers: they are rare."""
    conn.execute("DROP TRIGGER IF EXISTS posts_ai")


def m004_people_threads_engagement(conn: sqlite3.Connection) -> None:
    """The author directory, engagement counts, and indexes to walk threads.

    ``authors`` is keyed by the stable account id (``posts.author_id``: a DID,
    an account URI, or the handle where a source has nothing steadier) and
    written only when an account is new or renamed (post counts and last
    activity are read from ``posts`` by its ``author_id`` index);
    ``author_words`` holds the folded words of each handle and display name,
    so a name in a question finds its accounts through an index.
    ``engagement`` holds counts per post key; absent or NULL where the source
    gives none (unknown is not zero).
    """
    run_script(conn,
        """
        -- Counts live beside posts, not in them: a like then rewrites a few bytes,
        -- not a post row with its raw record (3x faster on Jetstream's like volume).
        CREATE TABLE engagement (
            post_key INTEGER PRIMARY KEY,
            likes INTEGER,
            reposts INTEGER,
            replies INTEGER,
            quotes INTEGER
        );
        DROP TRIGGER posts_ad;
        CREATE TRIGGER posts_ad AFTER DELETE ON posts BEGIN
            INSERT INTO posts_fts(posts_fts, rowid, text, author, hashtags)
            VALUES ('delete', old.key, old.text, old.author, old.hashtags);
            DELETE FROM embeddings WHERE post_key = old.key;
            DELETE FROM engagement WHERE post_key = old.key;
        END;
        CREATE INDEX posts_reply_to ON posts(reply_to) WHERE reply_to IS NOT NULL;
        CREATE INDEX posts_quote_of ON posts(quote_of) WHERE quote_of IS NOT NULL;
        CREATE TABLE authors (
            id TEXT PRIMARY KEY,
            source TEXT NOT NULL,
            handle TEXT NOT NULL,
            display_name TEXT,
            first_ms INTEGER NOT NULL,
            looked_up_ms INTEGER
        );
        CREATE INDEX authors_handle ON authors(handle COLLATE NOCASE);
        CREATE INDEX authors_pending ON authors(source, first_ms) WHERE handle = id;
        CREATE TABLE author_words (
            word TEXT NOT NULL,
            author_id TEXT NOT NULL,
            PRIMARY KEY (word, author_id)
        ) WITHOUT ROWID;
        CREATE INDEX author_words_author ON author_words(author_id);
        INSERT INTO authors(id, source, handle, display_name, first_ms)
        SELECT author_id, min(source), max(author), max(author_name), min(created_ms)
        FROM posts GROUP BY author_id;
        """
    )
    from townsquare.store.people import name_words

    rows = conn.execute("SELECT id, handle, display_name FROM authors").fetchall()
    conn.executemany(
        "INSERT OR IGNORE INTO author_words(word, author_id) VALUES (?, ?)",
        [(w, aid) for aid, handle, name in rows for w in name_words(handle, name)],
    )


def m005_conversation_titles(conn: sqlite3.Connection) -> None:
    """Conversations can be renamed; the list orders them by their newest message."""
    run_script(
        conn,
        """
        ALTER TABLE conversations ADD COLUMN title TEXT;
        CREATE INDEX conversations_owner ON conversations(owner, created_ms);
        """,
    )


def m006_quarantine_digest(conn: sqlite3.Connection) -> None:
    """One quarantine row per distinct bad input (``Quarantine.digest``): the
    same bad line read again, under another path or after a rewind, is not
    listed twice. Older rows have no digest and stay as they are."""
    run_script(conn,
        """
        ALTER TABLE quarantine ADD COLUMN digest BLOB;
        CREATE UNIQUE INDEX quarantine_digest ON quarantine(digest);
        """
    )


def m007_watches(conn: sqlite3.Connection) -> None:
    """Standing queries live in the store, so every process on the file sees the same
    ones (they were ``<home>/watches.json``; the service imports that file once).

    ``spec`` is the watch's definition as :mod:`townsquare.watches` writes it
    (JSON); ``watch_claims`` are the items reported for a watch (``post:<id>``,
    ``story:<id>``): the first claim wins, so a webhook goes out once.
    """
    run_script(conn,
        """
        CREATE TABLE watches (
            id TEXT PRIMARY KEY,
            owner INTEGER NOT NULL,
            created_ms INTEGER NOT NULL,
            secret TEXT NOT NULL,
            spec TEXT NOT NULL
        );
        CREATE INDEX watches_owner ON watches(owner, created_ms);
        CREATE TABLE watch_claims (
            watch_id TEXT NOT NULL,
            item TEXT NOT NULL,
            at_ms INTEGER NOT NULL,
            PRIMARY KEY (watch_id, item)
        ) WITHOUT ROWID;
        CREATE INDEX watch_claims_at ON watch_claims(at_ms);
        """
    )


MIGRATIONS: list[Migration] = [
    m001_posts, m002_accounts, m003_fts_insert_without_trigger, m004_people_threads_engagement,
    m005_conversation_titles, m006_quarantine_digest, m007_watches,
]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations; return the names applied.

    Safe when several processes open a new file at once (``ingest`` and
    ``search`` started together): each migration re-checks ``_migrations``
    after taking the write lock, so a migration another process has just
    applied is skipped, never run twice.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_ms INTEGER)"
    )
    if pending(conn) == []:
        return []
    applied = []
    for fn in MIGRATIONS:
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute(
                "SELECT 1 FROM _migrations WHERE name = ?", (fn.__name__,)
            ).fetchone()
            if done is None:
                fn(conn)
                conn.execute(
                    "INSERT INTO _migrations(name, applied_ms) VALUES (?, ?)",
                    (fn.__name__, int(time.time() * 1000)),
                )
                applied.append(fn.__name__)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied


def pending(conn: sqlite3.Connection) -> list[str]:
    """Names of migrations this file still lacks (all of them for a new file)."""
    try:
        done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    except sqlite3.OperationalError:  # no _migrations table yet
        done = set()
    return [fn.__name__ for fn in MIGRATIONS if fn.__name__ not in done]
