"""What only the PostgreSQL store has: partitions, retention, concurrent writers, its URL.

The behaviour it shares with SQLite is in test_store_contract.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner

from factories import make_post
from townsquare.cli import main
from townsquare.model import Post, Upsert
from townsquare.store import SearchFilters, open_store
from townsquare.store.postgres import PostgresStore
from townsquare.store.postgres.database import parse_url
from townsquare.store.postgres.partitions import partition_name
from townsquare.store.postgres.store import DIALECT
from townsquare.store.postgres.writer import MAX_ID_BYTES
from townsquare.store.sql.filters import filter_sql

NOW = datetime.now(UTC).replace(microsecond=0)


post = partial(make_post, author="a", now=NOW, url=None)


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def pg(pg_url: str, tmp_path: Path) -> Iterator[PostgresStore]:
    store = open_store(pg_url, tmp_path)
    assert isinstance(store, PostgresStore)
    yield store
    store.close()


def scalar(store: PostgresStore, query: str, *params: object) -> object:
    with store.db.connection() as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    return row[0] if row else None


def partition_of(store: PostgresStore, post_id: str) -> str:
    return str(scalar(store, "SELECT tableoid::regclass::text FROM posts WHERE id = %s", post_id))


def test_url_parameters_are_ours_and_the_password_never_shows() -> None:
    t = parse_url("postgresql://u:secret@db:5433/ts?schema=prod&pool_size=3&sslmode=require")
    assert (t.schema, t.pool_size) == ("prod", 3)
    assert "schema" not in t.conninfo and "sslmode=require" in t.conninfo
    assert "secret" not in t.redacted() and "schema=prod" in t.redacted()
    assert parse_url("postgres://db/ts").schema == "townsquare"


@pytest.mark.postgres
def test_posts_land_in_day_partitions_and_odd_dates_in_the_default(pg: PostgresStore) -> None:
    pg.apply("s", [Upsert(post("now", when=timedelta(0))),
                   Upsert(post("old", when=timedelta(days=3))),
                   Upsert(post("epoch", when=NOW - datetime(1970, 1, 2, tzinfo=UTC))),
                   Upsert(post("future", when=-timedelta(days=40)))], None)
    assert partition_of(pg, "jsonl:now") == partition_name(NOW.date())
    assert partition_of(pg, "jsonl:old") == partition_name((NOW - timedelta(days=3)).date())
    assert partition_of(pg, "jsonl:epoch") == "posts_default"
    assert partition_of(pg, "jsonl:future") == "posts_default"
    # When the future day gets its partition, its rows move out of the default.
    future_day = (NOW + timedelta(days=40)).date()
    assert pg.partitions.create(future_day)
    assert partition_of(pg, "jsonl:future") == partition_name(future_day)
    assert pg.get_post("jsonl:future") is not None
    assert pg.lexical("ferry", SearchFilters(), 10) and len(pg.recent(SearchFilters(), 10)) == 4


@pytest.mark.postgres
def test_a_since_filter_prunes_older_partitions(pg: PostgresStore) -> None:
    pg.apply("s", [Upsert(post(str(d), when=timedelta(days=d))) for d in range(6)], None)
    where, params = filter_sql(SearchFilters(since=NOW - timedelta(hours=12)), DIALECT)
    with pg.db.connection() as conn:
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN (COSTS OFF) SELECT p.key FROM posts p WHERE " + " AND ".join(where),
            params).fetchall())
    old = partition_name((NOW - timedelta(days=3)).date())
    assert partition_name(NOW.date()) in plan and old not in plan


@pytest.mark.postgres
def test_retention_drops_whole_days_and_their_ids_and_vectors(
    pg: PostgresStore, pg_url: str
) -> None:
    posts = [post("ancient", when=timedelta(days=10)), post("older", when=timedelta(days=9)),
             post("recent", when=timedelta(days=1)), post("fresh", when=timedelta(minutes=1))]
    pg.apply("s", [Upsert(p) for p in posts], None, {p.id: unit(i) for i, p in enumerate(posts)})
    runner = CliRunner()
    out = runner.invoke(main, ["--store", pg_url, "retention", "--older-than", "7d",
                               "--dry-run"], catch_exceptions=False).output
    assert "would drop 2 partition(s)" in out and "would drop 2 post(s)" in out
    assert pg.stats()["posts"] == 4
    res = runner.invoke(main, ["--store", pg_url, "retention", "--older-than", "7d"],
                        catch_exceptions=False)
    assert res.exit_code == 0 and "dropped 2 partition(s)" in res.output
    assert [p.id for _, p in pg.iter_posts()] == ["jsonl:recent", "jsonl:fresh"]
    assert scalar(pg, "SELECT count(*) FROM post_ids") == 2
    assert scalar(pg, "SELECT count(*) FROM embeddings") == 2
    assert partition_name((NOW - timedelta(days=10)).date()) not in [
        partition_name(d) for d in pg.partitions.existing()]
    # A late copy of a dropped post is simply stored again (its day comes back).
    assert pg.apply("s", [Upsert(posts[0])], None).upserted == 1
    assert pg.get_post("jsonl:ancient") is not None


def test_retention_explains_it_needs_postgresql() -> None:
    res = CliRunner().invoke(main, ["retention", "--older-than", "30d"])
    assert res.exit_code == 2 and "needs the PostgreSQL store" in res.output


@pytest.mark.postgres
def test_post_lost_from_posts_but_still_in_post_ids_is_restored(pg: PostgresStore) -> None:
    p = post("x", when=timedelta(minutes=1))
    pg.apply("s", [Upsert(p)], None)
    with pg.db.connection() as conn:
        conn.execute("DELETE FROM posts WHERE id = 'jsonl:x'")  # interrupted retention
    assert pg.apply("s", [Upsert(p)], None).upserted == 1
    assert pg.get_post("jsonl:x") is not None


@pytest.mark.postgres
def test_text_postgres_cannot_hold_is_made_storable(pg: PostgresStore) -> None:
    long_id = Post(id="jsonl:" + "x" * MAX_ID_BYTES, source="jsonl", author="a", text="t",
                   created_at=NOW)
    res = pg.apply("s", [Upsert(post("nul", when=timedelta(0), text="zero\x00byte")),
                         Upsert(long_id)], None)
    assert (res.upserted, res.quarantined) == (1, 1)
    assert pg.get_post("jsonl:nul").text == "zerobyte"  # type: ignore[union-attr]
    assert "longer than" in pg.quarantined()[0].reason
    huge = post("huge", when=timedelta(0), text=" ".join(f"w{i}" for i in range(300_000)))
    assert pg.apply("s", [Upsert(huge)], None).upserted == 1  # the tsvector is capped


@pytest.mark.postgres
def test_a_read_only_store_refuses_writes(pg_url: str, tmp_path: Path,
                                          pg: PostgresStore) -> None:
    ro = open_store(pg_url, tmp_path, read_only=True)
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            ro.apply("s", [Upsert(post("r", when=timedelta(0)))], None)
        assert ro.recent(SearchFilters(), 1) == []
    finally:
        ro.close()


@pytest.mark.postgres
def test_concurrent_writers_store_each_post_once_and_followers_miss_no_vector(
    pg: PostgresStore, pg_url: str, tmp_path: Path
) -> None:
    """Two writers (as two index workers) on overlapping posts, one follower (a replica)."""
    n, rounds = 400, 6
    other = open_store(pg_url, tmp_path)
    follower_keys: set[int] = set()
    done = threading.Event()
    errors: list[BaseException] = []

    def write(store: object, offset: int) -> None:
        try:
            for r in range(rounds):
                ids = range((r * 150 + offset) % n, (r * 150 + offset) % n + 200)
                batch = [post(str(i % n), when=timedelta(seconds=i % n)) for i in ids]
                store.apply(f"w{offset}", [Upsert(p) for p in batch], None,  # type: ignore[attr-defined]
                            {p.id: unit(hash(p.id) % 1000) for p in batch})
        except BaseException as exc:
            errors.append(exc)

    def follow() -> None:
        seq = 0
        try:
            while True:
                finished = done.is_set()
                got = pg.vectors_since(seq)
                if len(got.seqs):
                    assert int(got.seqs.min()) > seq
                    seq = int(got.seqs.max())
                    follower_keys.update(got.keys.tolist())
                elif finished:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(pg, 0)),
               threading.Thread(target=write, args=(other, 75))]
    watcher = threading.Thread(target=follow)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    other.close()
    assert not errors, errors
    stored = scalar(pg, "SELECT count(*) FROM posts")
    assert stored == scalar(pg, "SELECT count(DISTINCT id) FROM posts")
    assert stored == scalar(pg, "SELECT count(*) FROM post_ids")
    assert follower_keys == {k for k, _ in pg.iter_posts()}


@pytest.mark.postgres
def test_stats_say_which_dense_path_and_accents(pg: PostgresStore) -> None:
    pg.apply("s", [Upsert(post("1", when=timedelta(0)))], None)
    s = pg.stats()
    assert s["dense"].startswith("in-process") and s["unaccent"] is True
    assert s["partitions"] >= 2  # today and tomorrow exist once anything was written
    assert json.dumps(s, default=str)
