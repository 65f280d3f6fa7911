"""End to end: the official ``openai`` SDK against a real ``townsquare serve --demo``.

One server (a subprocess on a free loopback port, fake LLM, shipped demo
stream) serves the whole module: streamed and plain chat, the model list,
401 without a valid key and 429 past a tier, with the headers stock clients
back off on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from service_helpers import Served, served, townsquare

CITATION_KEYS = {"n", "id", "author", "author_name", "url", "created_at", "text", "source"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, dict[str, str]]]:
    home = tmp_path_factory.mktemp("served")
    script = home / "llm-script.json"
    script.write_text(json.dumps([
        {"chunks": ["Crews are ", "on standby ", "across the coast ", "ahead of Storm ",
                    "Aldric [1]."]},
        {"chunks": ["The strike ", "goes on [1]."]},
        {"chunks": ["Saw the comet [1]. ", "Free comet night at the club observatory [1]. ",
                    *[f"word{i} " for i in range(48)]], "delay_s": 0.05},
    ]))
    env = {
        "TOWNSQUARE_HOME": str(home),
        "TOWNSQUARE_LLM": "fake",
        "TOWNSQUARE_EMBEDDER": os.environ.get("TOWNSQUARE_TEST_EMBEDDER", "hash"),
        "TOWNSQUARE_FAKE_LLM_SCRIPT": str(script),
    }
    with served(home, "--demo", env=env) as srv:
        yield srv, env


def client(srv: Served, key: str | None = None, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base + "/v1", api_key=key or srv.web_key,
                         **kw)  # type: ignore[arg-type]


def test_the_printed_url_opens_the_web_page(server: tuple[Served, dict[str, str]]) -> None:
    srv, _ = server
    key_file = Path(srv.home) / "web-key"
    assert key_file.read_text().strip() == srv.web_key
    assert any(f"Open {srv.base}/ with the web page's key from {key_file}" in line
               for line in srv.output)
    assert not any(srv.web_key in line for line in srv.output)  # the key is never printed
    page = httpx.get(srv.base + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    live = httpx.get(srv.base + "/v1/live", headers={"Authorization": f"Bearer {srv.web_key}"})
    (demo,) = live.json()["sources"]
    assert demo["name"] == "demo" and demo["status"] == "running" and demo["posts"] >= 100


def test_streamed_chat_with_the_sdk(server: tuple[Served, dict[str, str]]) -> None:
    srv, _ = server
    stream = client(srv).chat.completions.create(
        model="townsquare",
        messages=[{"role": "user", "content": "what about storm Aldric?"}],
        stream=True,
        extra_body={"search_parameters": {"from_date": "1d", "max_search_results": 5}},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Crews are on standby across the coast ahead of Storm Aldric [1]."
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.completion_tokens == 5
    extra = final.model_extra or {}
    assert extra["citations"] and set(extra["citations"][0]) >= CITATION_KEYS
    assert extra["citations"][0]["source"] == "demo"
    assert extra["conversation_id"].startswith("conv_")


def test_plain_chat_with_the_sdk(server: tuple[Served, dict[str, str]]) -> None:
    srv, _ = server
    reply = client(srv).chat.completions.create(
        model="townsquare-fun",
        messages=[{"role": "user", "content": "is the train strike in Valmont over?"}],
    )
    assert reply.choices[0].message.content == "The strike goes on [1]."
    assert reply.model == "townsquare-fun"
    assert reply.usage is not None and reply.usage.total_tokens > 2
    citations = (reply.model_extra or {})["citations"]
    assert citations[0]["n"] == 1 and citations[0]["id"].startswith("demo:")


def test_a_client_leaving_mid_stream_is_metered_and_harmless(
    server: tuple[Served, dict[str, str]],
) -> None:
    srv, _ = server
    headers = {"Authorization": f"Bearer {srv.web_key}"}

    def chat_requests() -> int:
        usage = httpx.get(srv.base + "/v1/usage", headers=headers).json()
        return sum(r["requests"] for r in usage["data"] if r["model"] == "townsquare")

    before = chat_requests()
    body = {"model": "townsquare", "stream": True,
            "messages": [{"role": "user", "content": "tell me everything about the comet"}]}
    with httpx.stream("POST", srv.base + "/v1/chat/completions", json=body,
                      headers=headers) as resp:
        words = 0
        for line in resp.iter_lines():
            words += '"delta":{"content":' in line
            if words == 2:
                break  # two words in, the client hangs up
        assert words == 2
    for _ in range(200):
        if chat_requests() > before:
            break
        time.sleep(0.05)
    assert chat_requests() == before + 1
    assert httpx.get(srv.base + "/healthz").status_code == 200


def test_models_list_with_the_sdk(server: tuple[Served, dict[str, str]]) -> None:
    srv, _ = server
    ids = {m.id for m in client(srv).models.list()}
    assert {"townsquare", "townsquare-fun"} <= ids


def test_401_without_a_valid_key(server: tuple[Served, dict[str, str]]) -> None:
    srv, _ = server
    with pytest.raises(openai.AuthenticationError) as err:
        client(srv, key="ts-00000000-" + "x" * 43).models.list()
    assert err.value.status_code == 401
    assert err.value.code == "invalid_api_key"
    bare = httpx.post(srv.base + "/v1/chat/completions", json={"model": "townsquare"})
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "missing_api_key"


def test_429_past_the_tier_with_retry_headers(server: tuple[Served, dict[str, str]]) -> None:
    srv, env = server
    created = townsquare(srv.home, "keys", "create", "--tier", "free", "--name", "trial",
                         env=env)
    key = created.stdout.strip()
    sdk = client(srv, key=key, max_retries=0)
    for _ in range(10):  # the free tier: 10 requests per minute
        sdk.models.list()
    with pytest.raises(openai.RateLimitError) as err:
        sdk.models.list()
    headers = err.value.response.headers
    assert err.value.status_code == 429 and err.value.code == "rate_limit_exceeded"
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-limit-requests"] == "10"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"]
    assert headers["x-ratelimit-limit-tokens"] == "10000"
    # The web key (another tier) is unaffected.
    assert client(srv).models.list().data
