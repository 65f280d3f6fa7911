"""Standing queries: saved per key, matched against committed posts, pushed by SSE and webhook."""

from __future__ import annotations

import asyncio
import json
import queue
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from factories import make_post
from service_helpers import POSTS, Api, add_posts, error_of, make_runtime, serve_app
from townsquare.ingest.supervisor import Supervisor
from townsquare.model import Batch, Post, Upsert
from townsquare.service.app import create_app
from townsquare.sources.base import Source
from townsquare.watches import Watch, post_matches, tokens
from townsquare.watches import hub as watch_hub


class FedSource(Source):
    """Yields whatever batches the test puts in ``feed`` (from any thread)."""

    kind = "fed"

    def __init__(self) -> None:
        self.feed: queue.Queue[list[Post]] = queue.Queue()
        self.n = 0

    @property
    def key(self) -> str:
        return "fed:test"

    async def stream(self, cursor: str | None):  # type: ignore[override]
        while True:
            try:
                posts = self.feed.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.01)
                continue
            self.n += 1
            yield Batch([Upsert(p) for p in posts], str(self.n))


fresh = partial(make_post, author="erin", url=None)


def test_matching_rule_folds_case_and_accents() -> None:
    watch = Watch(id="w", owner=1, query="Grève Valmont", min_terms=2)
    hit = fresh("a", text="La GREVE continue à valmont")
    assert post_matches(watch, hit, tokens(hit.text))
    half = fresh("b", text="La grève continue")
    assert not post_matches(watch, half, tokens(half.text))
    watch.min_terms = 1
    assert post_matches(watch, half, tokens(half.text))
    watch.langs = ["fr"]
    assert not post_matches(watch, half, tokens(half.text))  # no lang on the post


async def test_watches_are_scoped_to_the_key_that_made_them(home: Path) -> None:
    async with serve_app(POSTS) as api:
        a, b = Api.auth(api.key("a")), Api.auth(api.key("b"))
        made = await api.client.post("/v1/watches", json={"query": "storm coast"}, headers=a)
        assert made.status_code == 200, made.text
        watch = made.json()
        assert watch["id"].startswith("watch_") and watch["min_terms"] == 2
        assert "owner" not in watch
        mine = (await api.client.get("/v1/watches", headers=a)).json()["data"]
        assert [w["id"] for w in mine] == [watch["id"]]
        assert (await api.client.get("/v1/watches", headers=b)).json()["data"] == []
        other = await api.client.delete(f"/v1/watches/{watch['id']}", headers=b)
        assert other.status_code == 404
        assert error_of(other)["code"] == "watch_not_found"
        events = await api.client.get(f"/v1/watches/{watch['id']}/events", headers=b)
        assert events.status_code == 404
        bad = await api.client.post("/v1/watches", json={"query": "a b", "min_terms": 3},
                                    headers=a)
        assert bad.status_code == 400
        hook = await api.client.post("/v1/watches",
                                     json={"query": "x", "webhook_url": "ftp://x"}, headers=a)
        assert hook.status_code in (400, 422)
        assert (await api.client.get("/v1/watches")).status_code == 401
        gone = await api.client.delete(f"/v1/watches/{watch['id']}", headers=a)
        assert gone.status_code == 200 and gone.json()["deleted"] is True
        assert (await api.client.get("/v1/watches", headers=a)).json()["data"] == []


async def test_watches_survive_a_restart(home: Path) -> None:
    runtime = make_runtime()
    async with serve_app(runtime=runtime) as api:
        h = Api.auth(api.key("a"))
        made = (await api.client.post("/v1/watches", json={"query": "storm", "langs": ["en"]},
                                      headers=h)).json()
    async with serve_app() as api:  # a new runtime and app over the same home
        listed = (await api.client.get("/v1/watches", headers=h)).json()["data"]
        assert listed == [made]


