"""Conversations per key (list, read, rename, delete, export) and the live post feed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_sse import EventSource, ServerSentEvent

from factories import make_post
from service_helpers import POSTS, Api, add_posts, error_of, make_runtime, serve_app, townsquare
from townsquare.ingest.feed import PostFeed
from townsquare.ingest.supervisor import build_sources, parse_spec
from townsquare.service.app import create_app
from townsquare.sources import SourceError


async def ask(api: Api, key: str, question: str, **extra: Any) -> dict[str, Any]:
    resp = await api.client.post("/v1/chat/completions", headers=Api.auth(key), json={
        "model": "townsquare", "messages": [{"role": "user", "content": question}], **extra})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_conversations_are_listed_renamed_exported_and_deleted_by_their_key_only(
    home: Path,
) -> None:
    async with serve_app(POSTS, trends=False) as api:
        mine, other = api.key("mine"), api.key("other")
        api.llm.enqueue(["The strike is over [1]."])
        first = await ask(api, mine, "Is the train strike in Valmont over?")
        cid = first["conversation_id"]
        api.llm.enqueue(["A storm is coming [1]."])
        await ask(api, mine, "and the storm?", conversation_id=cid)
        api.llm.enqueue(["Power is out [1]."])
        second = (await ask(api, mine, "Power cuts?"))["conversation_id"]
        await ask(api, other, "something else")

        listed = (await api.client.get("/v1/conversations", headers=Api.auth(mine))).json()
        assert [c["id"] for c in listed["data"]] == [second, cid]  # most recent first
        row = listed["data"][1]
        assert row["title"] == "Is the train strike in Valmont over?"
        assert row["messages"] == 4 and row["renamed"] is False and row["model"] == "townsquare"
        others = (await api.client.get("/v1/conversations", headers=Api.auth(other))).json()
        assert cid not in [c["id"] for c in others["data"]] and len(others["data"]) == 1

        # Reading it back gives each answer its cited posts, numbered as the answer cites.
        conv = (await api.client.get(f"/v1/conversations/{cid}", headers=Api.auth(mine))).json()
        answer = conv["messages"][1]
        assert answer["role"] == "assistant" and answer["citations"][0]["n"] == 1
        assert answer["citations"][0]["author"] and answer["citations"][0]["text"]

        renamed = await api.client.patch(f"/v1/conversations/{cid}", headers=Api.auth(mine),
                                         json={"title": "  Valmont   strike "})
        assert renamed.status_code == 200 and renamed.json()["title"] == "Valmont strike"
        assert (await api.client.get(f"/v1/conversations/{cid}",
                                     headers=Api.auth(mine))).json()["title"] == "Valmont strike"
        bad = await api.client.patch(f"/v1/conversations/{cid}", headers=Api.auth(mine),
                                     json={"name": "x"})
        assert bad.status_code == 400

        export = await api.client.get(f"/v1/conversations/{cid}/export",
                                      params={"format": "markdown"}, headers=Api.auth(mine))
        assert export.status_code == 200
        assert export.headers["content-type"].startswith("text/markdown")
        assert 'filename="valmont-strike.md"' in export.headers["content-disposition"]
        md = export.text
        assert md.startswith("# Valmont strike\n")
        assert "## Q: Is the train strike in Valmont over?" in md
        assert "The strike is over [1]." in md
        cited = conv["messages"][1]["citations"][0]
        assert f"]({cited['url']})" in md  # the citation is a link to the post
        unknown = await api.client.get(f"/v1/conversations/{cid}/export",
                                       params={"format": "pdf"}, headers=Api.auth(mine))
        assert unknown.status_code == 400

        # Another key: 404 for everything, exactly like an id that does not exist.
        for method, path, body in [
            ("GET", f"/v1/conversations/{cid}", None),
            ("PATCH", f"/v1/conversations/{cid}", {"title": "stolen"}),
            ("DELETE", f"/v1/conversations/{cid}", None),
            ("GET", f"/v1/conversations/{cid}/export", None),
            ("DELETE", "/v1/conversations/conv_missing", None),
        ]:
            resp = await api.client.request(method, path, json=body, headers=Api.auth(other))
            assert resp.status_code == 404, (method, path)
            assert error_of(resp)["code"] == "conversation_not_found"
        assert (await api.client.get("/v1/conversations")).status_code == 401

        gone = await api.client.delete(f"/v1/conversations/{cid}", headers=Api.auth(mine))
        assert gone.status_code == 200 and gone.json()["deleted"] is True
        assert (await api.client.get(f"/v1/conversations/{cid}",
                                     headers=Api.auth(mine))).status_code == 404
        listed = (await api.client.get("/v1/conversations", headers=Api.auth(mine))).json()
        assert [c["id"] for c in listed["data"]] == [second]


def test_source_specs_take_options_as_words_or_tables() -> None:
    assert parse_spec("rss:https://ex.org/feed.xml interval=60") == (
        "rss:https://ex.org/feed.xml", {"interval": "60"})
    assert parse_spec({"spec": "mastodon:https://m.example", "timeline": "hashtag:x"}) == (
        "mastodon:https://m.example", {"timeline": "hashtag:x"})
    [(name, rss)] = build_sources(["rss:https://ex.org/feed.xml interval=60"])
    assert name == "rss:https://ex.org/feed.xml" and rss.interval == 60.0  # type: ignore[attr-defined]
    [(_, masto)] = build_sources([{"spec": "mastodon:https://m.example", "token": "sekrit",
                                   "timeline": "hashtag:climate"}])
    assert masto.opts.token == "sekrit" and masto.tag == "climate"  # type: ignore[attr-defined]
    [(_, jsonl)] = build_sources(["jsonl:/nonexistent/posts.jsonl"])
    assert jsonl.follow is True  # type: ignore[attr-defined]
    for bad in ["rss:https://ex.org/feed.xml intervall=60", "rss:https://ex.org/f interval",
                "rss:https://ex.org/f interval=soon", {"interval": 5},
                "jsonl:/tmp/x.jsonl follow=maybe"]:
        with pytest.raises(SourceError):
            build_sources([bad])


def test_serve_refuses_a_bad_source_option_naming_it(home: Path) -> None:
    done = townsquare(home, "serve", "--port", "0", "--source",
                      "rss:https://ex.org/feed.xml intervall=60", check=False)
    assert done.returncode == 2
    assert "intervall" in done.stderr and "interval" in done.stderr


@asynccontextmanager
async def loopback(runtime: Any, trends: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    """The real app on a loopback port (SSE needs a streaming transport), no sources."""
    app = create_app(runtime, trends=trends, web=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "the server died while starting"
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}",
                                     timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await task
        sock.close()


fresh = partial(make_post, author="erin", lang="en", url=None)


async def next_post(events: AsyncIterator[ServerSentEvent]) -> dict[str, Any]:
    async for event in events:
        if event.event == "post":
            data: dict[str, Any] = json.loads(event.data)
            return data
    raise AssertionError("the stream ended")


async def test_the_post_stream_sends_the_newest_then_what_any_writer_commits(
    home: Path,
) -> None:
    runtime = make_runtime()
    await add_posts(runtime, POSTS)
    # Another process's store handle: rows it commits never pass an in-process listener.
    writer = make_runtime()
    try:
        async with loopback(runtime) as client:
            key = Api(None, runtime, client).key("feed")
            h = Api.auth(key)
            bad = await client.get("/v1/posts/stream", params={"lang": "fr"}, headers=h)
            assert bad.status_code == 400 and error_of(bad)["param"] == "lang"
            assert (await client.get("/v1/posts/stream")).status_code == 401
            async with client.stream("GET", "/v1/posts/stream", headers=h,
                                     params={"langs": "fr", "backlog": 5}) as resp:
                assert resp.status_code == 200
                events = EventSource(resp).aiter_sse()
                backlog = await next_post(events)
                assert backlog["id"] == "jsonl:s2"  # the only French post stored
                await add_posts(writer, [fresh("en1", text="an English post"),
                                         fresh("fr1", text="un billet en français", lang="fr")])
                got = await asyncio.wait_for(next_post(events), 10)
                assert got["id"] == "jsonl:fr1" and got["lang"] == "fr"
    finally:
        writer.close()
        runtime.close()


def test_the_feed_delivers_each_post_once_whichever_path_sees_it_first(home: Path) -> None:
    runtime = make_runtime()
    try:
        feed = PostFeed(runtime.store)
        got: list[str] = []
        feed.add_listener(lambda posts, _deleted: got.extend(p.id for p in posts))
        feed.poll_once()  # starts at the present
        a, b = fresh("a", text="first"), fresh("b", text="second")
        asyncio.run(add_posts(runtime, [a, b]))
        feed.heard([a], [])  # the in-process listener heard a, not b
        assert feed.poll_once() == 1
        feed.heard([b], [])  # heard late: already delivered by the poll
        edited = dataclasses.replace(a, text="first, edited")
        feed.heard([edited], [])  # an edit comes through again
        assert got == ["jsonl:a", "jsonl:b", "jsonl:a"]
        assert feed.poll_once() == 0
    finally:
        runtime.close()


async def test_watches_hear_posts_another_process_commits(home: Path) -> None:
    runtime = make_runtime()
    writer = make_runtime()  # another process's handle on the same store
    try:
        async with loopback(runtime) as client:
            h = Api.auth(Api(None, runtime, client).key("watcher"))
            made = await client.post("/v1/watches", json={"query": "bridge reopens"}, headers=h)
            wid = made.json()["id"]
            async with client.stream("GET", f"/v1/watches/{wid}/events", headers=h) as resp:
                lines = resp.aiter_lines()
                assert (await anext(lines)).startswith(": watching")
                await add_posts(writer, [fresh("w1", text="The bridge reopens at noon")])
                data = None
                async for line in lines:
                    if line.startswith("data: "):
                        data = json.loads(line[6:])
                        break
                assert data is not None and data["post"]["id"] == "jsonl:w1"
    finally:
        writer.close()
        runtime.close()


async def test_trends_count_posts_another_process_commits(home: Path) -> None:
    runtime = make_runtime()
    writer = make_runtime()
    said = ["the water is rising", "sandbags on the quay", "shops are closing early",
            "the ferry is cancelled"]
    try:
        async with loopback(runtime, trends=True) as client:
            h = Api.auth(Api(None, runtime, client).key("trends"))
            while (await client.get("/v1/trends", headers=h)).status_code == 503:
                await asyncio.sleep(0.05)  # warming up from the (empty) store
            await add_posts(writer, [
                fresh(f"f{i}", text=f"Flood alert at the harbour #hafenflut, {said[i % 4]} ({i})",
                      author=f"person{i}")
                for i in range(12)])
            for _ in range(200):
                data = (await client.get("/v1/trends", headers=h)).json()["data"]
                if any(t["label"] == "#hafenflut" for t in data):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"the burst never reached /v1/trends: {data}")
    finally:
        writer.close()
        runtime.close()


def test_config_toml_sources_take_options_as_tables(home: Path) -> None:
    (home / "config.toml").write_text(
        'sources = ["jsonl:/tmp/none.jsonl follow=false",\n'
        '           {spec = "rss:https://ex.org/feed.xml", interval = 45}]\n',
        encoding="utf-8")
    from townsquare.config import load_settings

    with pytest.raises(SourceError):  # follow=false reads once: the file must exist
        build_sources(load_settings().sources)
    (_, rss), = build_sources(load_settings().sources[1:])
    assert rss.interval == 45.0  # type: ignore[attr-defined]
