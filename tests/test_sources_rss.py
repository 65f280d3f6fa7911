"""The ``rss`` source: feed-rs's real-world fixtures, and a poller against a local server."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import pytest

from conftest import SHARED_DATA, shared_data
from replay_servers import HttpReplayServer, Reply, Seen, open_stream, take_batches
from townsquare.model import Batch, Quarantine, Upsert
from townsquare.sources import SourceError, source_from_spec
from townsquare.sources.rss import FeedError, RssSource, parse_feed

FEED_URL = "https://feeds.example.org/some/feed"
#: A one-item RSS 2.0 feed of the tests' own, for the polling tests (the real
#: feeds in ../shared/data are for conformance and may be absent).
EXAMPLE_RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel>
<title>Example feed</title><link>http://example.org/</link><description>For tests</description>
<item><title>Example entry</title><link>http://example.org/entry</link>
<guid>http://example.org/entry</guid><pubDate>Sun, 06 Sep 2009 16:20:00 GMT</pubDate>
<description>Here is some text.</description></item>
</channel></rss>
"""

#: Fixtures where our link legitimately differs from feed-rs's, and why.
LINK_EXCEPTIONS = {
    "rss_2.0_spec_1.xml": (
        "RSS 2.0: a <guid> without isPermaLink=\"false\" is the item's permalink; these items "
        "have no <link>, so we link the guid while feed-rs reports no link"
    ),
}
#: Inputs that are not valid feeds: feed-rs ships no expected parse for them.
INVALID = {
    "rss_2.0_invalid_1.xml": "truncated mid-document (an HTML comment, then EOF: no items)",
}


def _inputs() -> list[Any]:
    folder = SHARED_DATA / "rss"
    if not folder.exists():
        return [pytest.param("", marks=pytest.mark.skip(reason=f"{folder} not found"))]
    return [
        p.name for p in sorted(folder.iterdir())
        if p.suffix in (".xml", ".json") and not p.name.endswith(".serde.json")
    ]


def _expected_path(path: Path) -> Path:
    return path.with_name(path.name[: -len(path.suffix)] + ".serde.json")


