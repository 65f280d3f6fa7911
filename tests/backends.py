"""Fixtures for the real engines: a private PostgreSQL schema and private NATS names per test.

``TOWNSQUARE_TEST_POSTGRES`` (a ``postgresql://`` URL) and ``TOWNSQUARE_TEST_NATS``
(a ``nats://`` URL) point at servers the tests may use; unset, the tests that
need them skip and say so. Each test gets a schema ``ts_test_<random>``
(dropped afterwards) and its own stream, subjects and KV bucket (deleted
afterwards), so tests never see each other's data and may run in parallel.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

PG_ENV = "TOWNSQUARE_TEST_POSTGRES"
NATS_ENV = "TOWNSQUARE_TEST_NATS"


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), *params.items()]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def pg_base() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL to test against")
    return url


def nats_base() -> str:
    url = os.environ.get(NATS_ENV)
    if not url:
        pytest.skip(f"{NATS_ENV} is not set: no NATS JetStream to test against")
    return url


def drop_schema(base: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A store URL on a fresh schema of the test server (dropped after the test)."""
    base = pg_base()
    schema = "ts_test_" + secrets.token_hex(6)
    yield with_query(base, schema=schema)
    drop_schema(base, schema)


@pytest.fixture
def nats_url() -> Iterator[str]:
    """A bus URL naming a private stream, subject prefix and KV bucket (deleted after)."""
    base = nats_base()
    tag = secrets.token_hex(5)
    url = with_query(
        base, stream=f"TS_TEST_{tag.upper()}", subject=f"tstest.{tag}.posts",
        kv=f"TS_TEST_{tag.upper()}_CURSORS",
    )
    yield url
    from townsquare.bus.config import BusConfig, delete_bus

    _run_async(delete_bus(BusConfig.from_url(url)))


def _run_async(coro: object) -> None:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro)  # type: ignore[arg-type]
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL for each engine: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "contract.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                  home: Path) -> str:
    """Runs a CLI-level test once per engine: PostgreSQL through ``TOWNSQUARE_STORE``."""
    if request.param == "postgresql":
        monkeypatch.setenv("TOWNSQUARE_STORE", request.getfixturevalue("pg_url"))
    return str(request.param)
