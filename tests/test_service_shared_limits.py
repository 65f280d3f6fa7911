"""Rate limits shared through Redis: two replicas (two apps over one database and one
Redis) give a key its tier once; without Redis each process limits on its own."""

from __future__ import annotations

import asyncio
import os

import pytest

from service_helpers import POSTS, Api, serve_app
from townsquare.config import Tier

REDIS = os.environ.get("TOWNSQUARE_TEST_REDIS", "")
needs_redis = pytest.mark.skipif(
    not REDIS, reason="set TOWNSQUARE_TEST_REDIS=redis://127.0.0.1:6379/0 to run against Redis")
TIERS = {
    "tiny": Tier(requests_per_minute=3, tokens_per_minute=0, concurrent_requests=0,
                 monthly_tokens=0),
    "few-tokens": Tier(requests_per_minute=0, tokens_per_minute=50, concurrent_requests=0,
                       monthly_tokens=0),
}


async def _statuses(replicas: list[Api], key: str) -> list[int]:
    return [
        (await api.client.get("/v1/models", headers=Api.auth(key))).status_code
        for api in replicas
    ]


@needs_redis
async def test_two_replicas_share_one_requests_per_minute_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOWNSQUARE_REDIS_URL", REDIS)
    async with serve_app(tiers=TIERS) as a, serve_app(tiers=TIERS) as b:
        key = a.key("shared", "tiny")
        assert await _statuses([a, b, a], key) == [200, 200, 200]
        refused = await b.client.get("/v1/models", headers=Api.auth(key))
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "requests"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        other = a.key("other", "tiny")  # another key has its own budget
        assert await _statuses([b], other) == [200]


@needs_redis
async def test_tokens_spent_on_one_replica_count_on_the_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOWNSQUARE_REDIS_URL", REDIS)
    async with serve_app(POSTS, tiers=TIERS) as a, serve_app(tiers=TIERS) as b:
        h = Api.auth(a.key("spender", "few-tokens"))
        body = {"model": "townsquare", "messages": [{"role": "user", "content": "storm?"}]}
        first = await a.client.post("/v1/chat/completions", json=body, headers=h)
        assert first.status_code == 200 and first.json()["usage"]["total_tokens"] > 50
        status = 200
        for _ in range(40):  # the charge reaches Redis in the background
            status = (await b.client.post("/v1/chat/completions", json=body,
                                          headers=h)).status_code
            if status == 429:
                break
            await asyncio.sleep(0.05)
        assert status == 429


async def test_without_redis_each_process_limits_on_its_own() -> None:
    async with serve_app(tiers=TIERS) as a, serve_app(tiers=TIERS) as b:
        key = a.key("split", "tiny")
        assert await _statuses([a, b, a, b], key) == [200, 200, 200, 200]


async def test_an_unreachable_redis_falls_back_to_per_process_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOWNSQUARE_REDIS_URL", "redis://127.0.0.1:9/0")  # nothing listens
    async with serve_app(tiers=TIERS) as a:
        key = a.key("fallback", "tiny")
        assert await _statuses([a, a, a, a], key) == [200, 200, 200, 429]
