"""The ``jetstream`` source: real Jetstream v1 captures, and a replaying websocket server."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from conftest import shared_data
from replay_servers import open_stream, take_batches, websocket_replay
from townsquare.model import Batch, Delete, Engage, Event, Identity, Post, Quarantine, Upsert
from townsquare.sources import SourceError, source_from_spec
from townsquare.sources._net import Bounded
from townsquare.sources.jetstream import (
    DEFAULT_URL,
    JetstreamSource,
    parse_message,
    subscribe_url,
)

CORPUS = "internal_corpus_testdata_expected_v1.jsonl"
GOLDEN = "internal_subscribe_testdata_golden_v1.jsonl"
POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"
REPOST = "app.bsky.feed.repost"


def _lines(name: str) -> list[str]:
    return (shared_data("jetstream") / name).read_text(encoding="utf-8").splitlines()


def _when(text: str) -> datetime:
    """createdAt read independently of the code under test."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _check_post(post: Post, msg: dict[str, Any]) -> None:
    did, commit = msg["did"], msg["commit"]
    record = commit["record"]
    assert post.id == f"bluesky:at://{did}/{POST}/{commit['rkey']}"
    assert post.source == "bluesky"
    assert post.author == did and post.author_id == did  # no identity event named a handle
    assert post.text == record["text"]
    assert post.created_at == _when(record["createdAt"])
    langs = record.get("langs") or [None]
    assert post.lang == (langs[0].split("-")[0].lower() if langs[0] else None)
    assert post.url == f"https://bsky.app/profile/{did}/post/{commit['rkey']}"
    parent = record.get("reply", {}).get("parent", {}).get("uri")
    assert post.reply_to == (f"bluesky:{parent}" if parent else None)


@pytest.mark.shared
@pytest.mark.parametrize("name", [CORPUS, GOLDEN])
def test_recorded_events_map_to_posts_deletes_and_nothing_else(name: str) -> None:
    handles: Bounded[str] = Bounded(100)
    seen: Counter[str] = Counter()
    for line in _lines(name):
        msg = json.loads(line)
        parsed = parse_message(line, handles)
        assert parsed.time_us == msg["time_us"]
        commit = msg.get("commit") or {}
        if msg["kind"] == "commit" and commit["collection"] == POST:
            if commit["operation"] == "create":
                assert isinstance(parsed.event, Upsert), line
                _check_post(parsed.event.post, msg)
                seen["post"] += 1
            else:
                assert commit["operation"] == "delete"
                rkey = commit["rkey"]
                assert parsed.event == Delete(f"bluesky:at://{msg['did']}/{POST}/{rkey}")
                seen["delete"] += 1
        elif msg["kind"] == "commit" and commit["collection"] in (LIKE, REPOST) \
                and commit["operation"] == "create":
            # A like or repost counts on the post it names.
            subject = commit["record"]["subject"]["uri"]
            assert parsed.event == Engage(
                f"bluesky:{subject}", likes=int(commit["collection"] == LIKE),
                reposts=int(commit["collection"] == REPOST),
                record=f"at://{msg['did']}/{commit['collection']}/{commit['rkey']}"), line
            seen["engage"] += 1
        else:
            # Follows, blocks, profiles, other lexicons, account events and identity
            # events without a handle carry nothing to index.
            assert parsed.event is None, line
            seen["ignored"] += 1
    expected = {CORPUS: (17, 1, 120, 14), GOLDEN: (1, 0, 2, 7)}[name]
    assert (seen["post"], seen["delete"], seen["engage"], seen["ignored"]) == expected


