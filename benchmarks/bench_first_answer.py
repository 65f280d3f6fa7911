"""Time from `townsquare serve --demo` in a fresh home to listening and to the first answer token.

    python benchmarks/bench_first_answer.py [--rounds 2]

Each row starts a real server (this interpreter's townsquare) in a new home,
polls ``/healthz``, then streams one chat answer over HTTP with the home's web
key and times the first content token. ``new user`` also starts from an empty
per-user table cache (``TOWNSQUARE_TABLE_CACHE``), so the default embedder
builds its token table first; ``known user`` reuses the cache the first row
filled, as every later home of that user does. Issue #13: no tens of seconds
in a user's first command.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table

QUESTION = "what are people saying about the strike?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_run(cache: Path) -> tuple[float, float, float]:
    """Seconds to listening, to the first answer token, to the whole answer."""
    home = Path(tempfile.mkdtemp(prefix="ts-first-"))
    env = dict(os.environ, TOWNSQUARE_HOME=str(home), TOWNSQUARE_TABLE_CACHE=str(cache))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    with open(home / "serve.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "townsquare", "serve", "--demo", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"serve exited: {(home / 'serve.log').read_text()[-2000:]}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        listening = time.monotonic() - t0
        key = (home / "web-key").read_text().strip()
        body = {"model": "townsquare", "stream": True,
                "messages": [{"role": "user", "content": QUESTION}]}
        first = None
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600,
                          headers={"Authorization": f"Bearer {key}"}) as resp:
            for line in resp.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                delta = (json.loads(line[6:]).get("choices") or [{}])[0].get("delta", {})
                if delta.get("content") and first is None:
                    first = time.monotonic() - t0
        if first is None:
            raise SystemExit("the answer had no content")
        return listening, first, time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    rows = []
    for r in range(args.rounds):
        cache = Path(tempfile.mkdtemp(prefix=f"ts-cache{r}-"))
        for label in ("new user", "known user"):
            listening, first, whole = one_run(cache)
            rows.append([label, f"{listening:.1f}", f"{first:.1f}", f"{whole:.1f}"])
    print(table("`townsquare serve --demo`, fresh home, one streamed chat answer",
                ["who", "listening s", "first token s", "whole answer s"], rows))


if __name__ == "__main__":
    main()
