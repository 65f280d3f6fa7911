"""Sources inside the server: restarted with backoff, their status honest, serving goes on."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

from factories import make_post
from service_helpers import POSTS, Api, make_runtime, serve_app
from townsquare.ingest.supervisor import Supervisor, build_sources
from townsquare.model import Batch, Upsert
from townsquare.sources.base import Source, SourceError
from townsquare.sources.demo import DemoSource
from townsquare.sources.jetstream import JetstreamSource
from townsquare.store.base import SearchFilters


class FlakySource(Source):
    """Commits one post per run and crashes, ``failures`` times; then ends cleanly."""

    kind = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0

    @property
    def key(self) -> str:
        return "flaky:test"

    async def stream(self, cursor: str | None) -> AsyncIterator[Batch]:
        self.runs += 1
        post = make_post(f"flaky{self.runs}", "flaky", f"run {self.runs}", url=None)
        yield Batch([Upsert(post)], str(self.runs))
        if self.runs <= self.failures:
            raise RuntimeError(f"upstream hiccup #{self.runs}")


class BadConfigSource(FlakySource):
    kind = "badconfig"

    async def stream(self, cursor: str | None) -> AsyncIterator[Batch]:
        self.runs += 1
        raise SourceError("no such feed")
        yield  # pragma: no cover - makes this an async generator


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_failing_source_is_restarted_with_backoff(home: Path) -> None:
    runtime = make_runtime()
    flaky = FlakySource(failures=2)
    sup = Supervisor(runtime.store, runtime.embedder, [("flaky", flaky)], backoff_base=0.01,
                     backoff_cap=0.02)
    await sup.start()
    await wait_for(lambda: sup.statuses()[0].status == "stopped")
    status = sup.statuses()[0]
    assert flaky.runs == 3 and status.restarts == 2
    assert status.posts == 3 and status.last_error is None
    assert runtime.store.get_post("jsonl:flaky3") is not None
    await sup.stop()
    runtime.close()


async def test_a_misconfigured_source_fails_without_restarts(home: Path) -> None:
    runtime = make_runtime()
    bad = BadConfigSource(failures=0)
    sup = Supervisor(runtime.store, runtime.embedder, [("bad", bad)], backoff_base=0.01)
    await sup.start()
    await wait_for(lambda: sup.statuses()[0].status == "failed")
    (supervised,) = sup
    # Its task ends rather than backing off: once it has, no restart can follow.
    await wait_for(lambda: supervised.task is not None and supervised.task.done())
    assert bad.runs == 1 and sup.statuses()[0].last_error == "no such feed"
    await sup.stop()
    runtime.close()


async def test_an_unreachable_source_is_reported_while_the_api_serves(home: Path) -> None:
    runtime = make_runtime()
    port = closed_port()
    jet = JetstreamSource(f"ws://127.0.0.1:{port}/subscribe", reconnect_base=0.01,
                          reconnect_cap=0.05)
    sup = Supervisor(runtime.store, runtime.embedder, [("jetstream", jet)])
    async with serve_app(POSTS, runtime=runtime, supervisor=sup) as api:
        h = Api.auth(api.key("ops", "admin"))  # raw errors and /metrics: admin keys
        await wait_for(lambda: sup.statuses()[0].status == "unreachable")
        live = (await api.client.get("/v1/live", headers=h)).json()
        (source,) = live["sources"]
        assert source["status"] == "unreachable" and source["connected"] is False
        assert source["kind"] == "jetstream" and source["name"] == "jetstream"
        assert "refused" in (source["last_error"] or "").lower()
        assert live["posts_total"] == len(POSTS)
        search = await api.client.post("/v1/search", json={"query": "storm"}, headers=h)
        assert search.status_code == 200 and search.json()["data"]
        metrics = (await api.client.get("/metrics", headers=h)).text
        assert 'townsquare_source_up{source="jetstream"} 0.0' in metrics
        assert 'townsquare_source_status{source="jetstream",status="unreachable"} 1.0' in metrics
    assert sup.statuses()[0].status == "stopped"


async def test_demo_source_backlog_then_trickle_then_loop(home: Path) -> None:
    runtime = make_runtime()
    demo = DemoSource(interval=0.001, backlog=0.5, seed=1)
    total = len(demo.posts)
    sup = Supervisor(runtime.store, runtime.embedder, [("demo", demo)])
    await sup.start()
    await wait_for(lambda: sup.statuses()[0].posts > total + 5)
    status = sup.statuses()[0]
    assert status.status == "running" and status.connected
    assert status.newest_post_age_s is not None and status.newest_post_age_s < 60
    await sup.stop()
    newest = runtime.store.recent(SearchFilters(), 1)
    post = runtime.store.posts_by_keys([newest[0].key])[newest[0].key]
    assert post.source == "demo" and "~2" in post.id  # the second round has fresh ids
    assert abs((datetime.now(UTC) - post.created_at).total_seconds()) < 60
    runtime.close()


def test_demo_sample_is_a_realistic_bilingual_stream() -> None:
    posts = DemoSource().posts
    assert len(posts) >= 200
    langs = {p.lang for p in posts}
    assert langs == {"en", "fr"}
    assert len({p.author for p in posts}) >= 20
    assert len({p.text for p in posts}) == len(posts)
    assert all(p.source == "demo" and p.id.startswith("demo:") for p in posts)
    assert sum(1 for p in posts if p.hashtags) > 50


def test_sources_from_specs(home: Path) -> None:
    named = build_sources(["demo", "jetstream", "demo", " "])
    assert [n for n, _ in named] == ["demo", "jetstream"]
    assert isinstance(named[1][1], JetstreamSource)
