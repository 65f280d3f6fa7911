"""Arrival-to-searchable latency: append to a followed file, poll search.

    python benchmarks/bench_freshness.py [--posts 200] [--interval 0.05]

Runs a real `townsquare ingest jsonl FILE --follow` process; a writer appends
posts carrying a unique token; a reader (a separate read-only store, as the
`search` command or the server would have) polls lexical search until each
token is found. Prints p50/p99/max. Target (issue #2): p99 <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import percentile, table
from townsquare.retrieval import Retriever, SearchRequest
from townsquare.store.sqlite import SQLiteStore


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--posts", type=int, default=200)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--embedder", default="minilm-static")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        feed = home / "live.jsonl"
        feed.write_text("")
        env = dict(os.environ, TOWNSQUARE_HOME=str(home), TOWNSQUARE_EMBEDDER=args.embedder)
        proc = subprocess.Popen(
            [sys.executable, "-m", "townsquare", "ingest", "jsonl", str(feed), "--follow", "-q"],
            env=env,
        )
        db = home / "townsquare.db"
        while not db.exists():
            time.sleep(0.05)
        store = SQLiteStore(db, read_only=True)
        retriever = Retriever(store)
        # Warm-up: the ingester loads (or, in a fresh home, distills) its
        # embedder first; measure only once a post goes through end to end.
        with feed.open("a") as fh:
            fh.write(json.dumps({"id": "warmup", "author": "bench", "text": "warmupzz",
                                 "created_at": datetime.now(UTC).isoformat()}) + "\n")
        deadline = time.monotonic() + 300
        while not retriever.search(SearchRequest("warmupzz", limit=1, mode="lexical")):
            if time.monotonic() > deadline:
                raise SystemExit("ingester never became ready")
            time.sleep(0.1)
        lat: list[float] = []
        missed: list[str] = []
        try:
            with feed.open("a") as fh:
                for i in range(args.posts):
                    token = f"zq{i}x{os.getpid()}"
                    rec = {"id": token, "author": "bench", "text": f"fresh {token} news",
                           "created_at": datetime.now(UTC).isoformat()}
                    fh.write(json.dumps(rec) + "\n")
                    fh.flush()
                    t0 = time.perf_counter()
                    while True:
                        hits = retriever.search(SearchRequest(token, limit=1, mode="lexical"))
                        if hits:
                            break
                        if time.perf_counter() - t0 > 10:
                            missed.append(token)
                            break
                        time.sleep(0.005)
                    lat.append((time.perf_counter() - t0) * 1000)
                    time.sleep(args.interval)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
            store.close()
    if missed:
        print(f"NOT FOUND within 10 s: {missed}")
    print(table(f"arrival-to-searchable, {args.posts} posts, embedder {args.embedder} (ms)",
                ["p50", "p90", "p99", "max"],
                [[percentile(lat, 50), percentile(lat, 90), percentile(lat, 99), max(lat)]]))


if __name__ == "__main__":
    main()
