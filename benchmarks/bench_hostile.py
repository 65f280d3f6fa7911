"""One huge post through ``townsquare ingest jsonl`` (``hash`` embedder): time and peak memory.

    python benchmarks/bench_hostile.py [--mb 50,12,1]

Each size runs the real CLI in a fresh process and a fresh home: a JSONL
file of one good post, one post whose text is that many megabytes of words,
and one more good post. Reports wall seconds, the child's peak RSS, what was
stored and what was quarantined. Before the ingest bounds, a 50 MB post took
97 s and 10.8 GB (issue #12). Now a line over 16 MiB is quarantined unread,
and a shorter one has its text clipped to ``max_post_chars`` and its raw
record to 8 times that before anything embeds or indexes it.

Set ``PYTHONPATH`` to compare another checkout (the child inherits it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table


def write_file(path: Path, megabytes: float) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "before", "author": "a", "text": "a good post",
                             "created_at": "2026-11-01T00:00:00Z"}) + "\n")
        fh.write('{"id": "huge", "author": "a", "created_at": "2026-11-01T00:00:00Z", "text": "')
        target, i, chunk = int(megabytes * 1e6), 0, []
        written = 0
        while written < target:
            word = f"word{i % 250_000} "
            chunk.append(word)
            written += len(word)
            i += 1
            if len(chunk) >= 100_000:
                fh.write("".join(chunk))
                chunk = []
        fh.write("".join(chunk) + '"}\n')
        fh.write(json.dumps({"id": "after", "author": "a", "text": "another good post",
                             "created_at": "2026-11-01T00:00:00Z"}) + "\n")


def run(home: Path, *args: str) -> tuple[int, float, float, str]:
    """Exit code, seconds, peak RSS (MB) and output of one CLI run in its own process."""
    env = {**os.environ, "TOWNSQUARE_HOME": str(home), "TOWNSQUARE_EMBEDDER": "hash"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "townsquare", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = proc.stdout.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t0, usage.ru_maxrss / 1024, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", default="50,12,1", help="post sizes in megabytes, comma-separated")
    args = ap.parse_args()
    rows = []
    for mb in (float(x) for x in args.mb.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "huge.jsonl"
            write_file(path, mb)
            home = Path(tmp) / "home"
            code, secs, rss, out = run(home, "ingest", "jsonl", str(path), "-q")
            _, _, _, found = run(home, "search", "", "--json", "-n", "10")
            try:
                hits = {h["id"]: len(h["text"]) for h in json.loads(found)}
            except ValueError:
                hits = {}
            stored = ", ".join(f"{k.split(':')[1]} ({v:,} chars)" for k, v in sorted(hits.items()))
            rows.append([f"{mb:g} MB", code, round(secs, 1), round(rss), stored or out[-80:]])
    print(table("one huge post through `townsquare ingest jsonl`, hash embedder",
                ["post", "exit", "seconds", "peak RSS MB", "stored"], rows))


if __name__ == "__main__":
    main()
