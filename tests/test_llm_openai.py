"""The ``openai`` backend against real HTTP servers on loopback.

A small scripted server checks retries (429 with Retry-After, 5xx, then
success), what is *not* retried (401), and the fallbacks for older servers.
The slow test runs llama-cpp-python's own OpenAI-compatible server on the
same GGUF the ``local`` backend uses, and answers through it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from answer_helpers import add_posts, check_answer, make_engine, make_post, open_store
from townsquare.answer import AnswerRequest
from townsquare.config import Settings
from townsquare.llm import LLMS, ChatMessage, GenerationOptions, LLMError, LLMUnavailable
from townsquare.llm.openai_backend import OpenAIBackend

MSGS = [ChatMessage("system", "Be brief."), ChatMessage("user", "Say hello.")]


def sse(chunks: list[str], usage: dict[str, int] | None = None) -> bytes:
    lines = []
    for text in chunks:
        lines.append({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                      "choices": [{"index": 0, "delta": {"content": text},
                                   "finish_reason": None}]})
    if usage:
        lines.append({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                      "choices": [], "usage": {**usage,
                                               "total_tokens": sum(usage.values())}})
    body = "".join(f"data: {json.dumps(x)}\n\n" for x in lines) + "data: [DONE]\n\n"
    return body.encode()


class Scripted:
    """Responses served in order: (status, headers, body)."""

    def __init__(self) -> None:
        self.responses: list[tuple[int, dict[str, str], bytes]] = []
        self.requests: list[dict[str, Any]] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Scripted]]:
    script = Scripted()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # /v1/models
            self._send(200, {"content-type": "application/json"},
                       json.dumps({"object": "list", "data": [
                           {"id": "served-model", "object": "model", "created": 0,
                            "owned_by": "me"}]}).encode())

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            script.requests.append(json.loads(self.rfile.read(length)))
            status, headers, body = script.responses.pop(0)
            self._send(status, headers, body)

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", script
    finally:
        httpd.shutdown()
        httpd.server_close()


SSE_HEADERS = {"content-type": "text/event-stream"}
JSON_HEADERS = {"content-type": "application/json"}


def error(status: int, message: str = "busy", **headers: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": {"message": message, "type": "x", "code": None}}).encode()
    return status, {**JSON_HEADERS, **headers}, body


def backend(url: str, **kw: Any) -> OpenAIBackend:
    return OpenAIBackend(url, model="m", max_retries=3, backoff_s=0.01, timeout_s=10, **kw)


async def test_streams_text_and_reports_server_usage(server: tuple[str, Scripted]) -> None:
    url, script = server
    script.responses.append((200, SSE_HEADERS, sse(["Hel", "lo"], {"prompt_tokens": 9,
                                                                  "completion_tokens": 2})))
    llm = backend(url)
    gen = llm.generate(MSGS, GenerationOptions(max_tokens=12, temperature=0.1, seed=3,
                                               stop=["\n\n"]))
    assert [t async for t in gen] == ["Hel", "lo"]
    assert (gen.usage.prompt_tokens, gen.usage.completion_tokens) == (9, 2)
    sent = script.requests[0]
    assert sent["stream"] is True and sent["model"] == "m" and sent["max_tokens"] == 12
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["seed"] == 3 and sent["stop"] == ["\n\n"]
    assert sent["stream_options"] == {"include_usage": True}
    await llm.aclose()


async def test_429_and_5xx_are_retried_with_backoff(server: tuple[str, Scripted]) -> None:
    url, script = server
    script.responses += [
        error(429, "slow down", **{"retry-after": "0"}),
        error(503),
        error(502),
        (200, SSE_HEADERS, sse(["ok"])),
    ]
    gen = backend(url).generate(MSGS)
    assert await gen.text() == "ok"
    assert len(script.requests) == 4
    assert gen.usage.prompt_tokens > 0  # estimated: this server reports none


async def test_retries_run_out_into_llm_unavailable(server: tuple[str, Scripted]) -> None:
    url, script = server
    script.responses += [error(503)] * 4
    with pytest.raises(LLMUnavailable) as info:
        await backend(url).generate(MSGS).text()
    assert len(script.requests) == 4  # the first try and three retries
    assert info.value.retry_after > 0


async def test_a_long_retry_after_gives_up_at_once_and_is_passed_on(
    server: tuple[str, Scripted],
) -> None:
    url, script = server
    script.responses += [error(429, **{"retry-after": "120"})]
    with pytest.raises(LLMUnavailable) as info:
        await backend(url).generate(MSGS).text()
    assert info.value.retry_after == 120 and len(script.requests) == 1


async def test_auth_errors_are_not_retried_and_say_what_to_fix(
    server: tuple[str, Scripted],
) -> None:
    url, script = server
    script.responses += [error(401, "bad key")]
    with pytest.raises(LLMError, match="openai_api_key") as info:
        await backend(url).generate(MSGS).text()
    assert not isinstance(info.value, LLMUnavailable)
    assert len(script.requests) == 1


async def test_servers_rejecting_stream_options_are_asked_again_without(
    server: tuple[str, Scripted],
) -> None:
    url, script = server
    script.responses += [error(400, "Unrecognized request argument: stream_options"),
                         (200, SSE_HEADERS, sse(["fine"]))]
    llm = backend(url)
    assert await llm.generate(MSGS).text() == "fine"
    assert "stream_options" not in script.requests[1]


async def test_unreachable_server_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LLMUnavailable):
        await backend(f"http://127.0.0.1:{port}/v1").generate(MSGS).text()


async def test_default_model_is_the_servers_first(server: tuple[str, Scripted]) -> None:
    url, script = server
    script.responses.append((200, SSE_HEADERS, sse(["x"])))
    llm = OpenAIBackend(url, model="default", backoff_s=0.01)
    await llm.generate(MSGS).text()
    assert script.requests[0]["model"] == "served-model" and llm.model_id == "served-model"


def test_settings_and_standard_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env.example/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    llm = LLMS.create("openai", Settings())
    assert isinstance(llm, OpenAIBackend)
    assert (llm.base_url, llm.api_key) == ("http://env.example/v1", "sk-env")
    monkeypatch.setenv("TOWNSQUARE_OPENAI_BASE_URL", "http://mine.example/v1")
    monkeypatch.setenv("TOWNSQUARE_OPENAI_MODEL", "grok-4")
    llm = LLMS.create("openai", Settings())
    assert isinstance(llm, OpenAIBackend)
    assert (llm.base_url, llm.model_id) == ("http://mine.example/v1", "grok-4")


# --- a real OpenAI-compatible server: llama-cpp-python's, on the same GGUF -----------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVE_LIKE_TOWNSQUARE = (
    "import runpy; from townsquare.llm.local import plain_cpu_weights\n"
    "with plain_cpu_weights(): runpy.run_module('llama_cpp.server', run_name='__main__')"
)


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server] deps")
    from townsquare.llm.local import default_model_path

    port = _free_port()
    proc = subprocess.Popen(
        # The server loads the model the way townsquare does (see plain_cpu_weights:
        # llama.cpp's AMX kernels crash on AMX CPUs).
        [sys.executable, "-c", SERVE_LIKE_TOWNSQUARE, "--model", str(default_model_path()),
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
         "--n_threads", str(min(2, os.cpu_count() or 1)), "--model_alias", "smollm2",
         "--verbose", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"llama_cpp.server exited: {err[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not start in 120 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
async def test_real_llama_cpp_server_streams_an_answer(llama_server: str) -> None:
    llm = OpenAIBackend(llama_server, model="default", timeout_s=120)
    gen = llm.generate(MSGS, GenerationOptions(max_tokens=24, temperature=0.0, seed=1))
    pieces = [p async for p in gen]
    assert llm.model_id == "smollm2"
    assert len(pieces) > 1 and "".join(pieces).strip()
    assert gen.usage.completion_tokens > 0
    await llm.aclose()


@pytest.mark.slow
async def test_engine_answers_through_the_real_server(llama_server: str, tmp_path: Path) -> None:
    from datetime import timedelta

    store = open_store(tmp_path)
    add_posts(store, [
        make_post("s1", "alice", "The city council approved the new tram line today",
                  timedelta(hours=1)),
        make_post("s2", "bob", "Tram line vote passed 31 to 12, construction starts in May",
                  timedelta(minutes=20)),
    ])
    llm = OpenAIBackend(llama_server, model="default", timeout_s=120)
    engine, _ = make_engine(store, llm=llm)
    answer = await engine.answer(AnswerRequest("what happened with the tram line?",
                                               max_tokens=64))
    check_answer(answer, store)
    assert answer.answer and not answer.degraded
    assert answer.model == "smollm2"
    assert {c.id for c in answer.citations} <= {"jsonl:s1", "jsonl:s2"} and answer.citations
    await llm.aclose()
