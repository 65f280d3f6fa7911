"""Shared pieces of the service tests: the real app in-process, keys, posts, a served process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from factories import make_post
from townsquare.config import Tier, load_settings
from townsquare.ingest import Ingestor
from townsquare.ingest.supervisor import Supervisor
from townsquare.llm.fake import FakeLLM
from townsquare.model import Post, Upsert
from townsquare.runtime import Runtime
from townsquare.service.app import create_app
from townsquare.service.deps import Services
from townsquare.service.gate.auth import create_key

REPO = Path(__file__).resolve().parents[1]
URL_RE = re.compile(r"Open (http://[^/\s]+)/ ")

#: A tier no test reaches, and one every test can exhaust quickly.
ROOMY = Tier(requests_per_minute=0, tokens_per_minute=0, concurrent_requests=0,
             monthly_tokens=0)
TINY = Tier(requests_per_minute=3, tokens_per_minute=0, concurrent_requests=0, monthly_tokens=0)


#: Posts dated by the clock, with example.org URLs (``post(pid, author, text, minutes_ago)``).
post = make_post


POSTS = [
    post("s1", "alice", "The train strike in Valmont is over, trains run again", 90,
         author_name="Alice A."),
    post("s2", "bob", "Grève des trains : la circulation reprend à Valmont", 30, lang="fr"),
    post("s3", "carol", "Storm warning for the coast tonight, gusts 110 km/h", 20),
    post("s4", "dave", "The storm knocked out power on the headland", 5),
]


@dataclass
class Api:
    """The app with its runtime, an in-process client, and helpers for keys."""

    app: Any
    runtime: Runtime
    client: httpx.AsyncClient
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    @property
    def llm(self) -> FakeLLM:
        llm = self.runtime.llm()
        assert isinstance(llm, FakeLLM)
        return llm

    def key(self, name: str, tier: str = "roomy") -> str:
        """A new key in a tier; remembered by name."""
        plaintext, _ = create_key(self.runtime.store, name, tier, self.runtime.settings.tiers)
        self.keys[name] = plaintext
        return plaintext

    @staticmethod
    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


def make_runtime(tiers: dict[str, Tier] | None = None) -> Runtime:
    settings = load_settings()
    settings.tiers = {**settings.tiers, "roomy": ROOMY, "tiny": TINY, **(tiers or {})}
    return Runtime(settings)


async def add_posts(runtime: Runtime, posts: list[Post]) -> None:
    """Commit posts the way ingest does (embedded, one transaction)."""
    from townsquare.ingest import IngestStats
    from townsquare.model import Batch

    ingestor = Ingestor(runtime.store, runtime.embedder)
    ingestor.commit("test", Batch([Upsert(p) for p in posts], None), IngestStats())


@asynccontextmanager
async def serve_app(
    posts: list[Post] | None = None,
    tiers: dict[str, Tier] | None = None,
    supervisor: Supervisor | None = None,
    runtime: Runtime | None = None,
    **app_options: Any,
) -> AsyncIterator[Api]:
    """The real app (lifespan included) behind an ASGITransport client."""
    runtime = runtime or make_runtime(tiers)
    if posts:
        await add_posts(runtime, posts)
    app = create_app(runtime, supervisor=supervisor, **app_options)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://ts.test",
                              timeout=30) as client,
        ):
            yield Api(app, runtime, client)
    finally:
        runtime.close()


def error_of(resp: httpx.Response) -> dict[str, Any]:
    """The OpenAI error object of a response, checking its exact shape."""
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert isinstance(err["code"], str) and err["code"]
    result: dict[str, Any] = err
    return result


# --- a real `townsquare serve` ------------------------------------------------------


@dataclass
class Served:
    base: str
    web_key: str
    home: Path
    proc: subprocess.Popen[str]
    output: list[str]


def townsquare(home: Path, *args: str, env: dict[str, str] | None = None,
               check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess against ``home``."""
    return subprocess.run(
        [sys.executable, "-m", "townsquare", "--home", str(home), *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, check=check,
        timeout=120,
    )


@contextmanager
def served(home: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """``townsquare serve --port 0 ARGS`` on loopback until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "townsquare", "--home", str(home), "serve", "--port", "0",
         "--log-level", "warning", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        match = None
        while match is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            match = URL_RE.search(line)
        assert match is not None, "serve did not print its URL:\n" + "".join(output)
        base = match.group(1)
        key = (home / "web-key").read_text(encoding="utf-8").strip()  # serve never prints it
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield Served(base, key, home, proc, output)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        output.append(rest or "")
