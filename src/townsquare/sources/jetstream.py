"""``jetstream``: Bluesky posts, live, from a Jetstream v1 websocket.

Target: the subscribe URL (default ``wss://jetstream2.us-east.bsky.network/subscribe``),
asking for ``wantedCollections=app.bsky.feed.post`` only.

The cursor is the newest event's ``time_us`` (microseconds since the epoch).
Jetstream replays from any cursor within its retention window, so after a
drop or a restart the client asks for ``cursor - rewind`` (5 s by default):
events may arrive twice, and idempotent upserts make that harmless, while a
gap would lose posts. Messages are grouped into batches of up to 4,000 or
100 ms so the pipeline commits in few transactions.

Event mapping (see :func:`parse_message`): a post create/update becomes an
Upsert, a post delete a Delete, an identity event with a handle an Identity
(and the handle is remembered for later posts), a like or repost of a post
an :class:`~townsquare.model.Engage` counted on that post (option
``engagement``, on by default; a like's delete names no post, so counts only
grow); every other collection (follows, blocks, profiles...) and account
events are ignored. A like replayed by the reconnect rewind (its ``time_us``
not after the cursor resumed from) is dropped, so counts stay exact.
Malformed JSON and posts without text or a readable ``createdAt`` are quarantined.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidURI, WebSocketException

from townsquare.model import Batch, Delete, Engage, Event, Identity, Post, Upsert, quarantine
from townsquare.sources import SOURCES
from townsquare.sources import _json as fast_json
from townsquare.sources._net import (
    Bounded,
    NetOptions,
    NetworkSource,
    batched,
    parse_options,
)
from townsquare.sources._text import primary_lang
from townsquare.sources.base import SourceError
from townsquare.timeutil import parse_time

log = logging.getLogger(__name__)

DEFAULT_URL = "wss://jetstream2.us-east.bsky.network/subscribe"
POST_COLLECTION = "app.bsky.feed.post"
LIKE_COLLECTION = "app.bsky.feed.like"
REPOST_COLLECTION = "app.bsky.feed.repost"
SOURCE = "bluesky"
_POST_PATH = f"/{POST_COLLECTION}/"


class JetstreamOptions(NetOptions):
    #: Seconds to rewind the cursor on reconnect (overlap beats a gap).
    rewind: float = 5.0
    #: Most messages per batch, and the longest a batch waits to fill (seconds).
    #: Live, a batch is what arrived in ``batch_wait``; the size bounds catching up
    #: from a cursor, where most messages are likes and reposts (several per post,
    #: a few bytes of work each): 4,000 keep a batch near 500 posts, not 70.
    batch_size: int = 4000
    batch_wait: float = 0.1
    #: Largest message accepted, in bytes.
    max_message_bytes: int = 2 * 1024 * 1024
    #: How many did -> handle pairs to remember from identity events.
    handle_cache: int = 100_000
    #: Also subscribe to likes and reposts and count them on the posts they name.
    engagement: bool = True


# --- message -> events (pure, apart from the handle map) -----------------------


@dataclass(slots=True)
class Parsed:
    """What one Jetstream message meant: an event (or none) and its time_us."""

    event: Event | None
    time_us: int | None


def parse_message(raw: str | bytes, handles: Bounded[str] | None = None) -> Parsed:
    """One Jetstream v1 JSON message -> at most one event; never raises.

    ``handles`` maps DIDs to handles: identity events fill it, posts read it
    (an unknown author is shown by DID). A message no rule foresaw (nested
    100,000 deep, a field of an odd type) is quarantined with the error.
    """
    try:
        return _parse_message(raw, handles)
    except Exception as exc:
        return Parsed(quarantine(SOURCE, raw, f"unreadable message: {type(exc).__name__}: "
                                 f"{exc}"), None)


def _parse_message(raw: str | bytes, handles: Bounded[str] | None) -> Parsed:
    try:
        msg = fast_json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return Parsed(quarantine(SOURCE, raw, f"invalid JSON: {exc}"), None)
    if not isinstance(msg, dict):
        return Parsed(quarantine(SOURCE, raw, "expected a JSON object"), None)
    time_us = msg.get("time_us")
    if type(time_us) is float:  # maybe an integer beyond 64 bits: read it exactly
        time_us = fast_json.exact(raw).get("time_us")
    time_us = time_us if type(time_us) is int else None
    kind = msg.get("kind")
    if kind == "commit":
        return Parsed(_commit(msg, raw, handles), time_us)
    if kind == "identity":
        return Parsed(_identity(msg, handles), time_us)
    return Parsed(None, time_us)  # account events, and kinds newer than this client


def _commit(msg: dict[str, Any], raw: str | bytes, handles: Bounded[str] | None) -> Event | None:
    commit = msg.get("commit")
    if not isinstance(commit, dict):
        return None
    collection = commit.get("collection")
    if collection in (LIKE_COLLECTION, REPOST_COLLECTION):
        return _engage(msg, commit, collection)
    if collection != POST_COLLECTION:
        return None
    did, rkey, op = msg.get("did"), commit.get("rkey"), commit.get("operation")
    if not _nonempty(did) or not _nonempty(rkey):
        return quarantine(SOURCE, raw, "post commit without did or rkey")
    post_id = f"{SOURCE}:at://{did}/{POST_COLLECTION}/{rkey}"
    if op == "delete":
        return Delete(post_id)
    if op not in ("create", "update"):
        return quarantine(SOURCE, raw, f"unknown commit operation {op!r}")
    record = commit.get("record")
    if not isinstance(record, dict):
        return quarantine(SOURCE, raw, "post commit without a record")
    text = record.get("text")
    if not isinstance(text, str):
        return quarantine(SOURCE, raw, "post record without text")
    try:
        created = parse_time(record["createdAt"])
    except (KeyError, ValueError) as exc:
        return quarantine(SOURCE, raw, f"post record without a readable createdAt: {exc}")
    langs = record.get("langs")
    handle = handles.get(did) if handles is not None else None
    return Upsert(
        Post(
            id=post_id,
            source=SOURCE,
            author=handle or did,
            author_id=did,
            text=text,
            created_at=created,
            url=f"https://bsky.app/profile/{did}/post/{rkey}",
            lang=primary_lang(langs[0]) if isinstance(langs, list) and langs else None,
            reply_to=_ref(_get(record, "reply", "parent", "uri")),
            quote_of=_quoted(record.get("embed")),
            raw=raw if isinstance(raw, str) else raw.decode("utf-8", "replace"),
        )
    )


def _engage(msg: dict[str, Any], commit: dict[str, Any], collection: str) -> Event | None:
    """A like or repost of a post: one more on that post (deletes name no post: none).

    Most of a subscription's messages are these (several per post), so this
    path reads only the fields it needs, without the generic helpers.
    """
    if commit.get("operation") != "create":
        return None
    record = commit.get("record")
    subject = record.get("subject") if type(record) is dict else None
    uri = subject.get("uri") if type(subject) is dict else None
    if type(uri) is not str or _POST_PATH not in uri:
        return None  # likes of feeds and lists, or a malformed record: nothing to count
    record_uri = f"at://{msg.get('did')}/{collection}/{commit.get('rkey')}"
    if collection == LIKE_COLLECTION:
        return Engage(f"{SOURCE}:{uri}", 1, 0, record_uri)
    return Engage(f"{SOURCE}:{uri}", 0, 1, record_uri)


def _identity(msg: dict[str, Any], handles: Bounded[str] | None) -> Event | None:
    """Identity events carry the new handle when there is one; without it, nothing to do."""
    ident = msg.get("identity")
    if not isinstance(ident, dict):
        return None
    did = ident.get("did") or msg.get("did")
    handle = ident.get("handle")
    if not _nonempty(did) or not _nonempty(handle):
        return None
    if handles is not None:
        handles[did] = handle
    return Identity(did=did, handle=handle)


def _quoted(embed: Any) -> str | None:
    """The quoted post of a record embed (plain, or with media beside it)."""
    kind = embed.get("$type") if isinstance(embed, dict) else None
    if kind == "app.bsky.embed.record":
        uri = _get(embed, "record", "uri")
    elif kind == "app.bsky.embed.recordWithMedia":
        uri = _get(embed, "record", "record", "uri")
    else:
        return None
    # Record embeds also quote lists and feed generators; only posts are posts.
    return _ref(uri) if isinstance(uri, str) and f"/{POST_COLLECTION}/" in uri else None


def _ref(uri: Any) -> str | None:
    return f"{SOURCE}:{uri}" if _nonempty(uri) else None


def _get(obj: Any, *path: str) -> Any:
    for step in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(step)
    return obj


def _nonempty(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value)


def subscribe_url(base: str, cursor_us: int | None, engagement: bool = False) -> str:
    """The base URL with ``wantedCollections`` (and ``cursor``) set in its query."""
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("wantedCollections", "cursor")]
    query.append(("wantedCollections", POST_COLLECTION))
    if engagement:
        query += [("wantedCollections", LIKE_COLLECTION), ("wantedCollections", REPOST_COLLECTION)]
    if cursor_us is not None:
        query.append(("cursor", str(cursor_us)))
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- the source -----------------------------------------------------------------------


@SOURCES.register("jetstream")
class JetstreamSource(NetworkSource):
    """A Jetstream subscriber that reconnects forever; see the module docstring."""

    kind = "jetstream"

    def __init__(self, target: str | None, **options: Any) -> None:
        opts = parse_options("jetstream", JetstreamOptions, options)
        super().__init__(opts)
        self.url = target or DEFAULT_URL
        parts = urlsplit(self.url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise SourceError(
                f"jetstream: not a websocket URL: {self.url!r} (e.g. jetstream:{DEFAULT_URL})"
            )
        self.opts = opts
        self.handles: Bounded[str] = Bounded(opts.handle_cache)
        self._counted_up_to: int | None = None

    @property
    def key(self) -> str:
        return f"jetstream:{self.url}"

    async def _run(self, cursor: str | None) -> AsyncGenerator[Batch, None]:
        last = _read_cursor(cursor)
        delays = self._delays()
        while True:
            start = None if last is None else max(0, last - int(self.opts.rewind * 1e6))
            url = subscribe_url(self.url, start, self.opts.engagement)
            self._counted_up_to = last  # engagement replayed by the rewind is not counted again
            try:
                async with connect(
                    url,
                    max_size=self.opts.max_message_bytes,
                    open_timeout=15,
                    user_agent_header="townsquare (jetstream client)",
                ) as ws:
                    self._mark_up()
                    delays = self._delays()
                    groups = batched(aiter(ws), self.opts.batch_size, self.opts.batch_wait)
                    async with aclosing(groups):
                        async for messages in groups:
                            batch = self._to_batch(messages, last)
                            if batch is not None:
                                last = int(batch.cursor) if batch.cursor else last
                                yield batch
                self._mark_down("server closed the connection")
            except InvalidURI as exc:
                raise SourceError(f"jetstream: {exc}") from exc
            except (OSError, TimeoutError, WebSocketException) as exc:
                self._mark_down(exc)
            await asyncio.sleep(next(delays))

    def _to_batch(self, messages: Iterable[str | bytes], last: int | None) -> Batch | None:
        events: list[Event] = []
        newest = last
        for raw in messages:
            parsed = parse_message(raw, self.handles)
            if parsed.event is not None and not (
                isinstance(parsed.event, Engage) and self._counted_up_to is not None
                and (parsed.time_us is None or parsed.time_us <= self._counted_up_to)
            ):
                events.append(parsed.event)
            if parsed.time_us is not None and (newest is None or parsed.time_us > newest):
                newest = parsed.time_us
        if not events and newest == last:
            return None
        if events:
            self._mark_event()
        source_time = datetime.fromtimestamp(newest / 1e6, UTC) if newest else None
        return Batch(events, str(newest) if newest is not None else None, source_time)


def _read_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        return int(cursor)
    except ValueError:
        log.warning("jetstream: ignoring unreadable cursor %r; starting live", cursor[:100])
        return None


__all__ = ["DEFAULT_URL", "JetstreamSource", "Parsed", "parse_message", "subscribe_url"]
