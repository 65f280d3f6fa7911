"""Stories over HTTP: cited LLM summaries in either persona, cached; story watches."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import townsquare.runtime
from factories import make_post
from service_helpers import Api, error_of, serve_app
from test_service_watches import FedSource, Hook, uvicorn_app, webhook_receiver
from townsquare.model import Post
from trends_helpers import background

FIRE = "Huge fire at the Grand Hotel downtown"
#: Different words around the same news, so the posts are not folded as near-duplicates.
_SAID = [
    "smoke everywhere, stay inside", "firefighters on ladders at the roof",
    "my cousin works there and got out fine", "the whole street is closed by police",
    "you can see flames from the river", "trains to Central are held because of the smoke",
    "guests were evacuated in their pyjamas", "a helicopter is circling the square",
]


def _traffic(now: datetime) -> list[Post]:
    posts = background(now - timedelta(hours=6), hours=6, prefix="jsonl:bg")
    for i in range(24):  # a burst 10 to 35 minutes ago, by many authors
        posts.append(make_post(f"fire{i}", f"local{i}", f"{FIRE}: {_SAID[i % len(_SAID)]} ({i})",
                               10 + i, now=now, url=None))
    return posts


async def _warm(api: Api) -> None:
    for _ in range(2000):
        if api.services.live.trends is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the trend engine never warmed up")


def _fire_story(body: dict) -> dict:  # type: ignore[type-arg]
    for story in body["data"]:
        if "fire" in story["title"].casefold() or "hotel" in story["title"].casefold():
            return story  # type: ignore[no-any-return]
    raise AssertionError(f"no fire story in {[s['title'] for s in body['data']]}")


async def test_a_quiet_stream_does_not_keep_an_old_hour_current(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    clock = [now]
    monkeypatch.setattr(townsquare.runtime, "utcnow", lambda: clock[0])
    monkeypatch.setenv("TOWNSQUARE_STORY_REFRESH_S", "0")
    async with serve_app(_traffic(now)) as api:
        await _warm(api)
        h = Api.auth(api.key("a"))

        async def fire_trending() -> bool:
            resp = await api.client.get("/v1/trends", params={"window": "1h"}, headers=h)
            assert resp.status_code == 200, resp.text
            return "hotel" in resp.text.casefold()

        assert await fire_trending()
        clock[0] = now + timedelta(hours=2)  # two hours without a post
        assert not await fire_trending()  # the last hour is empty, not the old burst
        stories = await api.client.get("/v1/stories", params={"window": "1h"}, headers=h)
        assert stories.json()["data"] == []


async def test_stories_get_cited_summaries_in_either_persona_and_are_cached(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOWNSQUARE_STORY_REFRESH_S", "0")  # only requests summarize here
    async with serve_app(_traffic(datetime.now(UTC))) as api:
        await _warm(api)
        h = Api.auth(api.key("a"))
        api.llm.enqueue(["There is a huge fire at the Grand Hotel downtown [1]. Firefighters ",
                         "are on ladders at the roof [2][9]. The hotel was bombed [1]."])
        resp = await api.client.get("/v1/stories", params={"window": "1h", "limit": 1},
                                    headers=h)
        assert resp.status_code == 200, resp.text
        story = _fire_story(resp.json())
        assert resp.json()["mode"] == "regular"
        assert story["summary_mode"] == "regular"
        # [9] named no post the model was shown: dropped; a sentence no post supports
        # is dropped (the gate); markers renumbered in order, each sentence verified.
        summary = story["summary"]
        assert summary.startswith("There is a huge fire at the Grand Hotel downtown [1]. ")
        assert summary.endswith("Firefighters are on ladders at the roof [2].")
        cites = story["citations"]
        assert [c["n"] for c in cites] == [1, 2]
        assert "firefighters on ladders" in cites[1]["text"]
        assert all(c["text"].startswith(FIRE) for c in cites)
        # The model was shown the story's posts as quoted data, in the regular persona.
        prompt = api.llm.last_messages
        assert "<posts>" in prompt[-1].content and "trending story" in prompt[-1].content
        assert "witty" not in prompt[0].content
        calls = len(api.llm.calls)

        again = await api.client.get("/v1/stories", params={"limit": 1}, headers=h)
        assert _fire_story(again.json())["summary"] == story["summary"]
        assert len(api.llm.calls) == calls  # served from the cache

        api.llm.enqueue(["Yes, the Grand Hotel downtown: huge fire, smoke everywhere [1]."])
        fun = await api.client.get("/v1/stories", params={"limit": 1, "mode": "fun"},
                                   headers=h)
        fun_story = _fire_story(fun.json())
        assert fun_story["summary_mode"] == "fun"
        assert fun_story["summary"] == (
            "Yes, the Grand Hotel downtown: huge fire, smoke everywhere [1].")
        assert "witty" in api.llm.last_messages[0].content
        assert fun_story["citations"][0]["text"].startswith(FIRE)

        none = await api.client.get("/v1/stories", params={"summaries": 0, "mode": "fun",
                                                           "window": "24h"}, headers=h)
        assert none.status_code == 200
        assert all(s["summary"] is None for s in none.json()["data"])

        bad = await api.client.get("/v1/stories", params={"mode": "grumpy"}, headers=h)
        assert bad.status_code == 400
        err = error_of(bad)
        assert err["param"] == "mode" and "regular" in err["message"]


async def test_an_unavailable_model_leaves_stories_unsummarized_not_broken(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOWNSQUARE_STORY_REFRESH_S", "0")
    async with serve_app(_traffic(datetime.now(UTC))) as api:
        await _warm(api)
        h = Api.auth(api.key("a"))
        api.llm.enqueue_error(unavailable=True)
        resp = await api.client.get("/v1/stories", params={"limit": 1, "summaries": 1},
                                    headers=h)
        assert resp.status_code == 200
        story = _fire_story(resp.json())
        assert story["summary"] is None and story["citations"] == []
        later = await api.client.get("/v1/stories", params={"limit": 1}, headers=h)
        assert _fire_story(later.json())["summary"]  # the next request tries again


async def test_a_deleted_post_leaves_stories_and_samples(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOWNSQUARE_STORY_REFRESH_S", "0")
    async with serve_app(_traffic(datetime.now(UTC))) as api:
        await _warm(api)
        engine = api.services.live.trends
        ids = {f"jsonl:fire{i}" for i in range(24)}
        assert engine.forget(sorted(ids)) == 24
        for story in engine.stories("1h", 10):
            assert not ids & set(story.post_ids)
        for trend in engine.trends("1h", 20):
            assert not ids & set(trend.sample_ids)


async def test_a_story_watch_pushes_each_new_matching_story_once(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOWNSQUARE_STORY_REFRESH_S", "0")
    monkeypatch.setenv("TOWNSQUARE_WEBHOOK_ALLOW", '["127.0.0.1"]')  # a loopback receiver
    with webhook_receiver() as hook_url:
        async with serve_app(_traffic(datetime.now(UTC))) as api:
            await _warm(api)
            a, b = Api.auth(api.key("a")), Api.auth(api.key("b"))
            made = await api.client.post("/v1/watches", headers=a, json={
                "query": "hotel fire", "kind": "stories", "window": "1h", "min_posts": 5,
                "webhook_url": hook_url})
            assert made.status_code == 200, made.text
            watch = made.json()
            assert watch["kind"] == "stories" and watch["min_posts"] == 5
            big = await api.client.post("/v1/watches", headers=b, json={
                "query": "hotel fire", "kind": "stories", "min_posts": 1000,
                "webhook_url": hook_url})
            assert big.status_code == 200
            bad = await api.client.post("/v1/watches", headers=a, json={
                "query": "fire", "kind": "stories", "window": "2d"})
            assert bad.status_code == 400 and error_of(bad)["param"] == "window"

            loop = api.services.live.new_story_loop(60, summaries=0)
            api.llm.enqueue(["Fire at the Grand Hotel [1]."])
            await loop.refresh()
            got = await asyncio.to_thread(Hook.received.get, True, 30)
            assert got["watch_id"] == watch["id"]
            story = got["story"]
            assert "hotel" in story["title"].casefold() or "fire" in story["title"].casefold()
            assert story["size"] >= 5 and story["posts"]
            assert story["summary"] == "Fire at the Grand Hotel [1]."
            assert story["citations"][0]["text"].startswith(FIRE)

            # The same story again: not pushed twice, nor to the watch whose threshold it
            # misses. Each push is claimed in the store before it is sent (remembered across
            # restarts and replicas), so the claims say what the refresh sent: no waiting.
            await loop.refresh()
            claims = api.runtime.store.watch_claims([watch["id"], big.json()["id"]], "story:")
            assert claims == {(watch["id"], "story:" + story["id"])}
            assert Hook.received.empty()


async def test_a_story_watch_streams_new_stories_as_server_sent_events(home: Path) -> None:
    async with uvicorn_app(FedSource(), posts=_traffic(datetime.now(UTC))) as (_, api):
        await _warm(api)
        h = Api.auth(api.key("a"))
        made = await api.client.post("/v1/watches", headers=h, json={
            "query": "grand hotel", "kind": "stories"})
        wid = made.json()["id"]
        async with api.client.stream("GET", f"/v1/watches/{wid}/events", headers=h) as resp:
            assert resp.status_code == 200
            lines = resp.aiter_lines()
            assert (await anext(lines)).startswith(": watching")
            api.llm.enqueue(["Fire at the Grand Hotel [1]."])
            await api.services.live.new_story_loop(60, summaries=0).refresh()
            event = None
            async for line in lines:
                if line.startswith("event: "):
                    event = line[7:]
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    break
        assert event == "story"
        assert data["watch_id"] == wid
        assert data["story"]["summary"] == "Fire at the Grand Hotel [1]."
