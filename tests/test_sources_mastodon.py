"""The ``mastodon`` source: recorded streaming events, and SSE / websocket replays."""

from __future__ import annotations

import html
import json
import re
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from httpx_sse import ServerSentEvent
from websockets.asyncio.server import ServerConnection

from conftest import shared_data, sse_events
from replay_servers import (
    HttpReplayServer,
    Reply,
    Route,
    Seen,
    open_stream,
    take_batches,
    websocket_replay,
)
from townsquare.model import Batch, Delete, Event, Post, Quarantine, Upsert
from townsquare.sources import SourceError, source_from_spec
from townsquare.sources._mastodon_parse import MastodonParser
from townsquare.sources.mastodon import MastodonSource

DOCS = "mastodon_documentation_examples.sse"


def _doc_events() -> list[ServerSentEvent]:
    return sse_events((shared_data("mastodon") / DOCS).read_text(encoding="utf-8"))


def _flodgatt() -> list[str]:
    folder = shared_data("mastodon")
    return [(folder / f"flodgatt_msg.event_txt_00{n}.txt").read_text(encoding="utf-8")
            for n in range(1, 7)]


def _check_post(post: Post, status: dict[str, Any]) -> None:
    """Every field against the raw Status, computed here without the code under test."""
    account = status["account"]
    acct = account["acct"]
    if "@" not in acct:
        acct = f"{acct}@{urlsplit(account['url']).hostname}"
    assert post.id == f"mastodon:{status['uri']}"
    assert post.source == "mastodon"
    assert post.author == acct
    assert post.author_name == (account.get("display_name") or None)
    assert post.author_id == account["url"]
    assert post.created_at == datetime.fromisoformat(status["created_at"].replace("Z", "+00:00"))
    assert post.url == status["url"]
    assert post.lang == status["language"]
    words = html.unescape(re.sub(r"<[^>]+>", " ", status["content"])).split()
    assert words and all(w in post.text for w in words)
    assert "<" not in post.text
    tags = [t["name"].lower() for t in status["tags"]]
    assert sorted(post.hashtags) == sorted(dict.fromkeys(tags))


@pytest.mark.shared
def test_documentation_examples_updates_deletes_and_edits() -> None:
    parser = MastodonParser("mastodon.social")
    kinds: dict[str, int] = {}
    seen_ids: dict[str, str] = {}
    posts: dict[str, Post] = {}
    for ev in _doc_events():
        kinds[ev.event] = kinds.get(ev.event, 0) + 1
        event = parser.parse(ev.event, ev.data)
        if ev.event in ("update", "status.update"):
            status = json.loads(ev.data)
            assert isinstance(event, Upsert), ev
            _check_post(event.post, status)
            seen_ids[status["id"]] = event.post.id
            posts[event.post.id] = event.post
        elif ev.event == "delete":
            # The payload is the local id: only ids this parser saw can be deleted.
            known = seen_ids.pop(ev.data, None)
            assert event == (Delete(known) if known else None)
            if known:
                posts.pop(known)
        else:
            assert event is None, ev  # notification, conversation, announcement...
    assert kinds == {
        "update": 4, "status.update": 4, "delete": 3, "notification": 1,
        "filters_changed": 1, "announcement": 1, "announcement.reaction": 1,
        "announcement.delete": 1, "conversation": 1,
    }
    # Deleted, then edited (status.update) again: the edit re-indexes it.
    edited = posts["mastodon:https://mastodon.social/users/trwnh/statuses/108914430312582020"]
    assert edited.text == "#test but edited" and edited.hashtags == ["test"]
    assert "mastodon:https://mastodon.social/users/trwnh/statuses/108914398911648589" not in posts
    assert len(posts) == 5
    assert posts["mastodon:https://letsalllovela.in/objects/e9cebb0c-7c75-414f-9608-20b5628e52d7"
                 ].mentions == ["disarray@pl.nulled.red"]


