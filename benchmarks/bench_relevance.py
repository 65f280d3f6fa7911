"""Relevance sanity check on real tweets (../shared/data/tweets/Tweets.csv).

    python benchmarks/bench_relevance.py [--embedder minilm-static]

Ingests the 14.6k US-airline tweets (Feb 2015) and asks questions whose
answers the dataset labels itself: its `negativereason` column says which
tweets complain about lost luggage, late flights, cancellations... For each
question we print precision@10 (share of the top 10 carrying that label)
for lexical, dense and hybrid retrieval. No recency weighting here (the
half-life is set very long) because the labels are about topic, not age.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED, table
from townsquare.index import EMBEDDERS
from townsquare.ingest import Ingestor, IngestStats
from townsquare.model import Batch, Post, Upsert
from townsquare.retrieval import Retriever, SearchRequest
from townsquare.store.sqlite import SQLiteStore
from townsquare.timeutil import parse_time

QUESTIONS = {
    "Lost Luggage": "my bag never arrived, where is my luggage",
    "Late Flight": "flight delayed for hours, still waiting to take off",
    "Cancelled Flight": "they cancelled my flight",
    "Customer Service Issue": "rude customer service agent",
    "Flight Booking Problems": "problems booking a ticket on the website",
    "Long lines": "huge line at the check-in counter",
    "Bad Flight": "uncomfortable flight with broken seats and no wifi",
    "Flight Attendant Complaints": "the flight attendant was rude to me",
}


def load_tweets(path: Path) -> tuple[list[Post], dict[str, str]]:
    posts, labels = [], {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            created = parse_time(row["tweet_created"].replace(" -0800", "-08:00")
                                 .replace(" ", "T", 1))
            pid = f"tweets:{row['tweet_id']}"
            posts.append(Post(id=pid, source="tweets", author=row["name"], text=row["text"],
                              created_at=created, lang="en"))
            labels[pid] = row["negativereason"]
    return posts, labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--embedder", default="minilm-static")
    args = ap.parse_args()
    csv_path = SHARED / "tweets" / "Tweets.csv"
    if not csv_path.exists():
        print(f"skipped: {csv_path} not found (../shared/data beside the repo)")
        return
    posts, labels = load_tweets(csv_path)
    embedder = EMBEDDERS.create(args.embedder)
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "tweets.db")
        t0 = time.perf_counter()
        ing = Ingestor(store, embedder)
        stats = IngestStats()
        for i in range(0, len(posts), 1000):
            chunk = posts[i : i + 1000]
            ing.commit("tweets", Batch([Upsert(p) for p in chunk], str(i)), stats)
        print(f"ingested {len(posts):,} tweets in {time.perf_counter() - t0:,.1f} s")
        retriever = Retriever(store, embedder, half_life=timedelta(days=3650))
        rows = []
        totals = {"lexical": 0.0, "dense": 0.0, "hybrid": 0.0}
        for label, question in QUESTIONS.items():
            row: list[object] = [label]
            for mode in ("lexical", "dense", "hybrid"):
                hits = retriever.search(SearchRequest(question, limit=10, mode=mode))  # type: ignore[arg-type]
                p10 = sum(labels[h.post.id] == label for h in hits) / 10
                totals[mode] += p10
                row.append(p10)
            rows.append(row)
        rows.append(["mean", *(round(v / len(QUESTIONS), 2) for v in totals.values())])
        print(table(f"precision@10 against the dataset's own labels, embedder {args.embedder}",
                    ["label (question)", "lexical", "dense", "hybrid"], rows))
        store.close()


if __name__ == "__main__":
    main()
