"""``rss``: poll RSS, Atom and JSON Feed documents over HTTP.

Target: one feed URL or a comma-separated list (``rss:https://a/feed,https://b/atom``).
Option ``interval``: seconds between polls of each feed (default 300).

Polls are conditional (``If-None-Match`` / ``If-Modified-Since``), so an
unchanged feed costs a ``304`` and no parsing. The cursor is JSON holding
each feed's ``etag`` and ``last_modified``; a restart resumes with them.
Seen items need no cursor: upserts are idempotent. In memory the source also
remembers each item's fingerprint, so a changed feed re-emits only the items
that are new or edited. A feed that fails to parse is quarantined once per
distinct body, and polling goes on; a feed that fails to download is retried
with jittered backoff (never later than its interval).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from townsquare import __version__
from townsquare.model import Batch, Event, Post, Upsert, quarantine
from townsquare.sources import SOURCES
from townsquare.sources._feeds import FeedError, parse_feed
from townsquare.sources._net import NetOptions, NetworkSource, describe_error, parse_options
from townsquare.sources.base import SourceError
from townsquare.timeutil import utcnow

log = logging.getLogger(__name__)

#: A feed larger than this is cut off and quarantined rather than parsed.
MAX_FEED_BYTES = 10 * 1024 * 1024
USER_AGENT = f"townsquare/{__version__} (feed poller)"


class RssOptions(NetOptions):
    #: Seconds between polls of each feed.
    interval: float = 300.0
    #: Seconds to wait for a feed to answer.
    timeout: float = 30.0


@dataclass
class _FeedState:
    """What we know about one feed between polls."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    #: post id -> fingerprint of what we last emitted (this process only).
    emitted: dict[str, str] = field(default_factory=dict)
    #: post id -> when we first saw an item that carries no date of its own.
    first_seen: dict[str, datetime] = field(default_factory=dict)
    next_due: float = 0.0
    delays: Any = None
    error: str | None = None


