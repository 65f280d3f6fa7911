"""PostgreSQL and NATS beside SQLite: ingest throughput and search latency.

    .venv/bin/python benchmarks/bench_postgres.py [--ingest-posts 200000]
        [--search-posts 1000000] [--embedders none,minilm-static]
        [--pg postgresql://postgres@127.0.0.1:5432/test] [--nats nats://127.0.0.1:4222]
        [--keep] [--reuse-search]

Ingest (``--ingest-posts`` generated posts, per embedder):

- SQLite direct and PostgreSQL direct: JsonlSource -> Ingestor -> store, in-process;
- publish: JsonlSource -> NATS JetStream (``publish_source``), no store;
- PostgreSQL through NATS with 1 and 2 index workers: real ``townsquare index``
  processes on one durable consumer, timed from the first stored post to the
  last (so process start-up and model loading are not counted).

Search (``--search-posts``, default 1,000,000, embedder minilm-static): the same
generated posts (30 days) in SQLite and in PostgreSQL, then Retriever.search
p50/p99 for the cases of bench_search.py, side by side. ``--reuse-search``
keeps the built stores (schema ``bench_search``, ``bench-out/search.db``) for
a second run.

Every figure is on this machine with everything on it (PostgreSQL, NATS, the
workers, the publisher); docs/DEPLOY.md turns them into a capacity model.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from psycopg import sql

from _common import max_rss_mb, percentile, table, write_posts
from townsquare.bus import publish_source
from townsquare.bus.config import BusConfig, delete_bus
from townsquare.index import EMBEDDERS
from townsquare.ingest import Ingestor
from townsquare.retrieval import Retriever, SearchRequest
from townsquare.sources.jsonl import JsonlSource
from townsquare.store import SearchFilters, Store, open_store
from townsquare.timeutil import utcnow

REPO = Path(__file__).resolve().parents[1]
QUERIES = [
    "train strike delays", "storm warning", "phone software update bug", "election debate",
    "coffee bakery", "grève métro", "team coach injury", "flood rain forecast",
    "server outage", "cheese market", "vote parliament bill", "platform cancelled",
]


_TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(comm: str) -> float:
    """CPU seconds of every process named ``comm``, plus their reaped children.

    PostgreSQL's postmaster reaps its backends, so their time lands in its
    ``cutime``: the delta over an interval counts backends that came and went.
    """
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name == comm:
            fields = text[text.rindex(")") + 2 :].split()
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return total / _TICK


class CpuMeter:
    """CPU seconds spent, per component, between ``start()`` and ``stop()``."""

    def start(self) -> CpuMeter:
        self._t = self._snap()
        return self

    def stop(self) -> dict[str, float]:
        end = self._snap()
        return {k: end[k] - self._t[k] for k in end}

    @staticmethod
    def _snap() -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"client": own.ru_utime + own.ru_stime,
                "workers": kids.ru_utime + kids.ru_stime,
                "postgres": server_cpu("postgres"), "nats": server_cpu("nats-server")}


def per_post_ms(cpu: dict[str, float], n: int, client: str = "client") -> list[object]:
    """CPU milliseconds per post: the ingesting process(es), PostgreSQL, NATS."""
    return [cpu[client] * 1000 / n, cpu["postgres"] * 1000 / n, cpu["nats"] * 1000 / n]


def schema_url(base: str, schema: str) -> str:
    return base + ("&" if "?" in base else "?") + f"schema={schema}"


def drop_schema(base: str, schema: str) -> None:
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def count_posts(url_base: str, schema: str) -> int:
    with psycopg.connect(url_base, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "post_ids"))
        ).fetchone()
    return int(row[0]) if row else 0


def direct(path: Path, store: Store, embedder_name: str) -> list[object]:
    """[posts/s, client ms/post, PostgreSQL ms/post, NATS ms/post] of in-process ingest."""
    embedder = None if embedder_name == "none" else EMBEDDERS.create(embedder_name)
    if embedder is not None:
        embedder.embed(["warm up"])
    meter = CpuMeter().start()
    t0 = time.perf_counter()
    stats = asyncio.run(Ingestor(store, embedder).run(JsonlSource(str(path))))
    secs = time.perf_counter() - t0
    return [stats.posts / secs, *per_post_ms(meter.stop(), stats.posts)]


def workers(n_workers: int, n_posts: int, pg: str, schema: str, nats_url: str,
            embedder: str, home: Path) -> list[object]:
    """posts/s of ``n_workers`` index processes from first stored post to last, and CPU/post.

    The CPU figures cover the whole run, start-up and model loading included.
    """
    drop_schema(pg, schema)
    url = schema_url(pg, schema)
    open_store(url, home).close()  # migrate once, outside the timing
    if embedder != "none":  # distil the static table into this home's cache, outside too
        EMBEDDERS.get(embedder)(cache_dir=home / "cache")
    env = {**os.environ, "TOWNSQUARE_HOME": str(home)}
    cmd = [sys.executable, "-m", "townsquare", "--store", url, "index", "--from", nats_url,
           "--durable", f"bench-{schema}", "--batch", "1000", "--stop-when-idle", "-q",
           "--embedder", embedder]
    meter = CpuMeter().start()
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE) for _ in range(n_workers)]
    first_t, first_n = None, 0
    while True:
        n = count_posts(pg, schema)
        now = time.perf_counter()
        if first_t is None and n > 0:
            first_t, first_n = now, n
        if n >= n_posts:
            break
        if all(p.poll() is not None for p in procs):
            errs = b"".join(p.stderr.read() for p in procs if p.stderr)
            raise RuntimeError(f"workers exited at {n}/{n_posts}: {errs.decode()[-2000:]}")
        time.sleep(0.05)
    for p in procs:
        p.wait(timeout=120)
    cpu = meter.stop()
    assert first_t is not None
    return [(n_posts - first_n) / max(now - first_t, 1e-9),
            *per_post_ms(cpu, n_posts, client="workers")]


def ingest_section(args: argparse.Namespace, tmp: Path) -> None:
    path = write_posts(tmp / "posts.jsonl", args.ingest_posts)
    stream = f"BENCH_{os.getpid()}"
    nats_url = args.nats + ("&" if "?" in args.nats else "?") + f"stream={stream}"
    rows: list[list[object]] = []
    try:
        meter = CpuMeter().start()
        t0 = time.perf_counter()
        stats = asyncio.run(publish_source(JsonlSource(str(path)), nats_url, quiet=True))
        rate = stats.posts / (time.perf_counter() - t0)
        publish = [rate, *per_post_ms(meter.stop(), stats.posts)]
        for emb in args.embedders.split(","):
            sqlite = open_store(str(tmp / f"ingest-{emb}.db"), tmp)
            rows.append(["SQLite, direct", emb, *direct(path, sqlite, emb)])
            sqlite.close()
            drop_schema(args.pg, "bench_ingest")
            pg = open_store(schema_url(args.pg, "bench_ingest"), tmp)
            rows.append(["PostgreSQL, direct", emb, *direct(path, pg, emb)])
            pg.close()
            for n in (1, 2):
                schema = f"bench_w{n}_{emb.replace('-', '_')}"
                result = workers(n, args.ingest_posts, args.pg, schema, nats_url, emb,
                                 tmp / "home")
                rows.append([f"PostgreSQL, NATS, {n} worker{'s' * (n > 1)}", emb, *result])
        rows.append(["publish to NATS (no store)", "-", *publish])
    finally:
        asyncio.run(delete_bus(BusConfig.from_url(nats_url)))
        if not args.keep:
            for schema in ("bench_ingest", *(f"bench_w{n}_{e.replace('-', '_')}"
                                            for n in (1, 2) for e in args.embedders.split(","))):
                drop_schema(args.pg, schema)
    print(table(f"ingest throughput, {args.ingest_posts:,} generated posts "
                f"({os.cpu_count()} cores shared by everything; CPU in ms per post)",
                ["path", "embedder", "posts/s", "ingest CPU", "PostgreSQL CPU", "NATS CPU"],
                rows))


def build(store: Store, path: Path, embedder_name: str) -> float:
    embedder = EMBEDDERS.create(embedder_name)
    t0 = time.perf_counter()
    asyncio.run(Ingestor(store, embedder).run(JsonlSource(str(path))))
    return time.perf_counter() - t0


def latencies(store: Store, embedder_name: str, rounds: int) -> tuple[list[list[object]], str]:
    retriever = Retriever(store, EMBEDDERS.create(embedder_name))
    t0 = time.perf_counter()
    retriever.sync_dense(force=True)
    load = time.perf_counter() - t0
    now = utcnow()
    cases = [
        ("hybrid, since 24h", "hybrid", SearchFilters(since=now - timedelta(hours=24))),
        ("hybrid, since 3d", "hybrid", SearchFilters(since=now - timedelta(days=3))),
        ("hybrid, 7d..3d ago", "hybrid",
         SearchFilters(since=now - timedelta(days=7), until=now - timedelta(days=3))),
        ("hybrid, no filter", "hybrid", SearchFilters()),
        ("lexical, since 24h", "lexical", SearchFilters(since=now - timedelta(hours=24))),
        ("lexical, no filter", "lexical", SearchFilters()),
        ("recent, lang=fr", "recent", SearchFilters(langs=["fr"])),
    ]
    rng = random.Random(1)
    rows: list[list[object]] = []
    for label, mode, filters in cases:
        for q in QUERIES[:3]:  # warm the caches
            retriever.search(SearchRequest(q, filters, limit=10, mode=mode))  # type: ignore[arg-type]
        lat = []
        for _ in range(rounds):
            for q in rng.sample(QUERIES, len(QUERIES)):
                t = time.perf_counter()
                retriever.search(SearchRequest(q, filters, limit=10, mode=mode))  # type: ignore[arg-type]
                lat.append((time.perf_counter() - t) * 1000)
        rows.append([label, percentile(lat, 50), percentile(lat, 99)])
    n = len(retriever.dense) if retriever.dense is not None else 0
    return rows, f"{n:,} vectors loaded in {load:.1f} s"


def search_section(args: argparse.Namespace, tmp: Path) -> None:
    out = REPO / "bench-out"
    out.mkdir(exist_ok=True)
    db = out / "search.db"
    pg_url = schema_url(args.pg, "bench_search")
    fresh = not args.reuse_search
    if fresh:
        db.unlink(missing_ok=True)
        drop_schema(args.pg, "bench_search")
    path = None
    stores: dict[str, Store] = {}
    for name, url in (("SQLite", str(db)), ("PostgreSQL", pg_url)):
        store = open_store(url, tmp)
        if store.stats()["posts"] < args.search_posts:
            path = path or write_posts(tmp / "search.jsonl", args.search_posts)
            secs = build(store, path, "minilm-static")
            print(f"{name}: built {args.search_posts:,} posts in {secs:,.0f} s "
                  f"({args.search_posts / secs:,.0f}/s, minilm-static)", flush=True)
        if name == "PostgreSQL":
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute("SET search_path TO bench_search")
                conn.execute("VACUUM ANALYZE")  # what autovacuum does after a bulk load
        stores[name] = store
    results = {}
    for name, store in stores.items():
        results[name], note = latencies(store, "minilm-static", args.rounds)
        stats = store.stats()
        print(f"{name}: {stats['posts']:,} posts, {stats['file_bytes'] / 1e9:.2f} GB; {note}",
              flush=True)
    rows = [[a[0], a[1], a[2], b[1], b[2]]
            for a, b in zip(results["SQLite"], results["PostgreSQL"], strict=True)]
    print(table(f"search latency (ms), {args.search_posts:,} posts over 30 days, minilm-static",
                ["case", "SQLite p50", "SQLite p99", "PostgreSQL p50", "PostgreSQL p99"], rows))
    for store in stores.values():
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ingest-posts", type=int, default=200_000)
    ap.add_argument("--search-posts", type=int, default=1_000_000)
    ap.add_argument("--embedders", default="none,minilm-static")
    ap.add_argument("--pg", default=os.environ.get(
        "TOWNSQUARE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--nats", default=os.environ.get("TOWNSQUARE_TEST_NATS",
                                                     "nats://127.0.0.1:4222"))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--reuse-search", action="store_true")
    ap.add_argument("--keep", action="store_true", help="Keep the ingest schemas.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_ingest:
            ingest_section(args, Path(tmp))
        if not args.skip_search:
            search_section(args, Path(tmp))
    print(f"max RSS {max_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
