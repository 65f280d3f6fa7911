"""Loopback load test of ``townsquare serve``: throughput, latency, errors, memory.

    python benchmarks/bench_service.py [--duration 60] [--clients 50] [--posts 100000]
                                       [--embedder minilm-static] [--home DIR]
                                       [--tokens 200] [--token-delay 0.005] [--runs 10]

Builds (or reuses, with ``--home``) a data directory holding ``--posts``
generated posts, then runs a real ``townsquare serve`` subprocess on
127.0.0.1 (no ingest, fake LLM) and drives it from this process with
``--clients`` concurrent keep-alive httpx clients:

1. search: ``POST /v1/search`` (hybrid, a mix of queries and filters) for ``--duration`` s;
2. chat: ``POST /v1/chat/completions`` (not streamed; the fake LLM answers at once, so
   this measures everything but the model: retrieval, prompt, citations, conversation
   writes, metering) for ``--duration`` s;
3. streamed-chat overhead: ``--runs`` streamed chats through the official ``openai``
   SDK while the fake LLM emits ``--tokens`` tokens ``--token-delay`` s apart: the
   answer's tokens over the time from the request to its last content chunk, against
   the backend's tokens over its own generation time (the same scripted generation
   timed in-process). The verification gate streams whole checked sentences, so a
   per-chunk rate no longer says anything; the whole answer's time does (retrieval,
   prompt, gate and HTTP included).

Each phase reports requests/s, p50/p99 latency, responses by status (and transport
errors), and the server's RSS (current and peak). Targets (issue 4, 2 cores):
``/v1/search`` >= 500 requests/s over 100,000 posts; streamed-chat API overhead
<= 5% of the backend's tokens/s. The clients share the machine's cores with the
server, as a loopback test must.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import percentile, serve, table, write_posts

QUERIES = [
    "train strike delays", "storm warning", "phone software update bug", "election debate",
    "coffee bakery", "grève métro", "team coach injury", "flood rain forecast",
    "server outage", "cheese market", "vote parliament bill", "platform cancelled",
]
FILTERS: list[dict[str, Any]] = [
    {"since": "1d"}, {"since": "3d"}, {}, {"since": "7d", "until": "3d"}, {"langs": ["fr"]},
]
CONFIG = """
[tiers.bench]
requests_per_minute = 0
tokens_per_minute = 0
concurrent_requests = 0
monthly_tokens = 0

[tiers.business]
requests_per_minute = 600
tokens_per_minute = 1000000
concurrent_requests = 32
monthly_tokens = 0
"""


def cli(home: Path, *args: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "townsquare", "--home", str(home), *args],
        capture_output=True, text=True, env=env, check=True,
    )
    return out.stdout


def prepare(home: Path, posts: int, embedder: str, env: dict[str, str]) -> str:
    """Config with an unlimited tier, the posts ingested, and a key in that tier."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(CONFIG)
    marker = home / f".bench-{posts}-{embedder}"
    if not marker.exists():
        with tempfile.TemporaryDirectory() as tmp:
            path = write_posts(Path(tmp) / "posts.jsonl", posts)
            t0 = time.perf_counter()
            cli(home, "ingest", "jsonl", str(path), "--quiet", "--embedder", embedder, env=env)
            print(f"ingested {posts:,} posts in {time.perf_counter() - t0:,.0f} s")
        marker.touch()
    key: str = json.loads(cli(home, "keys", "create", "--tier", "bench", "--name", "bench",
                              "--json", env=env))["key"]
    return key


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def row(self, rss: tuple[float, float]) -> list[object]:
        n = len(self.latencies)
        other = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.statuses.items()) if k != "200")
        return [self.name, n, n / self.seconds if self.seconds else 0.0,
                percentile(self.latencies, 50) * 1000, percentile(self.latencies, 99) * 1000,
                self.statuses.get("200", 0), other or "none", rss[0], rss[1]]


def search_body(rng: random.Random) -> dict[str, Any]:
    return {"query": rng.choice(QUERIES), "limit": 10, **rng.choice(FILTERS)}


def chat_body(rng: random.Random) -> dict[str, Any]:
    return {"model": rng.choice(["townsquare", "townsquare-fun"]),
            "messages": [{"role": "user", "content": f"what about {rng.choice(QUERIES)}?"}]}