@pytest.mark.shared
def test_corpus_counts_match_its_manifest() -> None:
    manifest = json.loads((shared_data("jetstream") / "internal_corpus_testdata_manifest.json")
                          .read_text(encoding="utf-8"))
    messages = [json.loads(line) for line in _lines(CORPUS)]
    ops = Counter(m["commit"]["operation"] for m in messages if m["kind"] == "commit")
    kinds = Counter(m["kind"] for m in messages)
    assert len(messages) == manifest["v1_events"]
    assert (ops["create"], ops["update"], ops["delete"]) == (
        manifest["creates"], manifest["updates"], manifest["deletes"])
    assert (kinds["identity"], kinds["account"]) == (manifest["identity"], manifest["account"])
    assert {m["did"] for m in messages if m["kind"] == "commit"} == set(manifest["commit_dids"])
    events = [parse_message(json.dumps(m)).event for m in messages]
    assert sum(isinstance(e, Upsert) for e in events) == 17
    assert sum(isinstance(e, Delete) for e in events) == 1


def _golden_post() -> dict[str, Any]:
    [msg] = [m for m in map(json.loads, _lines(GOLDEN))
             if m.get("commit", {}).get("collection") == POST]
    return msg


@pytest.mark.shared
def test_identity_handles_name_later_posts_and_quotes_are_linked() -> None:
    msg = _golden_post()
    handles: Bounded[str] = Bounded(10)
    identity = {"did": msg["did"], "time_us": 1, "kind": "identity",
                "identity": {"did": msg["did"], "handle": "rsv.example.com", "seq": 1}}
    assert parse_message(json.dumps(identity), handles).event == Identity(
        msg["did"], "rsv.example.com")
    quoted = "at://did:plc:j76trmiofvaxxpvx2vnb2vwf/app.bsky.feed.post/3mmojbrjwbs26"
    msg["commit"]["record"]["embed"] = {
        "$type": "app.bsky.embed.recordWithMedia",
        "record": {"$type": "app.bsky.embed.record", "record": {"uri": quoted, "cid": "x"}},
        "media": {"$type": "app.bsky.embed.images", "images": []},
    }
    event = parse_message(json.dumps(msg), handles).event
    assert isinstance(event, Upsert)
    assert event.post.author == "rsv.example.com" and event.post.author_id == msg["did"]
    assert event.post.quote_of == f"bluesky:{quoted}"
    # Quoting a list or a feed generator is not quoting a post.
    msg["commit"]["record"]["embed"] = {
        "$type": "app.bsky.embed.record",
        "record": {"uri": "at://did:plc:x/app.bsky.graph.list/3abc", "cid": "y"},
    }
    event = parse_message(json.dumps(msg), handles).event
    assert isinstance(event, Upsert) and event.post.quote_of is None


@pytest.mark.shared
@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda m: "{not json", "invalid JSON"),
        (lambda m: "[1, 2]", "JSON object"),
        (lambda m: m["commit"]["record"].pop("text") and m, "without text"),
        (lambda m: m["commit"]["record"].update(createdAt="yesterday") or m, "createdAt"),
        (lambda m: m["commit"].pop("rkey") and m, "rkey"),
    ],
)
def test_malformed_messages_are_quarantined(mangle: Any, reason: str) -> None:
    broken = mangle(_golden_post())
    raw = broken if isinstance(broken, str) else json.dumps(broken)
    event = parse_message(raw).event
    assert isinstance(event, Quarantine) and reason in event.reason
    assert event.source == "bluesky" and event.raw == raw.encode()


def test_configuration() -> None:
    assert JetstreamSource(None).key == f"jetstream:{DEFAULT_URL}"
    assert source_from_spec("jetstream:ws://127.0.0.1:1/subscribe").key == (
        "jetstream:ws://127.0.0.1:1/subscribe")
    with pytest.raises(SourceError, match="websocket URL"):
        source_from_spec("jetstream:https://example.org")
    with pytest.raises(SourceError, match="rewnd"):
        JetstreamSource(None, rewnd=3)
    url = subscribe_url("wss://h/subscribe?compress=false&cursor=9", 42)
    assert url == f"wss://h/subscribe?compress=false&wantedCollections={POST}&cursor=42"


