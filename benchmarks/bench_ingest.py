"""Ingest throughput end to end from JSONL: parse, normalize, store (+ embed).

    python benchmarks/bench_ingest.py [--posts 200000] [--embedders none,minilm-static]
    python benchmarks/bench_ingest.py --real [--posts 84869] [--real-embedders default,use-static]
    python benchmarks/bench_ingest.py --jetstream [--posts 50000] [--likes-per-post 6]

Generated posts (the default): runs the real pipeline (JsonlSource ->
Ingestor -> SQLiteStore) in-process, one fresh SQLite file per row, and prints
posts/s. Targets (issue #2, 2 cores): lexical >= 20,000 posts/s; with semantic
indexing >= 1,000 posts/s.

``--real`` (issue #13): real tweets (../shared/data/tweets/Tweets.csv, plus the
Jetstream fixtures' post texts, repeated with fresh ids up to ``--posts``),
each row one ``townsquare ingest jsonl FILE`` subprocess from a FRESH home,
timed from process start to exit, paired with a bare SQLite FTS5 insert of the
same texts in the same run (one transaction, WAL, one column). ``cold`` also
starts from an empty per-user table cache; ``warm`` reuses the cache a previous
row filled (for ``use-static``: the token table it builds on first use).
``--real-embedders`` picks the embedders paired (each cold and warm). Target:
default embedder, cold, >= 0.3x the bare FTS5 rate (goal 0.5x).

``--jetstream`` measures the cost of engagement (issue #15): the same posts
as Jetstream v1 messages, each author a DID, with ``--likes-per-post`` likes
and a repost per 7 posts on recent posts (the recorded corpus has 105 likes
and 15 reposts for 17 posts), parsed by the real ``parse_message`` and
committed by the real pipeline; once without the like/repost messages (what
subscribing to posts only delivers) and once with them. The target is the
posts/s with engagement within 10% of without.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED, generate_posts, max_rss_mb, table, write_posts
from townsquare.index import EMBEDDERS
from townsquare.ingest import Ingestor
from townsquare.model import Batch
from townsquare.sources.base import Source
from townsquare.sources.jetstream import JetstreamOptions, parse_message
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


class _Lines(Source):
    """Jetstream messages from memory, parsed and batched as the websocket client does
    (its default batch size; a live stream's batches are what arrives in 100 ms)."""

    kind = "bench"

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    @property
    def key(self) -> str:
        return "bench:jetstream"

    async def stream(self, cursor: str | None = None) -> AsyncIterator[Batch]:
        size = JetstreamOptions().batch_size
        for i in range(0, len(self.lines), size):
            parsed = [parse_message(line) for line in self.lines[i : i + size]]
            events = [p.event for p in parsed if p.event is not None]
            yield Batch(events, str(parsed[-1].time_us))


def _compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))  # as Jetstream sends it


