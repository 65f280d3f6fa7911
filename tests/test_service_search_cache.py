"""The search result cache: reused only while no write could have changed the answer."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from factories import make_post
from service_helpers import POSTS, Api, make_runtime, serve_app
from townsquare.ingest.supervisor import Supervisor
from townsquare.model import Batch, Upsert
from townsquare.service.gate.search_cache import SearchCache
from townsquare.sources.base import Source


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def test_hits_until_a_commit_a_new_vector_or_the_ttl() -> None:
    clock, version = Clock(), [0]
    cache = SearchCache(ttl_s=5, clock=clock, version=lambda: version[0])
    computed = []

    async def compute() -> bytes:
        computed.append(1)
        return str(len(computed)).encode()

    assert await cache.get("q", compute) == b"1"
    assert await cache.get("q", compute) == b"1"
    cache.invalidate()  # a commit in this process
    assert await cache.get("q", compute) == b"2"
    version[0] += 1  # a vector written by another process
    assert await cache.get("q", compute) == b"3"
    clock.t += 5
    assert await cache.get("q", compute) == b"4"
    assert await cache.get("other", compute) == b"5"
    assert cache.hits == 1 and cache.misses == 5


async def test_identical_requests_share_one_computation() -> None:
    cache = SearchCache(ttl_s=5)
    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def slow() -> bytes:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return b"result"

    first = asyncio.create_task(cache.get("q", slow))
    await started.wait()
    others = [asyncio.create_task(cache.get("q", slow)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await first == b"result"
    assert [await t for t in others] == [b"result"] * 5
    assert calls == 1


async def test_a_commit_during_a_computation_leaves_nothing_stale() -> None:
    cache = SearchCache(ttl_s=5)
    n = 0

    async def compute() -> bytes:
        nonlocal n
        n += 1
        cache.invalidate()  # a batch committed while the search ran
        return str(n).encode()

    assert await cache.get("q", compute) == b"1"
    assert await cache.get("q", compute) == b"2"


async def test_failures_are_not_cached_and_reach_every_waiter() -> None:
    cache = SearchCache(ttl_s=5)

    async def boom() -> bytes:
        await asyncio.sleep(0.01)
        raise RuntimeError("store broke")

    results = await asyncio.gather(*(cache.get("q", boom) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)

    async def fine() -> bytes:
        return b"ok"

    assert await cache.get("q", fine) == b"ok"


class OnePost(Source):
    """Yields one post when told to, then waits."""

    kind = "one"

    def __init__(self) -> None:
        self.go = threading.Event()  # set from the test; the source runs on its own loop

    @property
    def key(self) -> str:
        return "one:test"

    async def stream(self, cursor: str | None):  # type: ignore[override]
        while not self.go.is_set():
            await asyncio.sleep(0.01)
        post = make_post("fresh", "erin", "Breaking: storm surge floods the harbour", url=None)
        yield Batch([Upsert(post)], "1")
        await asyncio.Event().wait()


async def test_a_post_ingested_by_the_server_is_searchable_at_once(home: Path) -> None:
    runtime = make_runtime()
    source = OnePost()
    sup = Supervisor(runtime.store, runtime.embedder, [("one", source)])
    async with serve_app(POSTS, runtime=runtime, supervisor=sup, search_cache_s=60) as api:
        h = Api.auth(api.key("k"))
        query = {"query": "storm", "limit": 10}
        before: dict[str, object] = {}
        for _ in range(500):  # until the dense index has loaded and results are reused
            again = (await api.client.post("/v1/search", json=query, headers=h)).json()
            if again == before:
                break
            before = again
            await asyncio.sleep(0.01)
        assert again == before  # served from the cache (same as_of)
        assert "jsonl:fresh" not in [p["id"] for p in before["data"]]  # type: ignore[index]
        source.go.set()
        while sup.statuses()[0].posts == 0:
            await asyncio.sleep(0.01)
        after = (await api.client.post("/v1/search", json=query, headers=h)).json()
        assert "jsonl:fresh" in [p["id"] for p in after["data"]]
