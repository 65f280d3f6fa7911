"""Hybrid search latency over a large store, with time filters.

    python benchmarks/bench_search.py [--posts 1000000] [--embedder minilm-static]
                                      [--db PATH (reuse a built store)]

Builds (or reuses) a SQLite store of generated posts spread over 30 days,
then times Retriever.search for a mix of queries under several filters and
prints p50/p99 and memory. Target (issue #2, 2 cores): hybrid search with a
time filter over 1,000,000 posts, p50 <= 20 ms, p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import max_rss_mb, percentile, table, write_posts
from townsquare.index import EMBEDDERS
from townsquare.ingest import Ingestor
from townsquare.retrieval import Retriever, SearchRequest
from townsquare.sources.jsonl import JsonlSource
from townsquare.store import SearchFilters
from townsquare.store.sqlite import SQLiteStore
from townsquare.timeutil import utcnow

QUERIES = [
    "train strike delays", "storm warning", "phone software update bug", "election debate",
    "coffee bakery", "grève métro", "team coach injury", "flood rain forecast",
    "server outage", "cheese market", "vote parliament bill", "platform cancelled",
]


def build(db: Path, n: int, embedder_name: str) -> float:
    embedder = EMBEDDERS.create(embedder_name)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_posts(Path(tmp) / "posts.jsonl", n)
        store = SQLiteStore(db)
        t0 = time.perf_counter()
        asyncio.run(Ingestor(store, embedder).run(JsonlSource(str(path))))
        secs = time.perf_counter() - t0
        store.close()
    return secs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--posts", type=int, default=1_000_000)
    ap.add_argument("--embedder", default="minilm-static")
    ap.add_argument("--db", type=Path)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    db = args.db or Path(tmp.name) / "bench.db"
    if not db.exists():
        secs = build(db, args.posts, args.embedder)
        print(f"built {args.posts:,} posts in {secs:,.0f} s ({args.posts / secs:,.0f}/s)")
    store = SQLiteStore(db, read_only=True)
    embedder = EMBEDDERS.create(args.embedder)
    retriever = Retriever(store, embedder)
    t0 = time.perf_counter()
    retriever.sync_dense(force=True)
    load_s = time.perf_counter() - t0
    n_vec = len(retriever.dense) if retriever.dense is not None else 0
    print(f"dense index: {n_vec:,} vectors loaded in {load_s:,.1f} s, "
          f"{(retriever.dense.memory_bytes() if retriever.dense else 0) / 1e6:,.0f} MB")
    now = utcnow()
    rng = random.Random(1)
    cases = [
        ("hybrid, since 24h", "hybrid", SearchFilters(since=now - timedelta(hours=24))),
        ("hybrid, since 3d", "hybrid", SearchFilters(since=now - timedelta(days=3))),
        ("hybrid, 7d..3d ago", "hybrid",
         SearchFilters(since=now - timedelta(days=7), until=now - timedelta(days=3))),
        ("hybrid, no filter", "hybrid", SearchFilters()),
        ("lexical, since 24h", "lexical", SearchFilters(since=now - timedelta(hours=24))),
        ("dense, since 24h", "dense", SearchFilters(since=now - timedelta(hours=24))),
        ("recent, lang=fr", "recent", SearchFilters(langs=["fr"])),
    ]
    rows = []
    for label, mode, filters in cases:
        lat = []
        for _ in range(args.rounds):
            for q in rng.sample(QUERIES, len(QUERIES)):
                t = time.perf_counter()
                retriever.search(SearchRequest(q, filters, limit=10, mode=mode))  # type: ignore[arg-type]
                lat.append((time.perf_counter() - t) * 1000)
        rows.append([label, len(lat), percentile(lat, 50), percentile(lat, 99)])
    print(table(f"search latency (ms) over {store.stats()['posts']:,} posts, "
                f"embedder {args.embedder}",
                ["case", "queries", "p50 ms", "p99 ms"], rows))
    print(f"max RSS {max_rss_mb():,.0f} MB")
    store.close()


if __name__ == "__main__":
    main()
