"""Abuse on loopback: ``/healthz`` under oversized questions, webhook isolation.

    python benchmarks/bench_abuse.py [--before-src /work/main/src] [--seconds 10]
                                     [--webhook-seconds 30] [--question-chars 900000]

1. ``/healthz`` p50/p99/max while 3 clients keep POSTing ``--question-chars``
   character questions to ``/v1/chat/completions`` on a real ``townsquare serve``
   (no ingest, fake LLM), probing every 50 ms for ``--seconds`` s. Rows: the code
   under test with its default message cap (the questions get 400s); questions
   just under the cap (``--at-cap``: the worst a client can still send); the cap
   lifted (``TOWNSQUARE_MAX_MESSAGE_CHARS``), which shows what moving the policy
   and query regexes off the event loop buys on its own (little: one regex call
   over a megabyte holds the GIL throughout); and ``--before-src`` (an older
   checkout's ``src``, e.g. main before issue 12) if given.
2. Webhook isolation: two keys' watches match one post every 3 s; key 1's receiver
   takes each request and never answers, key 2's answers at once. Counts key 2's
   deliveries during ``--webhook-seconds`` s (10 are sent per 30 s), for the code
   under test and ``--before-src``.

Each variant runs in a subprocess with its own ``PYTHONPATH``, so one invocation
prints the before/after table.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from _common import serve

HERE = Path(__file__).resolve()
SRC = HERE.parents[1] / "src"


# --- part 1: /healthz under oversized questions ------------------------------------


def healthz_under_abuse(seconds: float, chars: int, env_extra: dict[str, str]) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="bench-abuse-"))
    env = {**os.environ, "TOWNSQUARE_HOME": str(home), "TOWNSQUARE_LLM": "fake",
           "TOWNSQUARE_EMBEDDER": "hash", "TOWNSQUARE_STORY_REFRESH_S": "0", **env_extra}
    with serve(home, env, log_level="error") as server:
        base = server.base
        key = (home / "web-key").read_text().strip()
        question = ("is the storm over in valmont today? " * (chars // 36 + 1))[:chars]
        body = {"model": "townsquare", "messages": [{"role": "user", "content": question}]}
        stop = time.monotonic() + seconds
        statuses: dict[int, int] = {}

        def abuser() -> None:
            with httpx.Client(base_url=base, timeout=120,
                              headers={"Authorization": f"Bearer {key}"}) as client:
                while time.monotonic() < stop:
                    try:
                        code = client.post("/v1/chat/completions", json=body).status_code
                    except httpx.HTTPError:
                        code = -1
                    statuses[code] = statuses.get(code, 0) + 1

        threads = [threading.Thread(target=abuser) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # the abusers are in
        latencies = []
        with httpx.Client(base_url=base, timeout=60) as probe:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                probe.get("/healthz")
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.05)
        for t in threads:
            t.join()
        latencies.sort()
        return {
            "probes": len(latencies),
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
            "max_ms": latencies[-1] * 1000,
            "chat_statuses": statuses,
        }


# --- part 2: webhook isolation ------------------------------------------------------


def _receiver(stall: bool) -> tuple[ThreadingHTTPServer, list[float]]:
    got: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            if stall:
                time.sleep(3600)
            got.append(time.monotonic())
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, got


def webhook_isolation(seconds: float) -> dict[str, Any]:
    from datetime import UTC, datetime

    from townsquare.model import Post

    stalled, _ = _receiver(stall=True)
    good, got = _receiver(stall=False)
    home = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    try:  # watches in the store (townsquare.watches)
        from townsquare.store import open_store
        from townsquare.watches import (
            DestinationGuard,
            SavedWatches,
            Watch,
            WatchHub,
            WebhookDispatcher,
        )

        hub: Any = WatchHub(SavedWatches(open_store(str(home / "hooks.db"), home)),
                            webhooks=WebhookDispatcher(DestinationGuard(["127.0.0.1"])))
    except ImportError:  # an older tree: watches.json, maybe one shared sender
        from townsquare.service import watches

        kwargs: dict[str, Any] = {}
        if "webhooks" in inspect.signature(watches.WatchHub).parameters:
            from townsquare.service.webhooks import DestinationGuard as Guard
            from townsquare.service.webhooks import WebhookDispatcher as Dispatcher

            kwargs["webhooks"] = Dispatcher(Guard(["127.0.0.1"]))
        hub = watches.WatchHub(watches.WatchFile(home / "watches.json"), **kwargs)
        Watch = watches.Watch  # type: ignore[misc,assignment]
    for owner, server in ((1, stalled), (2, good)):
        hub.saved.add(Watch(
            id=f"w{owner}", owner=owner, query="flood", min_terms=1,
            webhook_url=f"http://127.0.0.1:{server.server_address[1]}/hook"))
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < seconds:
        post = Post(id=f"jsonl:{sent}", source="jsonl", author="a", text=f"flood {sent}",
                    created_at=datetime.now(UTC))
        hub.listener([post], [])
        sent += 1
        time.sleep(3.0)
    delivered = sum(1 for t in got if t - start <= seconds + 0.5)
    return {"sent_each": sent, "delivered_good": delivered}


# --- driver -------------------------------------------------------------------------


def run_part(src: Path, part: str, args: argparse.Namespace, env_extra: dict[str, str],
             chars: int = 0) -> Any:
    env = {**os.environ, "PYTHONPATH": f"{src}:{HERE.parent}", **env_extra}
    out = subprocess.run(
        [sys.executable, str(HERE), "--worker", part, "--seconds", str(args.seconds),
         "--webhook-seconds", str(args.webhook_seconds),
         "--question-chars", str(chars or args.question_chars)],
        env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"{part} on {src} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-src", type=Path, help="an older checkout's src directory")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--webhook-seconds", type=float, default=30.0)
    parser.add_argument("--question-chars", type=int, default=900_000)
    parser.add_argument("--at-cap", type=int, default=15_900,
                        help="question length just under the default message cap")
    parser.add_argument("--worker", choices=["healthz", "webhooks"], help=argparse.SUPPRESS)
    parser.add_argument("--skip-webhooks", action="store_true")
    args = parser.parse_args()
    if args.worker == "healthz":
        print(json.dumps(healthz_under_abuse(args.seconds, args.question_chars, {})))
        return
    if args.worker == "webhooks":
        print(json.dumps(webhook_isolation(args.webhook_seconds)))
        return

    big = args.question_chars
    variants: list[tuple[str, Path, dict[str, str], int]] = [
        ("this checkout", SRC, {}, big),
        ("this checkout, at the cap", SRC, {}, args.at_cap),
        ("this checkout, cap lifted", SRC, {"TOWNSQUARE_MAX_MESSAGE_CHARS": str(big * 2)}, big),
    ]
    if args.before_src:
        variants.append(("before", args.before_src, {}, big))
    print(f"/healthz latency while 3 clients send long questions to /v1/chat/completions "
          f"({args.seconds:.0f} s, a probe every 50 ms)")
    print(f"{'code':<28} {'chars':>9} {'probes':>7} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}"
          "  chat statuses")
    for name, src, extra, chars in variants:
        r = run_part(src, "healthz", args, extra, chars)
        print(f"{name:<28} {chars:>9,} {r['probes']:>7} {r['p50_ms']:>9.1f} {r['p99_ms']:>9.1f} "
              f"{r['max_ms']:>9.1f}  {r['chat_statuses']}")
    if args.skip_webhooks:
        return
    print()
    print(f"Webhook isolation: deliveries to key 2's receiver in {args.webhook_seconds:.0f} s "
          "while key 1's receiver stalls")
    print(f"{'code':<28} {'sent to each':>13} {'delivered (key 2)':>18}")
    for name, src, _, _ in [v for v in variants if v[0] in ("this checkout", "before")]:
        r = run_part(src, "webhooks", args, {})
        print(f"{name:<28} {r['sent_each']:>13} {r['delivered_good']:>18}")


if __name__ == "__main__":
    main()