class Hook(BaseHTTPRequestHandler):
    received: queue.Queue[dict[str, Any]] = queue.Queue()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.put(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@asynccontextmanager
async def uvicorn_app(
    source: FedSource, posts: list[Post] | None = None
) -> AsyncIterator[tuple[str, Api]]:
    """The real app on a loopback port (SSE needs a streaming transport), ingesting ``source``.

    With ``posts`` (stored before it starts) the trend engine is on, warmed from them.
    """
    runtime = make_runtime()
    runtime.settings.webhook_allow = ["127.0.0.1"]  # the tests' receivers are on loopback
    if posts:
        await add_posts(runtime, posts)
    sup = Supervisor(runtime.store, runtime.embedder, [("fed", source)])
    app = create_app(runtime, supervisor=sup, trends=bool(posts), web=False)
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
            yield str(client.base_url), Api(app, runtime, client)
    finally:
        await sup.stop(grace_s=0.1)
        server.should_exit = True
        await task
        sock.close()
        runtime.close()


@contextmanager
def webhook_receiver() -> Iterator[str]:
    """A real HTTP server on loopback that puts every POSTed event in ``Hook.received``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


async def test_sse_and_webhook_get_new_matching_posts_only(home: Path) -> None:
    source = FedSource()
    with webhook_receiver() as hook_url:
        async with uvicorn_app(source) as (_, api):
            h = Api.auth(api.key("a"))
            made = await api.client.post(
                "/v1/watches", json={"query": "harbour flood", "webhook_url": hook_url},
                headers=h)
            wid = made.json()["id"]
            async with api.client.stream("GET", f"/v1/watches/{wid}/events",
                                         headers=h) as resp:
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/event-stream")
                lines = resp.aiter_lines()
                assert (await anext(lines)).startswith(": watching")
                source.feed.put([fresh("miss", text="A quiet day at the harbour"),
                                 fresh("hit", text="Flood in the HARBOUR after the storm surge")])
                data = None
                async for line in lines:
                    if line.startswith("data: "):
                        data = json.loads(line[6:])
                        break
                assert data is not None
                assert data["watch_id"] == wid and data["post"]["id"] == "jsonl:hit"
            got = await asyncio.to_thread(Hook.received.get, True, 30)
            assert got["watch_id"] == wid and got["post"]["id"] == "jsonl:hit"
            assert Hook.received.empty()  # the non-matching post was not sent


async def test_a_revoked_keys_watches_stop(home: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(watch_hub, "LIVE_KEYS_REFRESH_S", 0.0)
    source = FedSource()
    with webhook_receiver() as hook_url:
        async with uvicorn_app(source) as (_, api):
            ids = {}
            for name in ("gone", "kept"):
                made = await api.client.post(
                    "/v1/watches", json={"query": "harbour flood", "webhook_url": hook_url},
                    headers=Api.auth(api.key(name)))
                ids[name] = made.json()["id"]
            assert api.runtime.store.revoke_api_key("gone")
            source.feed.put([fresh("hit", text="Flood in the harbour")])
            got = await asyncio.to_thread(Hook.received.get, True, 30)
            # Watches fire in creation order, so the revoked key's would have come first.
            assert got["watch_id"] == ids["kept"]
            await asyncio.sleep(0.3)
            assert Hook.received.empty()


async def test_a_watches_json_from_before_the_store_is_imported_once(home: Path) -> None:
    runtime = make_runtime()
    key_id = runtime.store.create_api_key("old", "roomy", "pfx", "hash").id
    old = [{"id": "watch_old", "owner": key_id, "query": "storm coast", "min_terms": 2,
            "authors": [], "sources": [], "langs": ["en"], "webhook_url": None,
            "created_at": 1_700_000_000.25, "kind": "stories", "window": "1h", "min_posts": 3,
            "notified": ["s1", "s2"], "secret": "whsec_kept"}]
    (home / "watches.json").write_text(json.dumps(old), encoding="utf-8")
    async with serve_app(runtime=runtime) as api:
        hub = api.app.state.watches
        (watch,) = hub.saved.of(key_id)
        assert (watch.id, watch.query, watch.min_posts, watch.secret) == (
            "watch_old", "storm coast", 3, "whsec_kept")
        assert watch.created_at == 1_700_000_000.25
        # The stories it had reported stay reported.
        assert runtime.store.watch_claims(["watch_old"], "story:") == {
            ("watch_old", "story:s1"), ("watch_old", "story:s2")}
    assert not (home / "watches.json").exists()
    assert json.loads((home / "watches.json.imported").read_text(encoding="utf-8")) == old
    async with serve_app() as api:  # a restart imports nothing again
        assert [w.id for w in api.app.state.watches.saved.all()] == ["watch_old"]


async def test_an_unreadable_watch_file_is_set_aside(home: Path) -> None:
    (home / "watches.json").write_text("{not json", encoding="utf-8")
    async with serve_app() as api:
        h = Api.auth(api.key("a"))
        assert (await api.client.get("/v1/watches", headers=h)).json()["data"] == []
        made = await api.client.post("/v1/watches", json={"query": "storm"}, headers=h)
        assert made.status_code == 200
    assert (home / "watches.json.unreadable").read_text(encoding="utf-8") == "{not json"
    assert not (home / "watches.json").exists()


async def test_two_replicas_on_one_store_share_watches_and_send_each_webhook_once(
    home: Path, store_backend: str, monkeypatch: Any
) -> None:
    """Two apps on one store (one SQLite file, or one PostgreSQL schema) are replicas."""
    monkeypatch.setenv("TOWNSQUARE_WEBHOOK_ALLOW", '["127.0.0.1"]')
    with webhook_receiver() as hook_url:
        async with serve_app() as one, serve_app() as two:
            h = Api.auth(one.key("a"))  # keys are in the store: valid on both
            made = (await one.client.post("/v1/watches", headers=h, json={
                "query": "harbour flood", "webhook_url": hook_url})).json()
            listed = (await two.client.get("/v1/watches", headers=h)).json()["data"]
            assert [w["id"] for w in listed] == [made["id"]]
            assert listed[0]["query"] == "harbour flood"
            # Each replica matches every committed post for its own event streams...
            subs = [api.app.state.watches.subscribe(made["id"]) for api in (one, two)]
            await add_posts(one.runtime, [fresh("hit", text="Flood in the harbour, again")])
            for sub in subs:
                event = await asyncio.wait_for(sub.queue.get(), 30)
                assert event["post"]["id"] == "jsonl:hit"
            # ...and the webhook goes out once, from whichever claimed the match first.
            got = await asyncio.to_thread(Hook.received.get, True, 30)
            assert got["post"]["id"] == "jsonl:hit"
            await asyncio.sleep(0.5)
            assert Hook.received.empty()
            # A watch deleted through one replica is gone on the other.
            gone = await two.client.delete(f"/v1/watches/{made['id']}", headers=h)
            assert gone.status_code == 200
            assert (await one.client.get("/v1/watches", headers=h)).json()["data"] == []
            events = await one.client.get(f"/v1/watches/{made['id']}/events", headers=h)
            assert events.status_code == 404
