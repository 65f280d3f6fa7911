"""Real processes: tailing a growing file, and SIGKILL mid-stream."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import ago, write_jsonl
from townsquare.store.sqlite import SQLiteStore


def cli(*args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Run the CLI in the background; its output goes to ``log`` (a pipe nobody
    reads could fill up and stall the child)."""
    out = log.open("wb") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "townsquare", *args], stdout=out, stderr=subprocess.STDOUT
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


def search_ids(query: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "townsquare", "search", query, "--json", "--mode", "lexical"],
        capture_output=True, check=True,
    ).stdout
    return [h["id"] for h in json.loads(out)]


def test_appended_post_is_found_while_following(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "live.jsonl", [
        {"id": "a", "author": "x", "text": "warming up", "created_at": ago(minutes=1)}
    ])
    log = tmp_path / "ingest.log"
    proc = cli("ingest", "jsonl", str(f), "--follow", "-q", log=log)
    try:
        deadline = time.monotonic() + 60
        while "jsonl:a" not in search_ids("warming"):
            assert time.monotonic() < deadline, f"ingest never started: {log.read_text()}"
            time.sleep(0.05)
        # Appended in two writes, like a writer flushing mid-line.
        with f.open("a") as fh:
            fh.write('{"id": "b", "author": "y", "text": "zebra crossing ')
            fh.flush()
            time.sleep(0.2)
            fh.write(f'spotted", "created_at": "{ago(seconds=1)}"}}\n')
        appended = time.monotonic()
        found_after = None
        while time.monotonic() - appended < 60:
            if "jsonl:b" in search_ids("zebra"):
                found_after = time.monotonic() - appended
                break
            time.sleep(0.02)
        assert found_after is not None, (
            f"appended post never became searchable; ingest said: {log.read_text()}"
        )
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode == 0, log.read_text()


def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, home: Path
) -> None:
    n = 60_000
    f = tmp_path / "big.jsonl"
    with f.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": str(i), "author": f"u{i % 97}",
                                 "text": f"post number {i} about topic{i % 13}",
                                 "created_at": 1_700_000_000 + i}) + "\n")
    db = home / "townsquare.db"
    proc = cli("ingest", "jsonl", str(f), "-q", log=tmp_path / "first.log")
    # Kill once some batches are committed but (very likely) before the end.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                    if c.execute("SELECT count(*) FROM posts").fetchone()[0] > 4000:
                        break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        partial = c.execute("SELECT count(*) FROM posts").fetchone()[0]
    assert partial > 0
    rerun = cli("ingest", "jsonl", str(f), "-q", log=tmp_path / "rerun.log")
    assert rerun.wait(timeout=120) == 0
    store = SQLiteStore(db, read_only=True)
    try:
        assert store.integrity_check() == "ok"
        conn = store.db.reader()
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM posts").fetchone() == (n, n)
        assert conn.execute(
            "SELECT count(*) FROM posts_fts WHERE posts_fts MATCH 'number'"
        ).fetchone()[0] == n
    finally:
        store.close()
    with sqlite3.connect(db) as c:  # FTS5's own consistency check against the content table
        c.execute("INSERT INTO posts_fts(posts_fts) VALUES ('integrity-check')")
