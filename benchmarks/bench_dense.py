"""DenseIndex latency and memory over 1,000,000 random unit vectors.

Rows are added in time order with jitter (as live ingest produces them); the
filtered queries ask for a window holding ~15% of the rows. A second index
with shuffled times shows the worst case, where every block overlaps the
window and the filter saves nothing.

    .venv/bin/python benchmarks/bench_dense.py [--rows N] [--dim D] [--threads T]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from townsquare.index.dense import DenseIndex
from townsquare.index.quantize import quantize

DAY_MS = 86_400_000


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build(rows: int, dim: int, threads: int, shuffled: bool, seed: int = 0) -> DenseIndex:
    rng = np.random.default_rng(seed)
    index = DenseIndex(dim, threads=threads)
    start = 1_700_000_000_000
    created = start + np.sort(rng.integers(0, 30 * DAY_MS, rows))
    created += rng.integers(-3_600_000, 3_600_000, rows)  # an hour of disorder
    if shuffled:
        rng.shuffle(created)
    t0 = time.perf_counter()
    for lo in range(0, rows, 100_000):
        hi = min(lo + 100_000, rows)
        v = rng.standard_normal((hi - lo, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        q, s = quantize(v)
        index.add(np.arange(lo, hi) + 1, created[lo:hi], q, s, np.arange(lo, hi) + 1)
    print(f"built {rows:,} x {dim} in {time.perf_counter() - t0:.1f}s "
          f"({'shuffled' if shuffled else 'time-ordered'} times)")
    return index


def latency(index: DenseIndex, dim: int, queries: int, window: tuple[int, int] | None) -> str:
    rng = np.random.default_rng(1)
    times = []
    for _ in range(queries):
        q = rng.standard_normal(dim).astype(np.float32)
        q /= np.linalg.norm(q)
        t0 = time.perf_counter()
        if window:
            index.search(q, 50, since_ms=window[0], until_ms=window[1])
        else:
            index.search(q, 50)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return f"p50 {np.percentile(ms, 50):7.2f} ms   p99 {np.percentile(ms, 99):7.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None, help="scan threads (default: cores)")
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    for shuffled in (False, True):
        before = rss_mib()
        index = build(args.rows, args.dim, args.threads, shuffled)
        grown = rss_mib() - before
        created = index._snap.created[: index._snap.n]
        lo, hi = np.percentile(created, [60, 75]).astype(np.int64)
        share = float(np.mean((created >= lo) & (created <= hi)))
        print(f"  memory_bytes() {index.memory_bytes() / 2**20:,.0f} MiB (allocated capacity "
              f"{len(index._snap.keys):,} rows), resident growth {grown:,.0f} MiB, "
              f"for {len(index):,} rows, {index.threads} scan thread(s)")
        print(f"  k=50, no filter:            {latency(index, args.dim, args.queries, None)}")
        print(f"  k=50, window {share:5.1%} of rows: "
              f"{latency(index, args.dim, args.queries, (int(lo), int(hi)))}")


if __name__ == "__main__":
    main()