def _norm(url: str) -> str:
    """Equivalent URLs compare equal (RFC 3986 §6.2.2-3): feed-rs lower-cases scheme and
    host and writes an empty path as "/"; we keep the publisher's spelling
    (rss_0.91_encoding_1's host, jsonfeed_elastic_1.1's "https://example.com")."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower(),
                                     path=parts.path or "/"))


def _expected_date(entry: dict[str, Any]) -> datetime | None:
    value = entry.get("published") or entry.get("updated")
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


@pytest.mark.shared
@pytest.mark.parametrize("name", _inputs())
def test_feed_matches_feed_rs_expected_parse(name: str) -> None:
    path = shared_data("rss") / name
    data = path.read_bytes()
    expected_path = _expected_path(path)
    if name in INVALID:
        assert not expected_path.exists()
        with pytest.raises(FeedError):
            parse_feed(data, FEED_URL)
        return
    assert expected_path.exists(), f"every valid input has an expected parse: {name}"
    expected = json.loads(expected_path.read_text(encoding="utf-8"))

    now = datetime(2030, 1, 1, tzinfo=UTC)
    posts = parse_feed(data, FEED_URL, now=now)

    assert len(posts) == len(expected["entries"])
    for post, entry in zip(posts, expected["entries"], strict=True):
        title = (entry.get("title") or {}).get("content")
        assert post.raw["title"] == title
        if title:
            assert post.text.startswith(" ".join(title.split())[:100])
        assert post.text.strip(), "every item has some text"
        # feed-rs keeps hrefs as written; we resolve them (xml:base, then the feed URL).
        base = urljoin(FEED_URL, entry.get("base") or "")
        links = {_norm(urljoin(base, link["href"])) for link in entry["links"]}
        if name in LINK_EXCEPTIONS:
            assert post.url and not links
        elif links:
            assert post.url is not None and _norm(post.url) in links
        else:
            assert post.url is None
        when = _expected_date(entry)
        if when is not None:
            assert post.created_at == when, (name, post.created_at, when)
            assert post.raw["dated"]
        assert post.source == "rss" and post.id.startswith("rss:")
        assert post.author and post.author_id == FEED_URL
    assert len({p.id for p in posts}) == len(posts), "ids are unique within a feed"


def test_json_feed_1_1_fields_and_missing_ids() -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Town crier",
        "language": "pt-BR",
        "authors": [{"name": "Ana"}],
        "items": [
            {"id": 7, "content_html": "<p>Olá <b>mundo</b></p><p>#praça</p>",
             "url": "/posts/7", "date_published": "2024-05-01T10:00:00-03:00"},
            {"content_text": "no id here", "title": "Untitled?"},
            "not an item",
        ],
    }
    problems: list[str] = []
    posts = parse_feed(json.dumps(doc).encode(), "https://crier.example/feed.json",
                       problems=problems)
    assert problems == ["JSON Feed item 2 is not an object"]
    post, no_id = posts
    assert no_id.id == "rss:" + hashlib.sha1(b"\nUntitled?").hexdigest()
    assert no_id.text == "Untitled? no id here"
    assert post.id == "rss:crier.example/7"
    assert post.text == "Olá mundo\n\n#praça"
    assert post.hashtags == ["praça"]
    assert post.url == "https://crier.example/posts/7"
    assert post.created_at == datetime(2024, 5, 1, 13, 0, tzinfo=UTC)
    assert (post.author, post.lang) == ("Ana", "pt")


@pytest.mark.parametrize("body", [b"", b"<html><body>a web page</body></html>", b"{\"a\": 1}",
                                  b"{not json"])
def test_not_a_feed_raises_feed_error(body: bytes) -> None:
    with pytest.raises(FeedError):
        parse_feed(body, FEED_URL)


def test_bad_configuration_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="feed URL"):
        source_from_spec("rss")
    with pytest.raises(SourceError, match="http"):
        source_from_spec("rss:ftp://example.org/feed")
    with pytest.raises(SourceError, match="intervall"):
        source_from_spec("rss:https://example.org/feed", intervall=5)


# --- the poller against a local server ------------------------------------------------


class FeedServer:
    """Serves recorded feed versions with ETags, honouring If-None-Match.

    After answering ``304`` twice for a version it moves on to the next one,
    so a test sees the not-modified path before anything changes.
    """

    def __init__(self, *versions: tuple[str, bytes], validator: str = "ETag") -> None:
        self.versions = list(versions)
        self.current = 0
        self.not_modified = 0
        self.validator = validator
        self.asks = {"ETag": "If-None-Match", "Last-Modified": "If-Modified-Since"}[validator]

    def __call__(self, seen: Seen, reply: Reply) -> None:
        tag, body = self.versions[self.current]
        if seen.headers.get(self.asks) == tag:
            self.not_modified += 1
            reply.send(304, headers={self.validator: tag})
            if self.not_modified % 2 == 0 and self.current + 1 < len(self.versions):
                self.current += 1
        else:
            reply.send(200, body, {self.validator: tag, "Content-Type": "application/xml"})


def _upserts(batches: list[Batch]) -> list[Upsert]:
    return [e for b in batches for e in b.events if isinstance(e, Upsert)]


def _titles(batches: list[Batch]) -> list[str]:
    return [u.post.raw["title"] for u in _upserts(batches)]


async def test_poller_uses_etags_resumes_and_quarantines_broken_feeds() -> None:
    folder = shared_data("rss")
    v1 = (folder / "atom_example_6.xml").read_bytes()
    v2 = v1.replace(b"<title>0.1.3</title>", b"<title>0.1.3 (edited)</title>")
    v3 = v2.replace(b"<title>0.1.0</title>", b"<title>0.1.0 (edited)</title>")
    feed = FeedServer(('"v1"', v1), ('"v2"', v2), ('"v3"', v3))
    broken = FeedServer(('"b1"', (folder / "rss_2.0_invalid_1.xml").read_bytes()))
    with HttpReplayServer({"/feed.xml": feed, "/broken.xml": broken}) as srv:
        target = f"{srv.url('/feed.xml')},{srv.url('/broken.xml')}"
        source = RssSource(target, interval=0.02)
        assert source.key == f"rss:{target}"

        async with open_stream(source) as stream:
            first = await take_batches(stream, lambda bs: len(bs) >= 2)
            quarantined = [e for b in first for e in b.events if isinstance(e, Quarantine)]
            assert len(quarantined) == 1 and "not a feed" in quarantined[0].reason
            assert _titles(first) == ["0.2.0", "0.1.3", "0.1.1", "0.1.0"]
            assert source.connected and source.last_error is None
            assert source.last_event_at is not None
            # Two 304s, then the server publishes v2: only the edited item comes back.
            later = await take_batches(stream, lambda bs: bool(_upserts(bs)))
            assert _titles(later) == ["0.1.3 (edited)"]
            assert feed.not_modified >= 2
            # The broken feed was polled again and again but quarantined only once.
            assert broken.not_modified >= 1
            assert not any(isinstance(e, Quarantine) for b in later for e in b.events)
            cursor = later[-1].cursor
        assert cursor is not None
        assert json.loads(cursor)[srv.url("/feed.xml")]["etag"] == '"v2"'

        # A restart with the saved cursor polls conditionally from the first request.
        before = len(srv.requests_to("/feed.xml"))
        restarted = RssSource(target, interval=0.02)
        async with open_stream(restarted, cursor) as stream:
            again = await take_batches(stream, lambda bs: bool(_upserts(bs)))
        assert srv.requests_to("/feed.xml")[before].headers.get("If-None-Match") == '"v2"'
        # A fresh process has no memory of what it emitted: v3 comes back whole.
        assert _titles(again) == ["0.2.0", "0.1.3 (edited)", "0.1.1", "0.1.0 (edited)"]


async def test_last_modified_alone_is_enough_for_conditional_polls() -> None:
    v1 = EXAMPLE_RSS
    v2 = v1.replace(b"<title>Example entry</title>", b"<title>Example entry, v2</title>")
    first, second = "Sun, 06 Sep 2009 16:20:00 GMT", "Mon, 07 Sep 2009 09:00:00 GMT"
    feed = FeedServer((first, v1), (second, v2), validator="Last-Modified")
    with HttpReplayServer({"/rss": feed}) as srv:
        source = RssSource(srv.url("/rss"), interval=0.02)
        async with open_stream(source) as stream:
            batches = await take_batches(stream, lambda bs: len(_upserts(bs)) >= 2)
    assert _titles(batches) == ["Example entry", "Example entry, v2"]
    assert feed.not_modified >= 2
    asked = [s.headers.get("If-Modified-Since") for s in srv.requests_to("/rss")]
    assert asked[0] is None and asked[1] == first and asked[-1] == first
    assert all("If-None-Match" not in s.headers for s in srv.requests_to("/rss"))
    assert json.loads(batches[-1].cursor or "{}")[srv.url("/rss")] == {
        "etag": None, "last_modified": second}


async def test_failing_and_unreachable_feeds_are_retried_and_reported() -> None:
    with HttpReplayServer({}) as gone:
        dead = gone.url("/feed.xml")
    # That server is shut now: nothing listens on its port.
    answers = [503, 500]

    def flaky(seen: Seen, reply: Reply) -> None:
        if answers:
            reply.send(answers.pop(0), b"try later")
        else:
            reply.send(200, EXAMPLE_RSS)

    with HttpReplayServer({"/flaky.xml": flaky}) as srv:
        # The interval is long: only backoff retries can reach the third request.
        source = RssSource(f"{dead},{srv.url('/flaky.xml')}", interval=3600,
                           reconnect_base=0.01, reconnect_cap=0.05)
        async with open_stream(source) as stream:
            batches = await take_batches(stream, lambda bs: bool(_upserts(bs)))
        assert len(srv.requests_to("/flaky.xml")) == 3
    assert _titles(batches) == ["Example entry"]
    status = source.status()
    assert status["feeds"][srv.url("/flaky.xml")] == {"ok": True, "error": None}
    assert status["feeds"][dead]["ok"] is False
    assert source.connected is False and source.last_error and dead in source.last_error
