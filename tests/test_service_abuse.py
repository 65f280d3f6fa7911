"""What one key cannot do to the service: stall it, overspend, pick a backend, or get a 500
from a bad request or a bad upstream (message cap, CPU off the loop, header timeout,
metering on disconnect, operator-listed models, upstream errors, small 400s)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from service_helpers import POSTS, Api, error_of, make_runtime, serve_app, served
from test_service_watches import FedSource, uvicorn_app
from townsquare.answer import AnswerEngine, Personas, Policy


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "townsquare", "messages": [{"role": "user", "content": content}], **extra}


async def test_an_oversized_message_is_a_400_naming_the_field() -> None:
    async with serve_app(POSTS) as api:
        h = Api.auth(api.key("k"))
        limit = api.runtime.settings.max_message_chars
        body = {"model": "townsquare", "messages": [
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": "x" * (limit + 1)},
            {"role": "user", "content": "storm?"}]}
        resp = await api.client.post("/v1/chat/completions", json=body, headers=h)
        assert resp.status_code == 400
        err = error_of(resp)
        assert err["param"] == "messages[1].content"
        assert f"{limit:,}" in err["message"]
        ok = await api.client.post("/v1/chat/completions", json=chat("storm " * 100), headers=h)
        assert ok.status_code == 200


class _RecordingPolicy(Policy):
    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def check(self, question: str) -> Any:
        self.threads.append(threading.get_ident())
        return super().check(question)


async def test_the_policy_check_runs_off_the_event_loop() -> None:
    runtime = make_runtime()
    policy = _RecordingPolicy()
    engine = AnswerEngine(runtime.retriever, runtime.llm(), runtime.store,
                          Personas.load(runtime.settings.personas_dir), policy)
    async with serve_app(POSTS, runtime=runtime, engine=engine) as api:
        resp = await api.client.post("/v1/chat/completions", json=chat("storm?"),
                                     headers=Api.auth(api.key("k")))
        assert resp.status_code == 200
    assert policy.threads and threading.get_ident() not in policy.threads


def test_a_slow_header_connection_is_closed(home: Path) -> None:
    env = {"TOWNSQUARE_HEADER_TIMEOUT_S": "1", "TOWNSQUARE_EMBEDDER": "none"}
    with served(home, "--no-ingest", env=env) as srv:
        host, port = srv.base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            closed_at = None
            start = time.monotonic()
            while time.monotonic() - start < 10:  # a header line every 0.2 s, never the end
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                    sock.settimeout(0.2)
                    if sock.recv(1024) == b"":
                        closed_at = time.monotonic() - start
                        break
                except TimeoutError:
                    continue
                except OSError:  # reset or broken pipe: closed too
                    closed_at = time.monotonic() - start
                    break
            assert closed_at is not None, "the server kept a never-ending header open"
        with socket.create_connection((host, int(port)), timeout=10) as idle:
            idle.settimeout(8)
            assert idle.recv(1024) == b""  # said nothing at all: closed as well
        # A normal client on a keep-alive connection is unaffected.
        with httpx.Client(base_url=srv.base) as client:
            for _ in range(3):
                assert client.get("/healthz").status_code == 200
                time.sleep(0.6)


async def test_a_client_that_hangs_up_pays_for_the_prompt_and_what_was_written() -> None:
    async with uvicorn_app(FedSource(), posts=POSTS) as (base, api):
        key = api.key("leaver")
        # A supported first sentence, which the verification gate lets through as soon as
        # it ends, then a long tail: the client hangs up once it has read that sentence.
        first = "The storm knocked out power on the headland [1]. "
        api.llm.enqueue([first, *[f"word{i} " for i in range(199)]], delay_s=0.02)
        async with (
            httpx.AsyncClient(base_url=base, timeout=30) as client,
            client.stream("POST", "/v1/chat/completions", headers=Api.auth(key),
                          json=chat("storm?", stream=True)) as resp,
        ):
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if '"content":"The storm' in line:
                    break  # hang up after the first sentence
        key_id = api.runtime.store.list_api_keys()[-1].id
        month = f"{datetime.now(UTC):%Y-%m}"
        rows: list[Any] = []
        for _ in range(200):
            await api.services.ledger.flush()
            rows = api.runtime.store.usage_report(key_id, month)
            if rows:
                break
            await asyncio.sleep(0.05)
        (row,) = rows
        prompt = sum(api.llm.count_tokens(m.content) for m in api.llm.last_messages)
        assert row.prompt_tokens >= prompt > 0  # the model read the whole prompt
        assert 1 <= row.completion_tokens < 200  # what it wrote before it was stopped


async def test_callers_pick_only_among_the_operators_models() -> None:
    async with serve_app(POSTS) as api:
        h = Api.auth(api.key("k"))
        for model in ("townsquare:openai", "townsquare:local", "townsquare-fun:openai"):
            resp = await api.client.post("/v1/chat/completions",
                                         json={**chat("storm?"), "model": model}, headers=h)
            assert resp.status_code == 404, resp.text
            err = error_of(resp)
            assert err["code"] == "model_not_found" and "townsquare:fake" in err["message"]
        assert not set(api.runtime._llms) - {"fake"}  # nothing else was loaded
        listed = (await api.client.get("/v1/models", headers=h)).json()["data"]
        assert all(m["backends"] == ["fake"] for m in listed)
        api.runtime.settings.models = ["openai"]
        api.runtime.settings.openai_base_url = "http://127.0.0.1:9/v1"  # nothing listens
        resp = await api.client.post("/v1/chat/completions",
                                     json={**chat("storm?"), "model": "townsquare:openai"},
                                     headers=h)
        assert resp.status_code == 200 and resp.json()["degraded"] is True  # listed: used


@contextmanager
def upstream(body: bytes, content_type: str) -> Iterator[str]:
    """An "OpenAI-compatible" server that answers every request with ``body``."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_non_json_upstream_reply_is_a_502() -> None:
    replies = [
        (b"data: <html>Bad gateway</html>\n\n", "text/event-stream"),
        (b'data: {"choices": 7}\n\n', "text/event-stream"),
    ]
    for body, content_type in replies:
        with upstream(body, content_type) as base_url:
            runtime = make_runtime()
            runtime.settings.llm = "openai"
            runtime.settings.openai_base_url = base_url
            runtime.settings.openai_model = "m"
            async with serve_app(POSTS, runtime=runtime) as api:
                resp = await api.client.post("/v1/chat/completions", json=chat("storm?"),
                                             headers=Api.auth(api.key("k")))
                assert resp.status_code == 502, (body, resp.text)
                err = error_of(resp)
                assert err["code"] == "upstream_error" and base_url in err["message"]


async def test_small_requests_get_clear_400s() -> None:
    async with serve_app(POSTS) as api:
        h = Api.auth(api.key("k"))
        resp = await api.client.get("/v1/usage", params={"month": "9999-12"}, headers=h)
        assert resp.status_code == 400 and error_of(resp)["param"] == "month"
        context = api.runtime.llm().context_tokens
        resp = await api.client.post("/v1/chat/completions",
                                     json=chat("storm?", max_tokens=32768), headers=h)
        assert resp.status_code == 400
        err = error_of(resp)
        assert err["param"] == "max_tokens" and f"{context:,}" in err["message"]
        assert "-" not in err["message"].split("at most")[-1]
        ok = await api.client.post("/v1/chat/completions",
                                   json=chat("storm?", max_tokens=context // 2), headers=h)
        assert ok.status_code == 200
