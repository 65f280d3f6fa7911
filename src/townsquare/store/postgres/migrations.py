"""Numbered schema migrations for the PostgreSQL store, recorded in ``_migrations``.

The same habit as the SQLite store: each migration is a plain function
``mNNN_what(conn, schema)`` applied once, in order, in its own transaction
(PostgreSQL's DDL is transactional, so a failed migration leaves nothing
behind). Several processes may open a fresh schema at once (two index
workers, a replica): an advisory lock serializes them and the loser finds
the work done. Never edit a released migration: add the next one.

Layout, and why:

- ``posts`` is partitioned by day on ``created_at`` (see
  :mod:`~townsquare.store.postgres.partitions`): a ``since`` filter prunes
  whole partitions and retention drops them instead of deleting rows. A
  partitioned table's unique indexes must include the partition key, so
  ``posts`` is keyed by ``(key, created_at)`` and the global uniqueness of the
  post id lives in ``post_ids(id → key, created_at)``, which also says which
  partition holds a post (an edit may move it: ``created_at`` can change).
- ``embeddings.seq`` comes from a sequence, and writers take an advisory lock
  from drawing numbers until they commit, so sequence numbers become visible
  in order: a replica following ``vectors_since`` never skips a row that
  commits late (see ``PostgresStore.apply``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from townsquare.store.postgres import textsearch

Migration = Callable[[psycopg.Connection, str], None]


def lock_key(schema: str, purpose: str) -> int:
    """A stable signed 64-bit advisory-lock key for (schema, purpose)."""
    digest = hashlib.blake2b(f"{schema}\0{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


#: Database-wide: creating schemas and extensions races across schemas too.
MIGRATION_LOCK = lock_key("", "townsquare-migrations")


@dataclass(slots=True)
class SchemaInfo:
    schema: str
    #: ``schema.dictionary`` of the unaccent dictionary in use, or None.
    unaccent: str | None
    applied: list[str] = field(default_factory=list)


def _find_unaccent(conn: psycopg.Connection) -> tuple[str, str] | None:
    """The unaccent dictionary, installing the extension into ``public`` if we may."""
    query = (
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'unaccent'"
    )
    row = conn.execute(query).fetchone()
    if row is None:
        if conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'unaccent'"
        ).fetchone() is None:
            return None
        try:
            # Never in the store's own schema: dropping one store would then
            # drop the dictionary every other store's configurations use.
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS unaccent SCHEMA public")
        except psycopg.Error:
            return None  # not allowed here: plain configurations
        row = conn.execute(query).fetchone()
    return (row[0], "unaccent") if row else None


def m001_posts(conn: psycopg.Connection, schema: str) -> None:
    unaccent = _find_unaccent(conn)
    for stmt in textsearch.create_configs_sql(schema, unaccent):
        conn.execute(stmt)
    conn.execute(
        "INSERT INTO meta(k, v) VALUES ('unaccent', %s)",
        (".".join(unaccent) if unaccent else "",),
    )
    conn.execute(
        sql.SQL(
            """
            CREATE SEQUENCE post_key_seq;
            CREATE TABLE post_ids (
                id text PRIMARY KEY,
                key bigint NOT NULL UNIQUE,
                created_at timestamptz NOT NULL
            );
            CREATE INDEX post_ids_created ON post_ids (created_at);
            CREATE TABLE posts (
                key bigint NOT NULL,
                id text NOT NULL,
                source text NOT NULL,
                author text NOT NULL,
                author_id text NOT NULL,
                author_name text,
                text text NOT NULL,
                created_at timestamptz NOT NULL,
                indexed_at timestamptz NOT NULL,
                url text,
                lang text,
                hashtags text NOT NULL DEFAULT '',
                mentions text NOT NULL DEFAULT '',
                reply_to text,
                quote_of text,
                raw text,
                tsv tsvector GENERATED ALWAYS AS ({tsv}) STORED,
                PRIMARY KEY (key, created_at)
            ) PARTITION BY RANGE (created_at);
            CREATE INDEX posts_created ON posts (created_at);
            CREATE INDEX posts_author_id ON posts (author_id);
            CREATE INDEX posts_tsv ON posts USING gin (tsv);
            CREATE TABLE posts_default PARTITION OF posts DEFAULT;
            CREATE SEQUENCE embedding_seq;
            CREATE TABLE embeddings (
                post_key bigint PRIMARY KEY REFERENCES post_ids(key) ON DELETE CASCADE,
                seq bigint NOT NULL UNIQUE DEFAULT nextval('embedding_seq'),
                created_ms bigint NOT NULL,
                scale real NOT NULL,
                vec bytea NOT NULL
            );
            CREATE TABLE cursors (
                stream_key text PRIMARY KEY,
                cursor text,
                updated_at timestamptz NOT NULL
            );
            CREATE TABLE quarantine (
                id bigserial PRIMARY KEY,
                source text NOT NULL,
                raw bytea NOT NULL,
                reason text NOT NULL,
                at timestamptz NOT NULL
            );
            """
        ).format(tsv=textsearch.tsv_expression(schema))
    )


def m002_accounts(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(
        """
        CREATE TABLE api_keys (
            id bigserial PRIMARY KEY,
            name text NOT NULL,
            tier text NOT NULL,
            prefix text NOT NULL,
            key_hash text NOT NULL,
            created_at timestamptz NOT NULL,
            revoked_at timestamptz
        );
        CREATE INDEX api_keys_prefix ON api_keys (prefix);
        CREATE TABLE usage (
            id bigserial PRIMARY KEY,
            key_id bigint,
            model text NOT NULL,
            route text NOT NULL,
            prompt_tokens integer NOT NULL,
            completion_tokens integer NOT NULL,
            at timestamptz NOT NULL
        );
        CREATE INDEX usage_key_at ON usage (key_id, at);
        CREATE TABLE conversations (
            id text PRIMARY KEY,
            owner text,
            mode text NOT NULL,
            created_at timestamptz NOT NULL
        );
        CREATE TABLE messages (
            id bigserial PRIMARY KEY,
            conversation_id text NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role text NOT NULL,
            content text NOT NULL,
            meta jsonb NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL
        );
        CREATE INDEX messages_conv ON messages (conversation_id, id);
        """
    )


def m003_people_threads_engagement(conn: psycopg.Connection, schema: str) -> None:
    """The author directory, engagement counts, thread indexes (see the SQLite twin)."""
    conn.execute(
        """
        ALTER TABLE posts ADD COLUMN likes integer, ADD COLUMN reposts integer,
            ADD COLUMN replies integer, ADD COLUMN quotes integer;
        CREATE INDEX posts_reply_to ON posts (reply_to) WHERE reply_to IS NOT NULL;
        CREATE INDEX posts_quote_of ON posts (quote_of) WHERE quote_of IS NOT NULL;
        CREATE TABLE authors (
            id text PRIMARY KEY,
            source text NOT NULL,
            handle text NOT NULL,
            display_name text,
            first_at timestamptz NOT NULL,
            looked_up_at timestamptz
        );
        CREATE INDEX authors_handle ON authors (lower(handle));
        CREATE INDEX authors_pending ON authors (source, first_at) WHERE handle = id;
        CREATE TABLE author_words (
            word text NOT NULL,
            author_id text NOT NULL,
            PRIMARY KEY (word, author_id)
        );
        CREATE INDEX author_words_author ON author_words (author_id);
        INSERT INTO authors (id, source, handle, display_name, first_at)
        SELECT author_id, min(source), max(author), max(author_name), min(created_at)
        FROM posts GROUP BY author_id;
        """
    )
    from townsquare.store.people import name_words

    rows = conn.execute("SELECT id, handle, display_name FROM authors").fetchall()
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO author_words (word, author_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [(w, aid) for aid, handle, name in rows for w in name_words(handle, name)],
        )


def m004_conversation_titles(conn: psycopg.Connection, schema: str) -> None:
    """Conversations can be renamed; the list orders them by their newest message.

    (SQLite's twin is m005: SQLite has one migration more.)
    """
    conn.execute(
        """
        ALTER TABLE conversations ADD COLUMN title text;
        CREATE INDEX conversations_owner ON conversations (owner, created_at);
        """
    )


def m005_quarantine_digest(conn: psycopg.Connection, schema: str) -> None:
    """One quarantine row per distinct bad input (``Quarantine.digest``), as in
    the SQLite store; older rows have no digest and stay as they are."""
    conn.execute(
        """
        ALTER TABLE quarantine ADD COLUMN digest bytea;
        CREATE UNIQUE INDEX quarantine_digest ON quarantine (digest);
        """
    )


def m006_watches(conn: psycopg.Connection, schema: str) -> None:
    """Standing queries live in the store, shared by every replica (the SQLite twin is m007).

    ``spec`` is the watch's definition as :mod:`townsquare.watches` writes it;
    ``watch_claims`` are the items reported for a watch (``post:<id>``,
    ``story:<id>``): the first claim wins, so a webhook goes out once.
    """
    conn.execute(
        """
        CREATE TABLE watches (
            id text PRIMARY KEY,
            owner bigint NOT NULL,
            created_at timestamptz NOT NULL,
            secret text NOT NULL,
            spec jsonb NOT NULL
        );
        CREATE INDEX watches_owner ON watches (owner, created_at);
        CREATE TABLE watch_claims (
            watch_id text NOT NULL,
            item text NOT NULL,
            at timestamptz NOT NULL,
            PRIMARY KEY (watch_id, item)
        );
        CREATE INDEX watch_claims_at ON watch_claims (at);
        """
    )


MIGRATIONS: list[Migration] = [
    m001_posts, m002_accounts, m003_people_threads_engagement, m004_conversation_titles,
    m005_quarantine_digest, m006_watches,
]


def _applied(conn: psycopg.Connection, schema: str) -> set[str]:
    table = f"{sql.Identifier(schema).as_string(conn)}._migrations"
    if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
        return set()
    table_id = sql.Identifier(schema, "_migrations")
    rows = conn.execute(sql.SQL("SELECT name FROM {}").format(table_id))
    return {r[0] for r in rows}


def migrate(conn: psycopg.Connection, schema: str) -> SchemaInfo:
    """Apply pending migrations to ``schema`` (created if missing); ``conn`` is autocommit."""
    applied: list[str] = []
    if not {fn.__name__ for fn in MIGRATIONS} <= _applied(conn, schema):
        for fn in MIGRATIONS:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(schema)))
                conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS _migrations "
                    "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS meta (k text PRIMARY KEY, v text NOT NULL)"
                )
                if fn.__name__ in _applied(conn, schema):
                    continue
                fn(conn, schema)
                conn.execute("INSERT INTO _migrations(name) VALUES (%s)", (fn.__name__,))
                applied.append(fn.__name__)
    row = conn.execute(
        sql.SQL("SELECT v FROM {} WHERE k = 'unaccent'").format(sql.Identifier(schema, "meta"))
    ).fetchone()
    return SchemaInfo(schema=schema, unaccent=(row[0] or None) if row else None, applied=applied)