def jetstream_lines(n: int, likes_per_post: float, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    recent: list[str] = []
    t = 1_750_000_000_000_000
    for i, rec in enumerate(generate_posts(n)):
        did = f"did:plc:{rec['author']}{i % 97:02d}"
        t += 10
        out.append(_compact({"did": did, "time_us": t, "kind": "commit", "commit": {
            "rev": "x", "operation": "create", "collection": "app.bsky.feed.post",
            "rkey": f"r{i}", "record": {"$type": "app.bsky.feed.post", "text": rec["text"],
                                        "createdAt": rec["created_at"], "langs": ["en"]},
            "cid": "bafy"}}))
        recent = [*recent[-199:], f"at://{did}/app.bsky.feed.post/r{i}"]
        likes = int(likes_per_post) + (rng.random() < likes_per_post % 1)
        for j in range(likes + (1 if rng.random() < 1 / 7 else 0)):
            t += 10
            collection = "app.bsky.feed.like" if j < likes else "app.bsky.feed.repost"
            out.append(_compact({"did": f"did:plc:fan{rng.randrange(10**6)}", "time_us": t,
                                   "kind": "commit", "commit": {
                "rev": "x", "operation": "create", "collection": collection,
                "rkey": f"l{i}x{j}", "record": {"$type": collection,
                                                 "subject": {"uri": rng.choice(recent),
                                                             "cid": "bafy"},
                                                 "createdAt": rec["created_at"]},
                "cid": "bafy"}}))
    return out


def run_jetstream(n: int, likes_per_post: float) -> None:
    lines = jetstream_lines(n, likes_per_post)
    posts_only = [line for line in lines if '"app.bsky.feed.post"' in line]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, chosen in (("posts only", posts_only), ("with likes+reposts", lines)):
            best = 0.0
            for attempt in range(2):
                store = SQLiteStore(Path(tmp) / f"{label[:5]}{attempt}.db")
                t0 = time.perf_counter()
                stats = asyncio.run(Ingestor(store, None).run(_Lines(chosen)))
                secs = time.perf_counter() - t0
                store.close()
                best = max(best, stats.posts / secs)
            rows.append([label, len(chosen), n, best, best * len(chosen) / n])
    print(table(f"Jetstream ingest, {n:,} posts, {likes_per_post} likes/post, SQLite, "
                "no embedder (best of 2)",
                ["messages", "messages", "posts", "posts/s", "messages/s"], rows))
    print(f"engagement costs {100 * (1 - rows[1][3] / rows[0][3]):.1f}% of posts/s")


def real_texts() -> list[dict[str, str]]:
    """Real posts: airline tweets (text, handle, time) and Jetstream post records."""
    rows: list[dict[str, str]] = []
    tweets = SHARED / "tweets" / "Tweets.csv"
    with tweets.open(encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append({"text": r["text"], "author": r["name"], "lang": "en"})
    for fixture in sorted((SHARED / "jetstream").glob("*.jsonl")):
        for line in fixture.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line).get("commit", {}).get("record", {})
            if rec.get("$type") == "app.bsky.feed.post" and rec.get("text"):
                rows.append({"text": rec["text"], "author": "bsky",
                             "lang": (rec.get("langs") or ["en"])[0]})
    return rows


def write_real(path: Path, n: int) -> list[str]:
    base = real_texts()
    texts = []
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            r = base[i % len(base)]
            texts.append(r["text"])
            created = f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z"
            fh.write(json.dumps({"id": f"t{i}", "author": r["author"], "text": r["text"],
                                 "created_at": created, "lang": r["lang"]},
                                ensure_ascii=False) + "\n")
    return texts


def fts5_insert(texts: list[str], db: Path) -> tuple[float, float]:
    """A bare FTS5 insert of ``texts`` (wall s, CPU s): what any SQLite ingest is compared with."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE VIRTUAL TABLE t USING fts5(text)")
    t0, c0 = time.perf_counter(), time.process_time()
    with con:
        con.executemany("INSERT INTO t(text) VALUES (?)", ((t,) for t in texts))
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    con.close()
    return secs, cpu


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli_ingest(path: Path, home: Path, cache: Path, embedder: str | None) -> tuple[float, float]:
    """(wall s, CPU s) of one ``townsquare ingest jsonl`` process, start to exit."""
    env = {**os.environ, "TOWNSQUARE_HOME": str(home), "TOWNSQUARE_TABLE_CACHE": str(cache),
           "XDG_CACHE_HOME": str(cache)}
    cmd = [sys.executable, "-m", "townsquare", "ingest", "jsonl", str(path), "-q"]
    if embedder:
        cmd += ["--embedder", embedder]
    t0, c0 = time.perf_counter(), children_cpu()
    subprocess.run(cmd, env=env, check=True)
    return time.perf_counter() - t0, children_cpu() - c0


def real_main(n: int, rounds: int, embedders: list[str]) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "tweets.jsonl"
        texts = write_real(path, n)
        warm_cache = tmp / "warm-cache"
        for r in range(rounds):
            fts, fts_cpu = fts5_insert(texts, tmp / f"fts{r}.db")
            # cold: an empty per-user cache; warm: the same cache, as the cold row left it
            runs = [(f"{emb or 'default'}, {state}", emb, tmp / f"cache{r}-{emb}")
                    for emb in embedders for state in ("cold", "warm")]
            runs.append(("none", "none", warm_cache))
            rows.append(["bare FTS5 insert", n, round(fts, 2), n / fts, "1.00x",
                         round(fts_cpu, 2), "1.00x"])
            for label, emb, cache in runs:
                secs, cpu = cli_ingest(path, tmp / f"home-{r}-{len(rows)}", cache, emb)
                rows.append([label, n, round(secs, 2), n / secs, f"{fts / secs:.2f}x",
                             round(cpu, 2), f"{fts_cpu / cpu:.2f}x"])
    print(table(f"`townsquare ingest jsonl`, {n:,} real tweets, fresh home each, "
                "process start to exit",
                ["what", "posts", "wall s", "posts/s", "vs FTS5", "CPU s", "CPU vs FTS5"], rows))
    print("CPU s: user + system seconds of the process (the FTS5 row: of this one), steadier "
          "than wall time on a shared machine; 'vs FTS5' = FTS5 time / this row's time.")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--posts", type=int, default=None)
    ap.add_argument("--embedders", default="none,minilm-static")
    ap.add_argument("--jetstream", action="store_true",
                    help="measure engagement's cost on Jetstream-shaped input instead")
    ap.add_argument("--likes-per-post", type=float, default=6.0)
    ap.add_argument("--real", action="store_true", help="real tweets via the CLI vs bare FTS5")
    ap.add_argument("--rounds", type=int, default=1, help="--real: repeat the paired rows")
    ap.add_argument("--real-embedders", default="default",
                    help="--real: embedders to pair (comma-separated; 'default': no flag)")
    args = ap.parse_args()
    if args.jetstream:
        run_jetstream(args.posts or 50_000, args.likes_per_post)
        return
    if args.real:
        if not (SHARED / "tweets" / "Tweets.csv").is_file():
            print(f"skipped: {SHARED} not found (../shared/data lives beside the repo)")
            return
        real_main(args.posts or 84_869, args.rounds,
                  [e if e != "default" else None for e in args.real_embedders.split(",")])
        return
    posts = args.posts or 200_000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = write_posts(Path(tmp) / "posts.jsonl", posts)
        for name in args.embedders.split(","):
            n, secs = run_one(path, Path(tmp) / f"{name}.db", name)
            rows.append([name, n, round(secs, 2), n / secs])
    print(table(f"ingest from JSONL, {posts:,} generated posts, SQLite WAL",
                ["embedder", "posts", "seconds", "posts/s"], rows))
    print(f"max RSS {max_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
