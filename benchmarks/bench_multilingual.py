"""Cross-lingual retrieval: French questions finding English posts and back.

    python benchmarks/bench_multilingual.py [--embedders use-static,minilm-static,use-multilingual]
                                            [--distractors 1000]

The set (``benchmarks/data/bilingual_fr_en.jsonl``, written for this
benchmark): 50 events, each with an English and a French post and an English
and a French question. The pool is all 100 posts plus distractors: real
English airline tweets (../shared/data, when present) and 40 everyday French
posts (``data/distractors_fr.txt``). Per embedder:

- recall@10 en->fr: for each English question, is the event's French post in
  the 10 nearest posts? fr->en the other way; ``x-ling`` is their mean
  (target, issue #15: >= 0.8). ``mono`` is the same-language figure.
- posts/s: embedding the pool's texts in batches of 256 after a warm-up
  (1st), then again (2nd: what a word cache gives on a stream that repeats
  its words);
  load s: creating the embedder; RSS MB: the process's resident memory
  growth from creating it and embedding the pool.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED, table
from townsquare.index import EMBEDDERS

DATA = Path(__file__).resolve().parent / "data"
K = 10
BATCH = 256


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load_set(n_distractors: int) -> tuple[list[dict[str, str]], list[str]]:
    events = [json.loads(line) for line in (DATA / "bilingual_fr_en.jsonl").open(encoding="utf-8")]
    distractors = (DATA / "distractors_fr.txt").read_text(encoding="utf-8").splitlines()
    tweets = SHARED / "tweets" / "Tweets.csv"
    if tweets.is_file():
        with tweets.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            distractors += [r["text"] for _, r in zip(range(n_distractors), reader, strict=False)]
    return events, [t for t in distractors if t.strip()]


def recall(emb: object, events: list[dict[str, str]], pool: np.ndarray, q_lang: str,
           target: str) -> float:
    """Share of ``q_lang`` questions whose event's ``target`` post is in the top K."""
    queries = np.stack([emb.embed_query(e[f"{q_lang}_q"]) for e in events])  # type: ignore[attr-defined]
    scores = queries @ pool.T
    top = np.argsort(-scores, axis=1)[:, :K]
    offset = 0 if target == "en" else len(events)  # pool: en posts, fr posts, distractors
    return float(np.mean([offset + i in top[i] for i in range(len(events))]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embedders", default="use-static,minilm-static")
    ap.add_argument("--distractors", type=int, default=1000, help="real English tweets added")
    args = ap.parse_args()
    events, distractors = load_set(args.distractors)
    texts = [e["en"] for e in events] + [e["fr"] for e in events] + distractors
    rows = []
    for name in args.embedders.split(","):
        before = rss_mb()
        t0 = time.perf_counter()
        try:
            emb = EMBEDDERS.create(name)
        except RuntimeError as exc:  # an extra not installed
            print(f"{name}: skipped ({exc})")
            continue
        load_s = time.perf_counter() - t0
        emb.embed(texts[:BATCH])  # warm-up
        t0 = time.perf_counter()
        pool = np.concatenate([emb.embed(texts[i : i + BATCH])
                               for i in range(0, len(texts), BATCH)])
        first = len(texts) / (time.perf_counter() - t0)
        t0 = time.perf_counter()  # again: word caches now know the texts' words
        for i in range(0, len(texts), BATCH):
            emb.embed(texts[i : i + BATCH])
        again = len(texts) / (time.perf_counter() - t0)
        en_fr = recall(emb, events, pool, "en", "fr")
        fr_en = recall(emb, events, pool, "fr", "en")
        mono = (recall(emb, events, pool, "en", "en") + recall(emb, events, pool, "fr", "fr")) / 2
        rows.append([name, en_fr, fr_en, (en_fr + fr_en) / 2, mono, first, again,
                     round(load_s, 2), rss_mb() - before])
    print(table(f"cross-lingual recall@{K}, {len(events)} events x (en, fr) + "
                f"{len(distractors)} distractors ({len(texts)} posts)",
                ["embedder", "en->fr", "fr->en", "x-ling", "mono", "posts/s 1st", "posts/s 2nd",
                 "load s", "RSS MB"],
                rows))


if __name__ == "__main__":
    main()