@pytest.mark.shared
def test_flodgatt_messages_with_embedded_and_string_payloads() -> None:
    parser = MastodonParser("mastodon.example")
    upserts = []
    for message in _flodgatt():
        obj = json.loads(message)
        event = parser.parse_message(message)
        if obj["event"] == "update":
            assert isinstance(event, Upsert)
            _check_post(event.post, obj["payload"])
            upserts.append(event.post)
            # The real websocket API sends the payload as JSON text: same post.
            as_text = json.dumps({"event": "update", "payload": json.dumps(obj["payload"])})
            again = MastodonParser("mastodon.example").parse_message(as_text)
            assert isinstance(again, Upsert)
            assert again.post.public_dict() == event.post.public_dict()
        else:
            assert obj["event"] == "delete" and event is None  # never saw that status
    assert [p.author for p in upserts] == [
        "federationbot@mastodon.host", "aljazeera_english@newsbots.eu",
        "it_was_inevitable@botsin.space", "telesur_es@newsbots.eu",
        "UnitooWebRadio@botsin.space",
    ]
    assert [p.lang for p in upserts] == ["en", "en", "en", "es", "en"]
    assert upserts[3].hashtags == ["fórmulauno", "francia"]
    assert "War\nby GoSoundtrack\nListeners: 0" in upserts[4].text  # <br> kept as line breaks


@pytest.mark.shared
def test_replies_spoilers_reblogs_privacy_and_garbage() -> None:
    status = json.loads(_flodgatt()[2])["payload"]
    parser = MastodonParser("botsin.space")
    parent = parser.status(status, "")
    assert isinstance(parent, Upsert)

    reply = dict(status, id="9", uri="https://botsin.space/x/9", in_reply_to_id=status["id"],
                 spoiler_text="cooking")
    event = parser.status(reply, "")
    assert isinstance(event, Upsert)
    assert event.post.reply_to == parent.post.id
    assert event.post.text.startswith("cooking\n\nI just wish to help somebody.")
    orphan = dict(reply, id="10", uri="https://botsin.space/x/10", in_reply_to_id="123")
    event = parser.status(orphan, "")
    assert isinstance(event, Upsert) and event.post.reply_to is None

    boost = {"id": "11", "reblog": status, "visibility": "public", "account": {}}
    event = parser.status(boost, "")
    assert isinstance(event, Upsert) and event.post.id == parent.post.id
    assert parser.parse("delete", "11") is None  # un-boosting deletes nothing

    assert parser.status(dict(status, visibility="direct"), "") is None
    bad = parser.parse("update", '{"id": "1", "content": "<p>x</p>"}')
    assert isinstance(bad, Quarantine) and "uri" in bad.reason
    bad = parser.parse("update", "{oops")
    assert isinstance(bad, Quarantine) and "invalid JSON" in bad.reason
    assert isinstance(parser.parse_message("[]"), Quarantine)


def test_configuration_and_urls() -> None:
    src = MastodonSource("https://mastodon.social/", timeline="hashtag:#Caturday", token="t")
    assert src.key == "mastodon:https://mastodon.social#hashtag:#Caturday"
    assert src.sse_url() == "https://mastodon.social/api/v1/streaming/hashtag?tag=Caturday"
    assert src.websocket_url() == (
        "wss://mastodon.social/api/v1/streaming?stream=hashtag&tag=Caturday&access_token=t")
    assert src.timeline_url("5") == (
        "https://mastodon.social/api/v1/timelines/tag/Caturday?min_id=5&limit=40")
    local = source_from_spec("mastodon:example.social", timeline="public:local")
    assert isinstance(local, MastodonSource)
    assert local.sse_url() == "https://example.social/api/v1/streaming/public/local"
    assert local.timeline_url("5").endswith("/api/v1/timelines/public?min_id=5&limit=40&local=true")
    with pytest.raises(SourceError, match="instance URL"):
        source_from_spec("mastodon")
    with pytest.raises(SourceError, match="timeline"):
        MastodonSource("https://m.example", timeline="home")
    with pytest.raises(SourceError, match="transport"):
        MastodonSource("https://m.example", transport="carrier-pigeon")


# --- replays ----------------------------------------------------------------------------


def _apply(store: dict[str, Post], batches: list[Batch]) -> None:
    for batch in batches:
        for event in batch.events:
            if isinstance(event, Upsert):
                store[event.post.id] = event.post
            elif isinstance(event, Delete):
                store.pop(event.id, None)


def _blocks() -> list[str]:
    """The recorded SSE stream, event by event, exactly as written."""
    text = (shared_data("mastodon") / DOCS).read_text(encoding="utf-8")
    return [b + "\n\n" for b in text.split("\n\n") if b.strip()]


