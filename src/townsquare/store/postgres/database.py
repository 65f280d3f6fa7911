"""Connections to one PostgreSQL schema: a small pool, configured per connection.

The store URL is a libpq URL plus two parameters of ours, stripped before
connecting::

    postgresql://user@host:5432/db?schema=townsquare&pool_size=10

``schema`` (default ``townsquare``) keeps every table, sequence and text
search configuration of one store in one schema, so several stores (tests,
staging) share a database and ``DROP SCHEMA … CASCADE`` removes one whole;
each pooled connection sets ``search_path`` to it. ``pool_size`` bounds the
connections one process opens (readers and writers share them: PostgreSQL's
MVCC needs no single-writer discipline, unlike SQLite).

Every connection runs in UTC with JIT off: JIT compilation costs tens of
milliseconds on exactly the large full-text queries whose latency matters,
and never pays back on queries that return ten rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from townsquare.errors import BackendError
from townsquare.store.postgres.migrations import SchemaInfo, lock_key, migrate
from townsquare.store.postgres.writer import STAGING_DDL

__all__ = ["Database", "PostgresUnavailable", "Target", "lock_key", "parse_url"]

DEFAULT_SCHEMA = "townsquare"
DEFAULT_POOL_SIZE = 10


class PostgresUnavailable(BackendError, RuntimeError):
    """The server cannot be reached or refused us: say where and how to fix it."""

    status = 503
    error_type = "server_error"
    code = "store_unavailable"


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed store URL."""

    conninfo: str
    schema: str
    pool_size: int

    def redacted(self) -> str:
        """The URL for status pages: password removed, our parameters kept."""
        parts = urlsplit(self.conninfo)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            netloc = userinfo.split(":", 1)[0] + "@" + host
        query = [*parse_qsl(parts.query), ("schema", self.schema)]
        return urlunsplit(("postgresql", netloc, parts.path, urlencode(query), ""))


def parse_url(url: str) -> Target:
    """Split ``schema`` and ``pool_size`` off a ``postgresql://`` URL."""
    parts = urlsplit(url)
    schema, pool_size, rest = DEFAULT_SCHEMA, DEFAULT_POOL_SIZE, []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k == "schema":
            schema = v
        elif k == "pool_size":
            pool_size = max(1, int(v))
        else:
            rest.append((k, v))
    if not schema:
        raise ValueError("schema= must not be empty")
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    return Target(conninfo=conninfo, schema=schema, pool_size=pool_size)


class Database:
    """A pool of autocommit connections whose ``search_path`` is the store's schema."""

    def __init__(self, url: str, read_only: bool = False) -> None:
        self.target = parse_url(url)
        self.schema = self.target.schema
        self.read_only = read_only
        try:
            with psycopg.connect(self.target.conninfo, autocommit=True) as conn:
                # Even a read-only opener must find a migrated schema.
                self.info: SchemaInfo = migrate(conn, self.schema)
        except psycopg.OperationalError as exc:
            raise PostgresUnavailable(
                f"cannot open PostgreSQL store {self.target.redacted()}: {exc}".strip()
                + " (is the server running, and does the URL name an existing database?)"
            ) from exc
        self.pool: ConnectionPool[psycopg.Connection] = ConnectionPool(
            self.target.conninfo,
            min_size=1,
            max_size=self.target.pool_size,
            kwargs=self._connect_kwargs(),
            configure=self._configure,
            open=False,
            name=f"townsquare-{self.schema}",
        )
        self.pool.open(wait=True, timeout=30)

    def _connect_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {"autocommit": True}
        if "application_name=" not in self.target.conninfo:
            # pg_stat_activity then shows which store a backend serves.
            kwargs["application_name"] = f"townsquare:{self.schema}"[:63]
        return kwargs

    def _configure(self, conn: psycopg.Connection) -> None:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute("SET jit = off")
        if self.read_only:
            conn.execute("SET default_transaction_read_only = on")
        else:
            conn.execute(STAGING_DDL)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in autocommit mode (each statement its own snapshot)."""
        with self.pool.connection() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A pooled connection inside one transaction: commit on success, roll back on error."""
        with self.pool.connection() as conn, conn.transaction():
            yield conn

    def close(self) -> None:
        self.pool.close()
