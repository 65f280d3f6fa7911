"""Admission at every source: each real parser's output, committed by the real pipeline.

A post dated 2099 would rank as "just now" forever, and one dated year 1 is
a bug upstream: whichever source they come from (a JSONL file, Jetstream,
Mastodon, RSS, Atom, JSON Feed, a NATS message), the first is clamped to
the time of ingest (its claimed time kept in ``raw``) and the second is
quarantined with the reason. A record that passes every check but that the
engine still refuses is isolated and quarantined; its batch commits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from townsquare.bus.codec import decode, encode
from townsquare.ingest import Ingestor, IngestStats, Limits
from townsquare.model import Batch, Event, Post, Upsert
from townsquare.sources._feeds import parse_feed
from townsquare.sources._mastodon_parse import MastodonParser
from townsquare.sources.jetstream import parse_message
from townsquare.sources.jsonl import parse_line
from townsquare.store import open_store
from townsquare.store.base import Store

FUTURE = "2099-01-01T00:00:00Z"
ANCIENT = "0001-01-01T00:00:00Z"


def _jsonl(key: str, when: str) -> list[Event]:
    return [parse_line(json.dumps({"id": key, "author": "a", "text": f"post {key}",
                                   "created_at": when}))]


def _jetstream(key: str, when: str) -> list[Event]:
    msg = {"did": "did:plc:abc", "time_us": 1767323045000000, "kind": "commit",
           "commit": {"operation": "create", "collection": "app.bsky.feed.post", "rkey": key,
                      "record": {"text": f"post {key}", "createdAt": when}}}
    event = parse_message(json.dumps(msg)).event
    assert event is not None
    return [event]


def _mastodon(key: str, when: str) -> list[Event]:
    status = {"id": key, "uri": f"https://m.example/s/{key}", "visibility": "public",
              "created_at": when, "content": f"<p>post {key}</p>",
              "account": {"acct": "a", "url": "https://m.example/@a"}}
    event = MastodonParser("m.example").parse("update", json.dumps(status))
    assert event is not None
    return [event]


def _rss(key: str, when: str) -> list[Event]:
    moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    date = moment.strftime("%a, %d %b %Y %H:%M:%S GMT") if moment.year > 1 else (
        "Mon, 01 Jan 1900 00:00:00 GMT")  # what RSS can say that is absurdly old
    doc = (f'<rss version="2.0"><channel><title>t</title><item><title>post {key}</title>'
           f"<guid>https://f.example/{key}</guid><pubDate>{date}</pubDate></item>"
           "</channel></rss>")
    return [Upsert(p) for p in parse_feed(doc.encode(), "https://f.example/rss")]


def _atom(key: str, when: str) -> list[Event]:
    doc = ('<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
           f"<entry><id>urn:x:{key}</id><title>post {key}</title><updated>{when}</updated>"
           "</entry></feed>")
    return [Upsert(p) for p in parse_feed(doc.encode(), "https://f.example/atom")]


def _json_feed(key: str, when: str) -> list[Event]:
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "t",
           "items": [{"id": f"urn:x:{key}", "content_text": f"post {key}",
                      "date_published": when}]}
    return [Upsert(p) for p in parse_feed(json.dumps(doc).encode(), "https://f.example/j")]


def _nats(key: str, when: str) -> list[Event]:
    # The publisher encodes what a source claimed; the index worker decodes it and
    # commits through the same pipeline.
    post = Post(id=f"jsonl:{key}", source="jsonl", author="a", text=f"post {key}",
                created_at=datetime.fromisoformat(when.replace("Z", "+00:00")))
    return [decode(encode(Upsert(post), 1 << 20).data)]


SOURCES: dict[str, Callable[[str, str], list[Event]]] = {
    "jsonl": _jsonl, "jetstream": _jetstream, "mastodon": _mastodon, "rss": _rss,
    "atom": _atom, "jsonfeed": _json_feed, "nats": _nats,
}


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    s = open_store(store_url, tmp_path)
    yield s
    s.close()


def _commit(store: Store, events: list[Event], limits: Limits | None = None) -> IngestStats:
    stats = IngestStats()
    Ingestor(store, limits=limits).commit("test:stream", Batch(events, "c1"), stats)
    return stats


@pytest.mark.parametrize("source", list(SOURCES))
def test_every_source_clamps_future_posts_and_quarantines_ancient_ones(
    store: Store, source: str
) -> None:
    make = SOURCES[source]
    events = make("good", (datetime.now(UTC) - timedelta(minutes=2)).isoformat())
    future, ancient = make("future", FUTURE), make("ancient", ANCIENT)
    assert all(isinstance(e, Upsert) for e in [*events, *future, *ancient]), (events, future)
    stats = _commit(store, [*future, *events, *ancient])
    assert (stats.posts, stats.quarantined) == (2, 1)
    assert store.get_cursor("test:stream") == "c1"
    (good,) = [e.post.id for e in events]  # type: ignore[union-attr]
    (late,) = [e.post.id for e in future]  # type: ignore[union-attr]
    (old,) = [e.post.id for e in ancient]  # type: ignore[union-attr]
    stored = store.get_post(late)
    assert stored is not None and abs(stored.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert store.get_post(good) is not None and store.get_post(old) is None
    # The fresh post, two minutes old, now ranks as newer than the claimed-2099 one
    # would have; and the claimed time is kept with the record.
    assert "before 1990-01-01" in store.quarantined(5)[0].reason
    assert "2099" in (future[0].post.raw if isinstance(future[0].post.raw, str)  # type: ignore[union-attr]
                      else json.dumps(future[0].post.raw))  # type: ignore[union-attr]


def test_clamped_posts_name_the_time_they_claimed() -> None:
    post = Post(id="rss:x", source="rss", author="a", text="t",
                created_at=datetime(2099, 1, 1, tzinfo=UTC), raw={"feed": "f"})
    (event,) = Limits().admit([Upsert(post)])
    assert isinstance(event, Upsert)
    assert json.loads(event.post.raw)["claimed_created_at"] == "2099-01-01T00:00:00Z"


def test_skew_below_the_bound_is_left_alone() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=3)
    post = Post(id="jsonl:x", source="jsonl", author="a", text="t", created_at=soon)
    (event,) = Limits().admit([Upsert(post)])
    assert isinstance(event, Upsert) and event.post.created_at == soon


def test_a_record_the_engine_refuses_is_isolated_and_the_rest_commits_in_order(
    store: Store,
) -> None:
    """A Jetstream identity event naming a handle with a lone surrogate passes the
    parser (it is JSON) and admission (which checks posts), but no engine can
    encode it: the batch is split until it stands alone, and it is quarantined."""
    identity = {"did": "did:plc:abc", "time_us": 1, "kind": "identity",
                "identity": {"did": "did:plc:abc", "handle": "bad\ud800handle"}}
    bad = parse_message(json.dumps(identity)).event
    posts = [_jsonl(f"p{i}", "2026-01-01T00:00:00Z")[0] for i in range(40)]
    delete = parse_line('{"id": "p0", "deleted": true}')
    stats = _commit(store, [*posts[:25], bad, delete, *posts[25:]])  # type: ignore[list-item]
    assert (stats.posts, stats.deletes, stats.quarantined) == (40, 1, 1)
    assert store.get_cursor("test:stream") == "c1"
    assert store.get_post("jsonl:p0") is None  # the delete after the bad record applied
    assert all(store.get_post(f"jsonl:p{i}") is not None for i in range(1, 40))
    (record,) = store.quarantined(5)
    assert record.source == "test" and "identity: the store refused it" in record.reason
    assert "UnicodeEncodeError" in record.reason


def test_an_engine_failure_is_not_mistaken_for_a_bad_record(tmp_path: Path) -> None:
    """A read-only store fails every write: the batch fails whole, nothing is quarantined."""
    path = tmp_path / "s.db"
    open_store(str(path), tmp_path).close()
    ro = open_store(str(path), tmp_path, read_only=True)
    events = _jsonl("a", "2026-01-01T00:00:00Z")
    with pytest.raises(Exception) as err:
        _commit(ro, events)
    assert not ro.refused_record(err.value)
    ro.close()
    rw = open_store(str(path), tmp_path)
    assert rw.quarantined(5) == [] and rw.get_cursor("test:stream") is None
    rw.close()


@pytest.mark.nats
@pytest.mark.postgres
async def test_the_bus_path_publishes_bounded_posts_and_quarantines_the_rest(
    tmp_path: Path, nats_url: str, pg_url: str
) -> None:
    """``ingest --publish`` admits before encoding; the index worker isolates what only
    the engine refuses (a delete naming an id with a lone surrogate)."""
    from test_ingest_hostile import NASTY, _mixed_file
    from townsquare.bus import BusConfig, IndexWorker, WorkerOptions, publish_source
    from townsquare.sources.jsonl import JsonlSource

    good = _mixed_file(tmp_path / "mixed.jsonl")
    published = await publish_source(JsonlSource(str(tmp_path / "mixed.jsonl")), nats_url,
                                     quiet=True)
    assert published.posts == len(good) and published.quarantined == len(NASTY) - 1
    store = open_store(pg_url, tmp_path)
    try:
        worker = IndexWorker(store, None, BusConfig.from_url(nats_url),
                             WorkerOptions(stop_when_idle=True))
        indexed = await asyncio.wait_for(worker.run(), timeout=120)
        assert indexed.posts == len(good) and indexed.quarantined == len(NASTY)
        assert all(store.get_post(pid) is not None for pid in good)
        future = store.get_post("jsonl:future")
        assert future is not None and future.created_at < datetime.now(UTC)
        reasons = [r.reason for r in store.quarantined(100)]
        assert len(reasons) == len(NASTY)
        assert any("delete: the store refused it" in r for r in reasons)
    finally:
        store.close()