@pytest.mark.shared
async def test_sse_client_survives_a_drop_and_backfills_the_gap() -> None:
    blocks = _blocks()
    events = _doc_events()
    cut, missed = 9, 9  # the first connection dies after 9 events; event 9 happens while down
    connections: list[Seen] = []

    def stream(seen: Seen, reply: Reply) -> None:
        first = not connections
        connections.append(seen)
        reply.start_chunked(200, {"Content-Type": "text/event-stream"})
        reply.chunk(b":)\n")
        todo = blocks[:cut] if first else blocks[missed + 1:]
        for block in todo:
            data = block.encode()
            reply.chunk(data[: len(data) // 2])  # events split across chunks, as TCP may
            reply.chunk(data[len(data) // 2:] + b":thump\n")
        if first:
            reply.drop()
            return
        while not reply.stop.is_set():  # hold the line open with heartbeats
            reply.chunk(b":thump\n")
            time.sleep(0.02)

    def timeline(seen: Seen, reply: Reply) -> None:
        """REST replay: the recorded statuses up to the gap, newer than min_id."""
        min_id = int(seen.query["min_id"][0])
        statuses: dict[str, Any] = {}
        for ev in events[: missed + 1]:
            if ev.event in ("update", "status.update"):
                status = json.loads(ev.data)
                statuses[status["id"]] = status
        newer = [s for s in statuses.values() if int(s["id"]) > min_id]
        newer.sort(key=lambda s: int(s["id"]), reverse=True)
        reply.send(200, json.dumps(newer).encode(), {"Content-Type": "application/json"})

    routes: dict[str, Route] = {
        "/api/v1/streaming/public": stream, "/api/v1/timelines/public": timeline}
    with HttpReplayServer(routes) as srv:
        source = MastodonSource(srv.url(), token="sekrit", batch_wait=0.01,
                                reconnect_base=0.01, reconnect_cap=0.02)

        def caught_up(batches: list[Batch]) -> bool:
            # 3 events before the drop, 1 backfilled, 6 after (the rest are ignored kinds).
            return sum(len(b.events) for b in batches) >= 10

        async with open_stream(source) as stream_:
            batches = await take_batches(stream_, caught_up)
            assert source.connected
        [backfill] = srv.requests_to("/api/v1/timelines/public")

    streams = srv.requests_to("/api/v1/streaming/public")
    assert len(streams) == 2 and source.reconnects == 1
    assert all(s.headers["Authorization"] == "Bearer sekrit" for s in [*streams, backfill])
    # The backfill starts after the newest status the first connection delivered.
    assert backfill.query["min_id"] == ["109348677773283527"]
    assert sum(len(b.events) for b in batches) == 10
    store: dict[str, Post] = {}
    _apply(store, batches)
    assert sorted(store) == sorted([
        "mastodon:https://letsalllovela.in/objects/e9cebb0c-7c75-414f-9608-20b5628e52d7",
        "mastodon:http://mastodon.local/users/admin/statuses/109348677773283527",
        "mastodon:https://mstdn.jp/users/aiueohisama/statuses/108914354891945610",
        "mastodon:https://ruby.social/users/chrismo/statuses/109348684454557541",  # backfilled
        "mastodon:https://mastodon.social/users/trwnh/statuses/108914430312582020",
    ])
    # Deleted after the reconnect: the local id -> post id map outlived the connection.
    deletes = [e.id for b in batches for e in b.events if isinstance(e, Delete)]
    assert "mastodon:https://mastodon.social/users/trwnh/statuses/108914398911648589" in deletes


@pytest.mark.shared
async def test_websocket_transport_replays_flodgatt_messages() -> None:
    messages = []
    for raw in _flodgatt():
        obj = json.loads(raw)
        payload = obj["payload"]
        # On the wire the payload is JSON text inside the JSON message.
        wire = payload if isinstance(payload, str) else json.dumps(payload)
        messages.append(json.dumps({"stream": ["public"], "event": obj["event"], "payload": wire}))
    messages.insert(2, "not json at all")

    async def replay(ws: ServerConnection, n: int) -> None:
        for message in messages:
            await ws.send(message)
        await ws.wait_closed()

    async with websocket_replay(replay) as server:
        source = MastodonSource(f"http://127.0.0.1:{server.port}", transport="websocket",
                                token="tok", batch_wait=0.01)

        def all_in(batches: list[Batch]) -> bool:
            return sum(len(b.events) for b in batches) >= 6

        async with open_stream(source) as stream:
            batches = await take_batches(stream, all_in)
    [query] = server.queries()
    assert query == {"stream": ["public"], "access_token": ["tok"]}
    events: list[Event] = [e for b in batches for e in b.events]
    assert sum(isinstance(e, Upsert) for e in events) == 5
    [bad] = [e for e in events if isinstance(e, Quarantine)]
    assert bad.raw == b"not json at all"
    assert batches[-1].cursor == "104072567176319159"