@SOURCES.register("rss")
class RssSource(NetworkSource):
    """Polls one or more feeds; see the module docstring."""

    kind = "rss"

    def __init__(self, target: str | None, **options: Any) -> None:
        opts = parse_options("rss", RssOptions, options)
        super().__init__(opts)
        urls = [u.strip() for u in (target or "").split(",") if u.strip()]
        if not urls:
            raise SourceError("rss needs a feed URL: rss:https://example.org/feed.xml")
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SourceError(f"rss: not an http(s) feed URL: {url!r}")
        if opts.interval <= 0:
            raise SourceError("rss: interval must be a positive number of seconds")
        self.urls = list(dict.fromkeys(urls))
        self.interval = opts.interval
        self.timeout = opts.timeout
        self._feeds = {url: _FeedState(url) for url in self.urls}

    @property
    def key(self) -> str:
        return "rss:" + ",".join(self.urls)

    def status(self) -> dict[str, Any]:
        out = super().status()
        out["feeds"] = {f.url: {"ok": f.error is None, "error": f.error}
                        for f in self._feeds.values()}
        return out

    async def _run(self, cursor: str | None) -> AsyncGenerator[Batch, None]:
        self._load_cursor(cursor)
        loop = asyncio.get_running_loop()
        headers = {"User-Agent": USER_AGENT, "Accept": _ACCEPT}
        async with httpx.AsyncClient(
            headers=headers, timeout=self.timeout, follow_redirects=True
        ) as client:
            while True:
                due = [f for f in self._feeds.values() if f.next_due <= loop.time()]
                for feed in due:
                    events = await self._poll(client, feed)
                    feed.next_due = loop.time() + self._next_delay(feed)
                    if events is not None:
                        yield Batch(events, self._cursor(), _newest(events))
                wait = min(f.next_due for f in self._feeds.values()) - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)

    async def _poll(self, client: httpx.AsyncClient, feed: _FeedState) -> list[Event] | None:
        """One conditional GET; the events to commit, or None when nothing changed."""
        headers = {}
        if feed.etag:
            headers["If-None-Match"] = feed.etag
        if feed.last_modified:
            headers["If-Modified-Since"] = feed.last_modified
        try:
            async with client.stream("GET", feed.url, headers=headers) as resp:
                if resp.status_code == 304:
                    self._feed_ok(feed)
                    return None
                if resp.status_code != 200:
                    self._feed_failed(feed, f"HTTP {resp.status_code} from {feed.url}")
                    return None
                body, truncated = await _read_capped(resp)
                new_etag = resp.headers.get("ETag")
                new_modified = resp.headers.get("Last-Modified")
        except httpx.HTTPError as exc:
            self._feed_failed(feed, f"{describe_error(exc)} ({feed.url})")
            return None
        self._feed_ok(feed)
        validators_changed = (new_etag, new_modified) != (feed.etag, feed.last_modified)
        feed.etag, feed.last_modified = new_etag, new_modified
        body_hash = hashlib.sha1(body).hexdigest()
        if body_hash == feed.body_hash:
            return [] if validators_changed else None
        feed.body_hash = body_hash
        if truncated:
            reason = f"feed larger than {MAX_FEED_BYTES} bytes, not parsed ({feed.url})"
            return [quarantine("rss", body, reason)]
        return await asyncio.to_thread(self._parse, feed, body)

    def _parse(self, feed: _FeedState, body: bytes) -> list[Event]:
        problems: list[str] = []
        try:
            posts = parse_feed(body, feed.url, problems=problems)
        except FeedError as exc:
            log.warning("rss: %s: %s", feed.url, exc)
            return [quarantine("rss", body, f"{exc} ({feed.url})")]
        except Exception as exc:  # feedparser is lenient, but never let one feed stop the rest
            log.exception("rss: %s: parser failed", feed.url)
            return [quarantine("rss", body, f"parser failed: {describe_error(exc)} ({feed.url})")]
        events: list[Event] = [quarantine("rss", body, f"{p} ({feed.url})") for p in problems]
        emitted: dict[str, str] = {}
        for post in posts:
            if not post.raw.get("dated"):
                post.created_at = feed.first_seen.setdefault(post.id, post.created_at)
            mark = _fingerprint(post)
            emitted[post.id] = mark
            if feed.emitted.get(post.id) != mark:
                events.append(Upsert(post))
        feed.emitted = emitted
        feed.first_seen = {k: v for k, v in feed.first_seen.items() if k in emitted}
        if any(isinstance(e, Upsert) for e in events):
            self._mark_event()
        return events

    def _feed_ok(self, feed: _FeedState) -> None:
        feed.error = None
        feed.delays = None
        failing = [f.error for f in self._feeds.values() if f.error]
        if failing:
            self.last_error = failing[0]  # still down: show what is still wrong
        else:
            self._mark_up()

    def _feed_failed(self, feed: _FeedState, error: str) -> None:
        feed.error = error
        self._mark_down(error)

    def _next_delay(self, feed: _FeedState) -> float:
        if feed.error is None:
            return self.interval
        if feed.delays is None:
            feed.delays = self._delays()
        return float(min(self.interval, next(feed.delays)))

    def _cursor(self) -> str:
        state = {
            f.url: {"etag": f.etag, "last_modified": f.last_modified}
            for f in self._feeds.values()
            if f.etag or f.last_modified
        }
        return json.dumps(state, sort_keys=True)

    def _load_cursor(self, cursor: str | None) -> None:
        if not cursor:
            return
        try:
            state = json.loads(cursor)
        except ValueError:
            log.warning("rss: ignoring unreadable cursor %r", cursor[:200])
            return
        if not isinstance(state, dict):
            return
        for url, saved in state.items():
            if url in self._feeds and isinstance(saved, dict):
                self._feeds[url].etag = _str_or_none(saved.get("etag"))
                self._feeds[url].last_modified = _str_or_none(saved.get("last_modified"))


_ACCEPT = (
    "application/feed+json, application/atom+xml, application/rss+xml, application/json;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)


async def _read_capped(resp: httpx.Response) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_FEED_BYTES:
            return b"".join(chunks)[:MAX_FEED_BYTES], True
    return b"".join(chunks), False


def _fingerprint(post: Post) -> str:
    basis = "\n".join((post.text, post.url or "", post.created_at.isoformat(), post.author))
    return hashlib.sha1(basis.encode("utf-8")).hexdigest()


def _newest(events: list[Event]) -> datetime | None:
    times = [e.post.created_at for e in events if isinstance(e, Upsert)]
    return min(max(times), utcnow()) if times else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


__all__ = ["FeedError", "RssSource", "parse_feed"]
