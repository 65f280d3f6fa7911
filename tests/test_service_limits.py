"""Per-key limits: sliding windows, concurrency, the monthly quota, and the headers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx

from service_helpers import POSTS, Api, error_of, make_runtime, serve_app
from townsquare.config import Tier
from townsquare.service.gate.auth import Principal
from townsquare.service.gate.limits import MonthlyQuota, RateLimiter, Window, format_reset


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def who(tier: Tier, key_id: int = 1) -> Principal:
    return Principal(key_id, "acme", "abcd1234", "custom", tier)


def test_window_slides_instead_of_resetting_at_the_minute() -> None:
    w = Window(60)
    w.add(0, 5)
    w.add(30, 5)
    assert w.used(59) == 10
    assert w.used(60.5) == 5  # the first amount left, the second is still in
    assert w.wait(60.5, 5) == 29.5  # until the one at t=30 leaves
    assert w.wait(60.5, 6) == 0
    assert w.used(91) == 0


def test_requests_per_minute_refuses_then_recovers() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    p = who(Tier(requests_per_minute=2, concurrent_requests=0))
    for _ in range(2):
        assert limiter.acquire(p, uses_tokens=False) is None
        limiter.release(p)
    refusal = limiter.acquire(p, uses_tokens=False)
    assert refusal is not None and refusal.kind == "requests"
    assert refusal.retry_after == 60
    clock.t += 60.1
    assert limiter.acquire(p, uses_tokens=False) is None


def test_tokens_per_minute_apply_only_to_token_routes() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    p = who(Tier(requests_per_minute=0, tokens_per_minute=100, concurrent_requests=0))
    limiter.charge_tokens(p, 150)
    assert limiter.acquire(p, uses_tokens=False) is None
    refusal = limiter.acquire(p, uses_tokens=True)
    assert refusal is not None and refusal.kind == "tokens"
    headers = limiter.headers(p)
    assert headers["x-ratelimit-limit-tokens"] == "100"
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert "x-ratelimit-limit-requests" not in headers  # unlimited figures are not sent


def test_concurrency_slots_are_released() -> None:
    limiter = RateLimiter(Clock())
    p = who(Tier(requests_per_minute=0, concurrent_requests=1))
    assert limiter.acquire(p, uses_tokens=False) is None
    refusal = limiter.acquire(p, uses_tokens=False)
    assert refusal is not None and refusal.kind == "concurrency"
    limiter.release(p)
    assert limiter.acquire(p, uses_tokens=False) is None


def test_reset_durations_read_like_openais() -> None:
    assert format_reset(0.02) == "20ms"
    assert format_reset(1.5) == "1.5s"
    assert format_reset(360) == "6m0s"


async def test_monthly_quota_counts_the_ledger_and_local_charges(home: Path) -> None:
    runtime = make_runtime()
    store = runtime.store
    now = datetime(2026, 11, 20, tzinfo=UTC)
    store.record_usage(1, "townsquare", 300, 200, "/v1/chat/completions",
                       at=datetime(2026, 11, 2, tzinfo=UTC))
    store.record_usage(1, "townsquare", 5000, 0, "/v1/chat/completions",
                       at=datetime(2026, 10, 30, tzinfo=UTC))  # last month: not counted
    quota = MonthlyQuota(store, now=lambda: now)
    p = who(Tier(monthly_tokens=1000))
    assert await quota.used(1) == 500
    assert await quota.check(p) is None
    quota.charge(1, 600)
    refusal = await quota.check(p)
    assert refusal is not None and refusal.kind == "insufficient_quota"
    assert not refusal.retryable and "2026-12-01" in refusal.message
    runtime.close()


async def test_429_carries_retry_after_and_ratelimit_headers() -> None:
    async with serve_app(POSTS, tiers={"two": Tier(requests_per_minute=2, tokens_per_minute=50,
                                                   concurrent_requests=0)}) as api:
        key = api.key("two", tier="two")
        ok = await api.client.get("/v1/models", headers=Api.auth(key))
        assert ok.headers["x-ratelimit-limit-requests"] == "2"
        assert ok.headers["x-ratelimit-remaining-requests"] == "1"
        assert ok.headers["x-ratelimit-limit-tokens"] == "50"
        assert ok.headers["x-ratelimit-reset-requests"].endswith("s")
        await api.client.get("/v1/models", headers=Api.auth(key))
        refused = await api.client.get("/v1/models", headers=Api.auth(key))
        assert refused.status_code == 429
        assert error_of(refused)["type"] == "requests"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert int(refused.headers["retry-after-ms"]) > 0
        for name in ("limit", "remaining", "reset"):
            assert f"x-ratelimit-{name}-requests" in refused.headers
            assert f"x-ratelimit-{name}-tokens" in refused.headers
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"


async def test_tokens_per_minute_stop_chat_but_not_search() -> None:
    async with serve_app(POSTS, tiers={"t": Tier(requests_per_minute=0, tokens_per_minute=10,
                                                 concurrent_requests=0)}) as api:
        key = api.key("t", tier="t")
        chat = {"model": "townsquare", "messages": [{"role": "user", "content": "storm?"}]}
        first = await api.client.post("/v1/chat/completions", json=chat, headers=Api.auth(key))
        assert first.status_code == 200 and first.json()["usage"]["total_tokens"] > 10
        second = await api.client.post("/v1/chat/completions", json=chat, headers=Api.auth(key))
        assert second.status_code == 429 and error_of(second)["type"] == "tokens"
        search = await api.client.post("/v1/search", json={"query": "storm"},
                                       headers=Api.auth(key))
        assert search.status_code == 200


async def test_monthly_quota_refuses_with_insufficient_quota_and_no_retry() -> None:
    async with serve_app(POSTS, tiers={"m": Tier(requests_per_minute=0, tokens_per_minute=0,
                                                 concurrent_requests=0, monthly_tokens=10)}) as api:
        key = api.key("m", tier="m")
        chat = {"model": "townsquare", "messages": [{"role": "user", "content": "storm?"}]}
        assert (await api.client.post("/v1/chat/completions", json=chat,
                                      headers=Api.auth(key))).status_code == 200
        resp = await api.client.post("/v1/chat/completions", json=chat, headers=Api.auth(key))
        assert resp.status_code == 429
        assert error_of(resp)["code"] == "insufficient_quota"
        assert resp.headers["x-should-retry"] == "false"


async def test_concurrent_streams_past_the_tier_are_refused() -> None:
    async with serve_app(POSTS, tiers={"one": Tier(requests_per_minute=0, tokens_per_minute=0,
                                                   concurrent_requests=1)}) as api:
        key = api.key("one", tier="one")
        api.llm.enqueue(["slow ", "answer ", "[1]"], delay_s=0.3)
        chat = {"model": "townsquare", "stream": True,
                "messages": [{"role": "user", "content": "storm?"}]}
        # (ASGITransport buffers whole responses, so the stream runs as a task.)
        first = asyncio.create_task(
            api.client.post("/v1/chat/completions", json=chat, headers=Api.auth(key))
        )
        state = api.services.limiter.state(api.runtime.store.list_api_keys()[-1].id)
        while state.in_flight == 0:
            await asyncio.sleep(0.01)
        second = await api.client.get("/v1/models", headers=Api.auth(key))
        assert second.status_code == 429 and error_of(second)["type"] == "concurrency"
        assert (await first).status_code == 200
        third = await api.client.get("/v1/models", headers=Api.auth(key))
        assert third.status_code == 200


async def test_a_busy_key_does_not_slow_down_another() -> None:
    async with serve_app(POSTS, tiers={"tiny": Tier(requests_per_minute=1)}) as api:
        a, b = api.key("a", tier="tiny"), api.key("b", tier="tiny")
        results = await asyncio.gather(
            *[api.client.get("/v1/models", headers=Api.auth(k)) for k in (a, a, b)]
        )
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200, 200, 429]
        assert isinstance(results[0], httpx.Response)



async def test_live_status_polling_does_not_use_up_a_free_key() -> None:
    """The web page polls /v1/live every few seconds; that must not starve chat."""
    async with serve_app(POSTS, tiers={"two": Tier(requests_per_minute=2, tokens_per_minute=50,
                                                   concurrent_requests=0)}) as api:
        key = api.key("poller", tier="two")
        for _ in range(5):  # more than the tier's 2 requests/min
            assert (await api.client.get("/v1/live", headers=Api.auth(key))).status_code == 200
        assert (await api.client.get("/v1/models", headers=Api.auth(key))).status_code == 200
        assert (await api.client.get("/v1/live")).status_code == 401  # still needs a key
