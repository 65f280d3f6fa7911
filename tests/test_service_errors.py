"""Every failure answers in OpenAI's error shape, with the right status (pinned here)."""

from __future__ import annotations

import asyncio
import sqlite3

from service_helpers import POSTS, Api, error_of, serve_app
from townsquare.config import Tier


async def _status(api: Api, status: int) -> None:
    key = api.key("errors")
    h = Api.auth(key)
    c = api.client
    if status == 400:
        for resp in (
            await c.post("/v1/search", json={"query": "x", "limit": 0}, headers=h),
            await c.post("/v1/search", content=b"{not json", headers={**h,
                         "content-type": "application/json"}),
            await c.post("/v1/search", json={"query": "x", "since": "yesterday-ish"}, headers=h),
            await c.post("/v1/chat/completions", json={"model": "townsquare", "messages": []},
                         headers=h),
            await c.post("/v1/chat/completions", headers=h, json={
                "model": "townsquare", "messages": [{"role": "user", "content": "hi"}],
                "search_parameters": {"mode": "sometimes"}}),
        ):
            assert resp.status_code == 400, resp.text
            assert error_of(resp)["type"] == "invalid_request_error"
    elif status == 401:
        for headers in ({}, {"Authorization": "Bearer ts-00000000-" + "x" * 43},
                        {"Authorization": "Basic abc"}):
            resp = await c.get("/v1/models", headers=headers)
            assert resp.status_code == 401
            assert resp.headers["www-authenticate"] == "Bearer"
            assert error_of(resp)["code"] in ("missing_api_key", "invalid_api_key")
    elif status == 403:
        gold = api.key("gold-customer", tier="roomy")
        api.runtime.store.db.writer.execute(  # type: ignore[attr-defined]
            "UPDATE api_keys SET tier = 'gold' WHERE name = 'gold-customer'"
        )
        api.services.auth.forget()
        resp = await c.get("/v1/models", headers=Api.auth(gold))
        assert resp.status_code == 403
        assert error_of(resp)["code"] == "tier_not_configured"
    elif status == 404:
        for resp in (
            await c.get("/v1/nothing-here", headers=h),
            await c.get("/v1/posts/jsonl:missing", headers=h),
            await c.get("/v1/conversations/conv_missing", headers=h),
            await c.post("/v1/chat/completions", headers=h, json={
                "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        ):
            assert resp.status_code == 404, resp.text
            error_of(resp)
    elif status == 405:
        resp = await c.get("/v1/search", headers=h)
        assert resp.status_code == 405
        assert error_of(resp)["code"] == "method_not_allowed"
    elif status == 413:
        resp = await c.post("/v1/search", headers=h,
                            json={"query": "x" * 5000})  # the app below allows 4 KB
        assert resp.status_code == 413
        assert error_of(resp)["code"] == "request_too_large"
    elif status == 429:
        tiny = api.key("tiny-customer", tier="tiny")
        for _ in range(3):
            assert (await c.get("/v1/models", headers=Api.auth(tiny))).status_code == 200
        resp = await c.get("/v1/models", headers=Api.auth(tiny))
        assert resp.status_code == 429
        assert error_of(resp)["code"] == "rate_limit_exceeded"
        assert int(resp.headers["retry-after"]) >= 1
    elif status == 500:
        # A broken store (its full-text index dropped behind its back) is a server fault.
        with sqlite3.connect(api.runtime.store.db.path) as conn:  # type: ignore[attr-defined]
            conn.execute("DROP TABLE posts_fts")
        resp = await c.post("/v1/search", json={"query": "storm", "mode": "lexical"}, headers=h)
        assert resp.status_code == 500
        err = error_of(resp)
        assert err["type"] == "server_error"
        assert "posts_fts" not in err["message"]  # details stay in the server log
    elif status == 502:
        api.llm.enqueue_error(unavailable=False)  # the backend fails outright: a bad gateway
        resp = await c.post("/v1/chat/completions", headers=h, json={
            "model": "townsquare", "messages": [{"role": "user", "content": "storm?"}]})
        assert resp.status_code == 502
        err = error_of(resp)
        assert err["type"] == "server_error" and err["code"] == "upstream_error"
    elif status == 503:
        for _ in range(2000):  # once warm, pretend it is warming up again
            if api.services.live.trends is not None:
                break
            await asyncio.sleep(0.01)
        api.services.live.trends = None  # warming up
        resp = await c.get("/v1/trends", headers=h)
        assert resp.status_code == 503
        assert error_of(resp)["type"] == "server_error"
        assert int(resp.headers["retry-after"]) >= 1


async def test_every_error_status_has_the_openai_shape() -> None:
    # 500 last: it breaks the store file that the others share.
    for status in (400, 401, 403, 404, 405, 413, 429, 502, 503, 500):
        async with serve_app(POSTS, tiers={"tiny": Tier(requests_per_minute=3)},
                             max_body_bytes=4096) as api:
            await _status(api, status)


async def test_errors_on_a_stream_request_come_before_the_stream() -> None:
    async with serve_app(POSTS) as api:
        key = api.key("s")
        resp = await api.client.post(
            "/v1/chat/completions", headers=Api.auth(key),
            json={"model": "townsquare", "stream": True, "conversation_id": "conv_nope",
                  "messages": [{"role": "user", "content": "and then?"}]},
        )
        assert resp.status_code == 404
        assert error_of(resp)["code"] == "conversation_not_found"


async def test_unknown_route_without_a_key_is_401_not_404() -> None:
    """Deny by default: nothing about the API's surface leaks without a key."""
    async with serve_app() as api:
        resp = await api.client.get("/v1/anything")
        assert resp.status_code == 401
        error_of(resp)
