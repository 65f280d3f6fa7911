"""No parameter silently ignored: every request field changes the outcome or is refused.

The tables below name every field of every request model of
``/v1/chat/completions`` and ``/v1/search``; a test checks the tables against
the models (a new field without a row fails), and each row is run: an
honoured field must make the response, the citations, the prompt or the LLM
options differ from a baseline request, and a refused value must be a 400
whose ``param`` or message names the field.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from conftest import sse_events
from factories import make_post
from service_helpers import Api, error_of, serve_app
from townsquare.model import Post
from townsquare.service.routes import data
from townsquare.service.wire import openai_compat

NOW = datetime.now(UTC)  # for the date filters' values; posts are dated when a test runs


def posts() -> list[Post]:
    """The corpus, dated now (a slow run must not age the posts out of the windows)."""
    return [
        make_post("at://did:plc:alice/app.bsky.feed.post/1", source="bluesky",
                  author="alice.bsky.social",
                  text="Storm trains Valmont: storm stopped the trains at Valmont", when=10,
                  url="https://bsky.app/profile/did:plc:alice/post/1", author_id="did:plc:alice",
                  likes=5, lang="en"),
        make_post("https://mastodon.social/users/bob/statuses/2", source="mastodon",
                  author="bob@mastodon.social", text="Trains cancelled by the storm in Valmont",
                  when=50, url="https://mastodon.social/@bob/2", likes=50, reposts=3, lang="en"),
        make_post("lemonde-3", source="rss", author="Le Monde",
                  text="Tempête storm : les trains supprimés à Valmont", when=180,
                  url="https://www.lemonde.fr/a/3", lang="fr"),
        make_post("4", source="jsonl", author="carol",
                  text="storm trains Valmont update from the station", when=2 * 24 * 60,
                  url="https://example.org/4", likes=1),
        make_post("reuters-5", source="rss", author="Reuters", text="Storm hits trains in Valmont",
                  when=30, url="https://www.reuters.com/x/5", lang="en"),
    ]


POSTS = posts()

QUESTION = "storm trains Valmont"
BASE: dict[str, Any] = {"model": "townsquare",
                        "messages": [{"role": "user", "content": QUESTION}]}


def _us_date(dt: datetime) -> str:
    return f"{dt.month}/{dt.day}/{dt.year}"


def sp(**kw: Any) -> dict[str, Any]:
    return {"search_parameters": kw}


def sources(*entries: Any, **kw: Any) -> dict[str, Any]:
    return sp(sources=list(entries), **kw)


def msg(**kw: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": QUESTION, **kw}]}


X = {"type": "x"}
NEWS = {"type": "news"}
XS = {"type": "x_search"}
WEB = {"type": "web_search"}

#: model -> field -> (baseline patch, variant patch): the variant must change the outcome.
HONOURED: dict[type[BaseModel], dict[str, tuple[dict[str, Any], dict[str, Any]]]] = {
    openai_compat.ChatCompletionRequest: {
        "model": ({}, {"model": "townsquare-fun"}),
        "messages": ({}, {"messages": [{"role": "user", "content": "storm"}]}),
        "stream": ({}, {"stream": True}),
        "stream_options": ({"stream": True},
                           {"stream": True, "stream_options": {"include_usage": True}}),
        "max_tokens": ({}, {"max_tokens": 7}),
        "max_completion_tokens": ({}, {"max_completion_tokens": 9}),
        "temperature": ({}, {"temperature": 1.5}),
        "top_p": ({}, {"top_p": 0.5}),
        "stop": ({}, {"stop": ["\n\n"]}),
        "seed": ({}, {"seed": 42}),
        "store": ({}, {"store": False}),
        "search_parameters": ({}, sp(mode="off")),
        "conversation_id": ({}, {"conversation_id": "nope"}),
        "tools": ({}, {"tools": [{**XS, "allowed_x_handles": ["alice.bsky.social"]}]}),
        "tool_choice": ({"tools": [XS]}, {"tools": [XS], "tool_choice": "none"}),
        "return_citations": ({}, {"return_citations": False}),
        "search_recency_filter": ({}, {"search_recency_filter": "hour"}),
        "search_domain_filter": ({}, {"search_domain_filter": ["-lemonde.fr"]}),
        "search_after_date_filter": ({}, {"search_after_date_filter": _us_date(NOW)}),
        "search_before_date_filter": (
            {}, {"search_before_date_filter": _us_date(NOW - timedelta(days=2))}),
    },
    openai_compat.SearchParameters: {
        "mode": (sp(), sp(mode="off")),
        "from_date": (sp(), sp(from_date="1h")),
        "to_date": (sp(), sp(to_date="1d")),
        "sources": (sp(), sp(sources=["news"])),
        "included_handles": (sp(), sp(included_handles=["carol"])),
        "excluded_handles": (sp(), sp(excluded_handles=["carol"])),
        "included_x_handles": (sp(), sp(included_x_handles=["carol"])),
        "excluded_x_handles": (sp(), sp(excluded_x_handles=["carol"])),
        "langs": (sp(), sp(langs=["fr"])),
        "max_search_results": (sp(), sp(max_search_results=1)),
        "return_citations": (sp(), sp(return_citations=False)),
        "sort": (sp(max_search_results=1), sp(max_search_results=1, sort="top")),
    },
    openai_compat.SearchSource: {
        "type": (sources(X), sources(NEWS)),
        "x_handles": (sources(X), sources({**X, "x_handles": ["alice.bsky.social"]})),
        "included_x_handles": (sources(X),
                               sources({**X, "included_x_handles": ["alice.bsky.social"]})),
        "excluded_x_handles": (sources(X),
                               sources({**X, "excluded_x_handles": ["alice.bsky.social"]})),
        "allowed_websites": (sources(NEWS), sources({**NEWS, "allowed_websites": ["lemonde.fr"]})),
        "excluded_websites": (sources(NEWS),
                              sources({**NEWS, "excluded_websites": ["lemonde.fr"]})),
        "post_favorite_count": (sources(X), sources({**X, "post_favorite_count": 10})),
    },
    openai_compat.XSearchTool: {
        "type": ({"tools": [WEB]}, {"tools": [XS]}),
        "allowed_x_handles": ({"tools": [XS]},
                              {"tools": [{**XS, "allowed_x_handles": ["alice.bsky.social"]}]}),
        "excluded_x_handles": ({"tools": [XS]},
                               {"tools": [{**XS, "excluded_x_handles": ["alice.bsky.social"]}]}),
        "from_date": ({"tools": [XS]}, {"tools": [{**XS, "from_date": "20m"}]}),
        "to_date": ({"tools": [XS]}, {"tools": [{**XS, "to_date": "20m"}]}),
    },
    openai_compat.WebSearchTool: {
        "type": ({"tools": [XS]}, {"tools": [WEB]}),
        "allowed_domains": ({"tools": [WEB]},
                            {"tools": [{**WEB, "allowed_domains": ["reuters.com"]}]}),
        "excluded_domains": ({"tools": [WEB]},
                             {"tools": [{**WEB, "excluded_domains": ["reuters.com"]}]}),
    },
    openai_compat.ChatMessageIn: {
        "role": ({}, {"messages": [{"role": "assistant", "content": QUESTION}]}),
        "content": ({}, msg(content="storm")),
    },
    openai_compat.TextPart: {
        "text": (msg(content=[{"type": "text", "text": QUESTION}]),
                 msg(content=[{"type": "text", "text": "storm"}])),
    },
    openai_compat.StreamOptions: {
        "include_usage": ({"stream": True, "stream_options": {"include_usage": False}},
                          {"stream": True, "stream_options": {"include_usage": True}}),
    },
}

#: model -> field -> a request patch that must be refused with a 400 naming the field.
REFUSED: dict[type[BaseModel], dict[str, dict[str, Any]]] = {
    openai_compat.ChatCompletionRequest: {
        "n": {"n": 2},
        "response_format": {"response_format": {"type": "json_object"}},
        "return_images": {"return_images": True},
        "return_related_questions": {"return_related_questions": True},
        "frequency_penalty": {"frequency_penalty": 0.5},
        "presence_penalty": {"presence_penalty": 0.5},
        "logprobs": {"logprobs": True},
        "top_logprobs": {"top_logprobs": 3},
        "logit_bias": {"logit_bias": {"123": 5}},
        "parallel_tool_calls": {"parallel_tool_calls": False},
        "user": {"user": "end-user-7"},
        "metadata": {"metadata": {"k": "v"}},
        "modalities": {"modalities": ["text", "audio"]},
        "service_tier": {"service_tier": "flex"},
        "reasoning_effort": {"reasoning_effort": "high"},
    },
    openai_compat.SearchSource: {
        "post_view_count": sources({**X, "post_view_count": 100}),
        "country": sources({**X, "country": "FR"}),
        "safe_search": sources({**X, "safe_search": False}),
        "links": sources({"type": "rss", "links": ["https://example.org/feed"]}),
    },
    openai_compat.XSearchTool: {
        "enable_image_understanding": {"tools": [{**XS, "enable_image_understanding": True}]},
        "enable_video_understanding": {"tools": [{**XS, "enable_video_understanding": True}]},
    },
    openai_compat.WebSearchTool: {
        "enable_image_understanding": {"tools": [{**WEB, "enable_image_understanding": True}]},
    },
    openai_compat.ChatMessageIn: {
        "refusal": msg(refusal="no"),
        "tool_calls": msg(tool_calls=[{"id": "1"}]),
        "function_call": msg(function_call={"name": "f"}),
        "audio": msg(audio={"id": "a"}),
        "annotations": msg(annotations=[{"type": "url_citation"}]),
        "name": msg(name="alice"),
    },
    openai_compat.TextPart: {
        "type": msg(content=[{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]),
    },
    openai_compat.ResponseFormat: {
        "type": {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
    },
}

#: /v1/search: field -> (baseline patch, variant patch).
SEARCH_BASE: dict[str, Any] = {"query": QUESTION, "limit": 10}
SEARCH: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "query": ({}, {"query": "tempête"}),
    "since": ({}, {"since": "1h"}),
    "until": ({}, {"until": "1d"}),
    "authors": ({}, {"authors": ["carol"]}),
    "exclude_authors": ({}, {"exclude_authors": ["carol"]}),
    "sources": ({}, {"sources": ["rss"]}),
    "langs": ({}, {"langs": ["fr"]}),
    "hashtags": ({}, {"hashtags": ["nothing"]}),
    "domains": ({}, {"domains": ["reuters.com"]}),
    "exclude_domains": ({}, {"exclude_domains": ["reuters.com"]}),
    "min_likes": ({}, {"min_likes": 10}),
    "limit": ({}, {"limit": 1}),
    "mode": ({"query": "station"}, {"query": "station", "mode": "recent"}),
    "sort": ({}, {"sort": "top"}),
}


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


async def outcome(api: Api, h: dict[str, str], body: dict[str, Any]) -> Any:
    """Everything a field may change: status, body shape, text, citations, prompt, options."""
    calls = len(api.llm.calls)
    resp = await api.client.post("/v1/chat/completions", json=body, headers=h)
    llm = api.llm
    prompt = "\n".join(m.content for m in llm.calls[-1]) if len(llm.calls) > calls else None
    opts = llm.options[-1] if len(llm.options) > calls else None
    options = (opts.max_tokens, opts.temperature, opts.top_p, tuple(opts.stop), opts.seed) \
        if opts else None
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        return ("sse", resp.status_code, len(sse_events(resp)), prompt, options)
    payload = resp.json()
    if resp.status_code != 200:
        return (resp.status_code, payload["error"]["code"])
    return (
        resp.status_code,
        payload["choices"][0]["message"]["content"],
        tuple(c["id"] for c in payload["citations"]),
        payload["conversation_id"] is None,
        prompt,
        options,
    )


def test_the_tables_cover_every_field_of_every_request_model() -> None:
    models = [openai_compat.ChatCompletionRequest, openai_compat.SearchParameters,
              openai_compat.SearchSource, openai_compat.XSearchTool,
              openai_compat.WebSearchTool, openai_compat.ChatMessageIn,
              openai_compat.TextPart, openai_compat.StreamOptions,
              openai_compat.ResponseFormat]
    for model in models:
        covered = set(HONOURED.get(model, {})) | set(REFUSED.get(model, {}))
        # A discriminating tag that only takes one value is honoured by being required.
        if model in (openai_compat.ResponseFormat,):
            covered |= {"type"}
        assert covered == set(model.model_fields), model.__name__
        assert model.model_config.get("extra") == "forbid", model.__name__
    assert set(SEARCH) == set(data.SearchBody.model_fields)


async def test_every_honoured_chat_field_changes_the_outcome() -> None:
    async with serve_app(posts()) as api:
        h = Api.auth(api.key("k"))
        unchanged = []
        for model, fields in HONOURED.items():
            for name, (base_patch, variant_patch) in fields.items():
                before = await outcome(api, h, merge(BASE, base_patch))
                after = await outcome(api, h, merge(BASE, variant_patch))
                assert before[0] in (200, "sse"), (model.__name__, name, before)
                if before == after:
                    unchanged.append(f"{model.__name__}.{name}")
        assert unchanged == []


async def test_every_refused_value_is_a_400_naming_the_field() -> None:
    async with serve_app(posts()) as api:
        h = Api.auth(api.key("k"))
        for model, fields in REFUSED.items():
            for name, patch in fields.items():
                resp = await api.client.post("/v1/chat/completions", headers=h,
                                             json=merge(BASE, patch))
                err = error_of(resp)
                assert resp.status_code == 400, (model.__name__, name, err)
                assert name in (err["param"] or "") + err["message"], (name, err)
        unknown = await api.client.post("/v1/chat/completions", headers=h,
                                        json={**BASE, "presence_penalti": 0})
        assert unknown.status_code == 400 and error_of(unknown)["param"] == "presence_penalti"
        assert "unknown parameter" in error_of(unknown)["message"]
        tool = await api.client.post("/v1/chat/completions", headers=h, json={
            **BASE, "tools": [{"type": "function", "function": {"name": "f"}}]})
        assert tool.status_code == 400 and "tools[0]" in error_of(tool)["message"]
        role = await api.client.post("/v1/chat/completions", headers=h, json={
            **BASE, "messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]})
        assert role.status_code == 400 and "tool" in error_of(role)["message"]


async def test_neutral_values_of_unimplemented_parameters_are_accepted() -> None:
    """What SDKs send by default changes nothing, so it is honoured by doing nothing."""
    async with serve_app(posts()) as api:
        h = Api.auth(api.key("k"))
        resp = await api.client.post("/v1/chat/completions", headers=h, json={
            **BASE, "n": 1, "presence_penalty": 0, "frequency_penalty": 0.0, "logprobs": False,
            "response_format": {"type": "text"}, "parallel_tool_calls": True,
            "messages": [{"role": "assistant", "content": "hi", "refusal": None,
                          "tool_calls": None, "annotations": []},
                         {"role": "user", "content": [{"type": "text", "text": QUESTION}]}]})
        assert resp.status_code == 200, resp.text


async def test_filters_select_what_they_say() -> None:
    async with serve_app(posts()) as api:
        h = Api.auth(api.key("k"))

        async def cited(patch: dict[str, Any]) -> set[str]:
            """The authors of the posts the model was shown."""
            resp = await api.client.post("/v1/chat/completions", headers=h,
                                         json=merge(BASE, patch))
            assert resp.status_code == 200, resp.text
            prompt = "\n".join(m.content for m in api.llm.last_messages)
            return set(re.findall(r"^\[\d+\] @(.+?) ·", prompt, re.MULTILINE))

        assert await cited({"tools": [{**XS, "allowed_x_handles": ["alice.bsky.social"]}]}) == {
            "alice.bsky.social"}
        assert await cited({"search_domain_filter": ["reuters.com"]}) == {"Reuters"}
        assert "Le Monde" not in await cited({"search_domain_filter": ["-lemonde.fr"]})
        assert await cited(sources({**X, "post_favorite_count": 10})) == {"bob@mastodon.social"}
        # Each source entry is its own scope: x posts by alice, or any news.
        assert await cited(sources({**X, "x_handles": ["alice.bsky.social"]}, NEWS)) == {
            "alice.bsky.social", "Le Monde", "Reuters"}


async def test_return_citations_false_leaves_no_marker_plain_or_streamed() -> None:
    async with serve_app(posts()) as api:
        h = Api.auth(api.key("k"))
        api.llm.enqueue(["Trains stopped [1", "]. Storm [2] too."])
        resp = await api.client.post("/v1/chat/completions", headers=h,
                                     json={**BASE, "return_citations": False})
        body = resp.json()
        assert body["choices"][0]["message"]["content"] == "Trains stopped. Storm too."
        assert body["citations"] == [] and body["search_results"] == []
        api.llm.enqueue(["Trains stopped ", "[1]", ". Storm [2] too."])
        streamed = await api.client.post("/v1/chat/completions", headers=h, json={
            **BASE, "stream": True, "search_parameters": {"return_citations": False}})
        chunks = [json.loads(e.data) for e in sse_events(streamed) if e.data != "[DONE]"]
        text = "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks if c.get("choices"))
        assert text == "Trains stopped. Storm too."
        with_cites = await api.client.post("/v1/chat/completions", headers=h, json=BASE)
        results = with_cites.json()["search_results"]
        assert results and {"title", "url", "date", "snippet"} <= set(results[0])


async def test_every_search_field_changes_the_results_or_is_refused() -> None:
    async with serve_app(posts()) as api:
        h = Api.auth(api.key("k"))

        async def ids(body: dict[str, Any]) -> list[str]:
            resp = await api.client.post("/v1/search", json=body, headers=h)
            assert resp.status_code == 200, resp.text
            return [p["id"] for p in resp.json()["data"]]

        for name, (base_patch, variant_patch) in SEARCH.items():
            before = await ids(merge(SEARCH_BASE, base_patch))
            after = await ids(merge(SEARCH_BASE, variant_patch))
            assert before != after, name
        assert (await ids({**SEARCH_BASE, "sort": "top"}))[0] == POSTS[1].id
        assert await ids({**SEARCH_BASE, "domains": ["https://www.Reuters.com/"]}) == [
            POSTS[4].id]
        typo = await api.client.post("/v1/search", json={**SEARCH_BASE, "sortt": "top"},
                                     headers=h)
        assert typo.status_code == 400 and error_of(typo)["param"] == "sortt"


@pytest.mark.parametrize("url", ["/v1/trends?windw=5m", "/v1/posts/jsonl:4?fields=text",
                                 "/v1/models?limit=3"])
async def test_unknown_query_parameters_are_refused(url: str) -> None:
    async with serve_app(posts()) as api:
        h = Api.auth(api.key("k"))
        resp = await api.client.get(url, headers=h)
        assert resp.status_code == 400
        assert error_of(resp)["param"] == url.split("?")[1].split("=")[0]


async def test_other_bodies_refuse_unknown_fields() -> None:
    async with serve_app(posts()) as api:
        h = Api.auth(api.key("k"))
        resp = await api.client.post("/v1/watches", headers=h,
                                     json={"query": "storm", "exclude_authors": ["x"]})
        assert resp.status_code == 400 and error_of(resp)["param"] == "exclude_authors"