async def load(base: str, key: str, path: str, make_body: Any, clients: int,
               duration: float, name: str, raw: bool = False) -> Phase:
    """``clients`` concurrent clients, each with its own keep-alive connection."""
    phase = Phase(name)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as warm:
        await warm.post(path, json=make_body(random.Random(0)))  # warm-up, not counted
    deadline = time.perf_counter() + duration

    async def httpx_worker(seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                try:
                    resp = await client.post(path, json=make_body(rng))
                    phase.statuses[str(resp.status_code)] += 1
                except httpx.HTTPError as exc:
                    phase.statuses[type(exc).__name__] += 1
                    continue
                phase.latencies.append(time.perf_counter() - t)

    async def raw_worker(seed: int) -> None:
        rng = random.Random(seed)
        host, _, port = base.removeprefix("http://").partition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                "Content-Type: application/json\r\n").encode()
        try:
            while time.perf_counter() < deadline:
                body = json.dumps(make_body(rng)).encode()
                t = time.perf_counter()
                writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                status, length = await _read_head(reader)
                await reader.readexactly(length)
                phase.statuses[str(status)] += 1
                phase.latencies.append(time.perf_counter() - t)
        except (OSError, asyncio.IncompleteReadError) as exc:
            phase.statuses[type(exc).__name__] += 1
        finally:
            writer.close()

    worker = raw_worker if raw else httpx_worker
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    phase.seconds = time.perf_counter() - t0
    return phase


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, int]:
    """Status and Content-Length of an HTTP/1.1 response (the server always sends it)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(lines[0].split()[1]), length


def script(tokens: int, delay: float, runs: int) -> list[dict[str, Any]]:
    words = [f"w{i} " for i in range(tokens)]
    return [{"chunks": words, "delay_s": delay} for _ in range(runs)]


def backend_rate(tokens: int, delay: float, runs: int) -> list[float]:
    """The fake LLM's own tokens/s (call to last token), timed in-process."""
    from townsquare.llm.base import ChatMessage
    from townsquare.llm.fake import FakeLLM, parse_response

    llm = FakeLLM()
    rates = []
    for item in script(tokens, delay, runs):
        llm._queue.append(parse_response(item))

        async def one() -> float:
            t0, count = time.perf_counter(), 0
            async for _ in llm.generate([ChatMessage("user", "x")]):
                count += 1
            return count / (time.perf_counter() - t0)

        rates.append(asyncio.run(one()))
    return rates


def api_rate(base: str, key: str, runs: int, tokens: int) -> tuple[list[float], list[float]]:
    """The backend's ``tokens`` over request-to-last-content-chunk as the SDK client sees
    it, and the time to the first content chunk."""
    import openai

    client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
    rates, ttfts = [], []
    for i in range(runs):
        t0 = time.perf_counter()
        stamps = []
        stream = client.chat.completions.create(
            model="townsquare", stream=True,
            messages=[{"role": "user", "content": f"what about {QUERIES[i % len(QUERIES)]}?"}],
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                stamps.append(time.perf_counter())
        ttfts.append(stamps[0] - t0)
        rates.append(tokens / (stamps[-1] - t0))
    return rates, ttfts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per load phase")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--posts", type=int, default=100_000)
    ap.add_argument("--embedder", default="minilm-static")
    ap.add_argument("--home", type=Path, help="data directory to build or reuse")
    ap.add_argument("--tokens", type=int, default=200, help="tokens per streamed answer")
    ap.add_argument("--token-delay", type=float, default=0.005,
                    help="fake LLM seconds between tokens (0.005: 200 tokens/s)")
    ap.add_argument("--runs", type=int, default=10, help="streamed chats to time")
    ap.add_argument("--skip", nargs="*", default=[], choices=["search", "chat", "stream"])
    ap.add_argument("--client", choices=["httpx", "raw", "both"], default="httpx",
                    help="load clients: httpx.AsyncClient each, or a minimal asyncio "
                    "HTTP/1.1 client (5-10x less client CPU: shows the server's capacity)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    home = args.home or Path(tmp.name) / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOWNSQUARE_")}
    env.update(TOWNSQUARE_HOME=str(home), TOWNSQUARE_LLM="fake",
               TOWNSQUARE_EMBEDDER=args.embedder)
    key = prepare(home, args.posts, args.embedder, env)
    print(f"{args.clients} clients, {args.duration:.0f} s per phase, {args.posts:,} posts, "
          f"embedder {args.embedder}, {os.cpu_count()} CPUs")

    rows = []
    if "search" not in args.skip or "chat" not in args.skip:
        kinds = ["httpx", "raw"] if args.client == "both" else [args.client]
        with serve(home, env) as server:
            for name, path, body in (("search", "/v1/search", search_body),
                                     ("chat (fake LLM)", "/v1/chat/completions", chat_body)):
                if name.split()[0] in args.skip:
                    continue
                for kind in kinds:
                    phase = asyncio.run(load(server.base, key, path, body, args.clients,
                                             args.duration, f"{name}, {kind} clients",
                                             raw=kind == "raw"))
                    rows.append(phase.row(server.memory_mb()))
        print(table("load test", ["phase", "requests", "req/s", "p50 ms", "p99 ms", "200",
                                  "other statuses / errors", "RSS MB", "peak RSS MB"], rows))

    if "stream" not in args.skip:
        script_path = home / "bench-llm-script.json"
        script_path.write_text(json.dumps(script(args.tokens, args.token_delay, args.runs)))
        with serve(home, {**env, "TOWNSQUARE_FAKE_LLM_SCRIPT": str(script_path)}) as server:
            api, ttft = api_rate(server.base, key, args.runs, args.tokens)
        own = backend_rate(args.tokens, args.token_delay, args.runs)
        b, a = percentile(own, 50), percentile(api, 50)
        print(table(
            f"streamed chat: {args.tokens} tokens, {args.token_delay * 1000:g} ms apart, "
            f"{args.runs} runs (medians)",
            ["backend tokens/s", "API tokens/s, whole answer (SDK client)", "overhead %",
             "TTFT ms"],
            [[b, a, (1 - a / b) * 100, percentile(ttft, 50) * 1000]],
        ))


if __name__ == "__main__":
    main()
