"""Ingest throughput end to end from JSONL: parse, normalize, store (+ embed).

    python benchmarks/bench_ingest.py [--posts 200000] [--embedders none,minilm-static]

Runs the real pipeline (JsonlSource -> Ingestor -> SQLiteStore) in-process,
one fresh SQLite file per row, and prints posts/s. Targets (issue #2, 2 cores):
lexical >= 20,000 posts/s; with semantic indexing >= 1,000 posts/s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import max_rss_mb, table, write_posts
from townsquare.index import EMBEDDERS
from townsquare.ingest import Ingestor
from townsquare.sources.jsonl import JsonlSource
from townsquare.store.sqlite import SQLiteStore


def run_one(path: Path, db: Path, embedder_name: str) -> tuple[int, float]:
    embedder = None if embedder_name == "none" else EMBEDDERS.create(embedder_name)
    if embedder is not None:
        embedder.embed(["warm up the model"])
    store = SQLiteStore(db)
    t0 = time.perf_counter()
    stats = asyncio.run(Ingestor(store, embedder).run(JsonlSource(str(path))))
    elapsed = time.perf_counter() - t0
    store.close()
    return stats.posts, elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--posts", type=int, default=200_000)
    ap.add_argument("--embedders", default="none,minilm-static")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = write_posts(Path(tmp) / "posts.jsonl", args.posts)
        for name in args.embedders.split(","):
            n, secs = run_one(path, Path(tmp) / f"{name}.db", name)
            rows.append([name, n, round(secs, 2), n / secs])
    print(table(f"ingest from JSONL, {args.posts:,} generated posts, SQLite WAL",
                ["embedder", "posts", "seconds", "posts/s"], rows))
    print(f"max RSS {max_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