# --- the client against a replaying websocket server -----------------------------------


def _apply(store: dict[str, Post], events: list[Event]) -> None:
    """What the store does with events: upsert by id, delete by id."""
    for event in events:
        if isinstance(event, Upsert):
            store[event.post.id] = event.post
        elif isinstance(event, Delete):
            store.pop(event.id, None)


@pytest.mark.shared
async def test_client_reconnects_with_rewound_cursor_and_loses_nothing() -> None:
    # Jetstream replays in time order from a cursor; so does this server.
    lines = sorted(_lines(CORPUS), key=lambda line: json.loads(line)["time_us"])
    times = [json.loads(line)["time_us"] for line in lines]
    cut = 80
    done = asyncio.Event()

    async def replay(ws: ServerConnection, n: int) -> None:
        query = ws.request.path if ws.request else ""
        assert f"wantedCollections={POST}" in query
        cursor = int(query.split("cursor=")[1]) if "cursor=" in query else None
        if n == 0:
            for line in lines[:cut]:
                await ws.send(line)
            await asyncio.sleep(0.05)  # let the client read them before the line goes dead
            ws.transport.abort()  # no close frame: a crash, not a goodbye
            return
        for line, t in zip(lines, times, strict=True):
            if cursor is None or t >= cursor:
                await ws.send(line)
        done.set()
        await ws.wait_closed()

    async with websocket_replay(replay) as server:
        source = JetstreamSource(server.url("/subscribe"), batch_wait=0.01,
                                 reconnect_base=0.01, reconnect_cap=0.02)
        store: dict[str, Post] = {}
        upserts = 0

        def caught_up(batches: list[Batch]) -> bool:
            return done.is_set() and batches[-1].cursor == str(max(times))

        async with open_stream(source) as stream:
            batches = await take_batches(stream, caught_up)
            assert source.connected and source.last_error is None
        assert not source.connected  # a closed stream is no longer connected
        for batch in batches:
            _apply(store, batch.events)
            upserts += sum(isinstance(e, Upsert) for e in batch.events)

    first, second = server.queries()
    assert "cursor" not in first  # no saved cursor: start live
    resumed_from = int(second["cursor"][0])
    acked = max(int(b.cursor) for b in batches if b.cursor and int(b.cursor) <= times[cut - 1])
    assert resumed_from == acked - 5_000_000  # the 5 s rewind
    assert source.reconnects == 1

    creates = {
        f"bluesky:at://{m['did']}/{POST}/{m['commit']['rkey']}"
        for m in map(json.loads, lines)
        if m["kind"] == "commit" and m["commit"]["collection"] == POST
        and m["commit"]["operation"] == "create"
    }
    assert set(store) == creates and len(creates) == 17
    # The rewind replays what came before the drop; upserts make that harmless.
    assert upserts > len(creates)
    assert batches[-1].source_time is not None


async def test_closed_connections_are_retried_with_backoff() -> None:
    attempts = 0

    async def refuse(ws: ServerConnection, n: int) -> None:
        nonlocal attempts
        attempts += 1
        await ws.close(1013, "try again later")

    async with websocket_replay(refuse) as server:
        source = JetstreamSource(server.url("/subscribe"), reconnect_base=0.01,
                                 reconnect_cap=0.02)
        async with open_stream(source) as stream:
            consume = asyncio.ensure_future(take_batches(stream, lambda bs: True))

            async def dropped_twice() -> None:
                while source.reconnects < 2 or source.connected:
                    await asyncio.sleep(0.005)

            await asyncio.wait_for(dropped_twice(), 30)
            consume.cancel()  # no await in between: the state checked is the state kept
            with pytest.raises(asyncio.CancelledError):
                await consume
    assert source.connected is False
    assert source.last_error and "1013" in source.last_error
    assert source.status()["reconnects"] >= 2 and attempts >= 2
