"""``mastodon``: public posts, live, from a Mastodon instance's streaming API.

Target: the instance base URL (``mastodon:https://mastodon.social``).
Options:

- ``timeline``: ``public`` (default), ``public:local`` or ``hashtag:<tag>``;
- ``token``: an access token, sent as ``Authorization: Bearer`` (some
  instances require one for public streams);
- ``transport``: ``sse`` (default: ``GET /api/v1/streaming/public``…) or
  ``websocket`` (``/api/v1/streaming?stream=public``…);
- ``backfill``: after a reconnect, fetch what the stream missed from the
  REST timeline (default on, at most ``backfill_pages`` pages of 40).

Mastodon streams have no resumable position, so the cursor is only the
newest status id seen: it is what the post-reconnect backfill starts from
(``GET /api/v1/timelines/…?min_id=<id>``). Event mapping lives in
:mod:`townsquare.sources._mastodon_parse`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing, asynccontextmanager
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

import httpx
from httpx_sse import EventSource, aconnect_sse
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from townsquare import __version__
from townsquare.errors import BackendError
from townsquare.model import Batch, Event, Upsert, quarantine
from townsquare.sources import SOURCES
from townsquare.sources._mastodon_parse import SOURCE, MastodonParser
from townsquare.sources._net import (
    NetOptions,
    NetworkSource,
    batched,
    describe_error,
    parse_options,
)
from townsquare.sources.base import SourceError

log = logging.getLogger(__name__)

USER_AGENT = f"townsquare/{__version__} (streaming client)"

#: One streamed message: (event name or None when unreadable, payload, raw text).
Message = tuple[str | None, Any, str]


class MastodonOptions(NetOptions):
    timeline: str = "public"
    token: str | None = None
    transport: Literal["sse", "websocket"] = "sse"
    backfill: bool = True
    backfill_pages: int = 5
    batch_size: int = 200
    batch_wait: float = 0.1
    #: Seconds without a byte (Mastodon sends a heartbeat every ~15 s) before reconnecting.
    read_timeout: float = 90.0


class UpstreamError(BackendError):
    """The server answered, but not with a stream (HTTP 401, 404, 503…)."""


@SOURCES.register("mastodon")
class MastodonSource(NetworkSource):
    """A streaming-API client that reconnects forever; see the module docstring."""

    kind = "mastodon"

    def __init__(self, target: str | None, **options: Any) -> None:
        opts = parse_options("mastodon", MastodonOptions, options)
        super().__init__(opts)
        if not target:
            raise SourceError("mastodon needs an instance URL: mastodon:https://mastodon.social")
        base = target if "://" in target else f"https://{target}"
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceError(f"mastodon: not an instance URL: {target!r}")
        self.base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.opts = opts
        self.stream_name, self.tag = _timeline(opts.timeline)
        self.parser = MastodonParser(parts.hostname)

    @property
    def key(self) -> str:
        return f"mastodon:{self.base}#{self.opts.timeline}"

    # --- URLs ---------------------------------------------------------------------

    def sse_url(self) -> str:
        path = {"public": "public", "public:local": "public/local", "hashtag": "hashtag"}
        query = f"?{urlencode({'tag': self.tag})}" if self.tag else ""
        return f"{self.base}/api/v1/streaming/{path[self.stream_name]}{query}"

    def websocket_url(self) -> str:
        params = {"stream": self.stream_name}
        if self.tag:
            params["tag"] = self.tag
        if self.opts.token:
            params["access_token"] = self.opts.token
        ws_base = "ws" + self.base[len("http"):]
        return f"{ws_base}/api/v1/streaming?{urlencode(params)}"

    def timeline_url(self, min_id: str) -> str:
        params = {"min_id": min_id, "limit": "40"}
        if self.stream_name == "hashtag":
            tag = quote(self.tag or "", safe="")
            return f"{self.base}/api/v1/timelines/tag/{tag}?{urlencode(params)}"
        if self.stream_name == "public:local":
            params["local"] = "true"
        return f"{self.base}/api/v1/timelines/public?{urlencode(params)}"

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if self.opts.token:
            headers["Authorization"] = f"Bearer {self.opts.token}"
        return headers

    # --- the stream -------------------------------------------------------------

    async def _run(self, cursor: str | None) -> AsyncGenerator[Batch, None]:
        last_id = cursor or None
        delays = self._delays()
        timeout = httpx.Timeout(15.0, read=self.opts.read_timeout)
        async with httpx.AsyncClient(
            headers=self._headers(), timeout=timeout, follow_redirects=True
        ) as client:
            while True:
                try:
                    async with self._open(client) as messages:
                        self._mark_up()
                        delays = self._delays()
                        if self.opts.backfill and last_id:
                            async with aclosing(self._backfill(client, last_id)) as missed:
                                async for batch in missed:
                                    last_id = batch.cursor or last_id
                                    yield batch
                        groups = batched(messages, self.opts.batch_size, self.opts.batch_wait)
                        async with aclosing(groups):
                            async for group in groups:
                                batch = self._to_batch(group, last_id)
                                if batch.events or batch.cursor != last_id:
                                    last_id = batch.cursor
                                    yield batch
                    self._mark_down("server closed the stream")
                except (httpx.HTTPError, OSError, TimeoutError, WebSocketException,
                        UpstreamError) as exc:
                    self._mark_down(exc)
                await asyncio.sleep(next(delays))

    @asynccontextmanager
    async def _open(self, client: httpx.AsyncClient) -> AsyncIterator[AsyncIterator[Message]]:
        if self.opts.transport == "websocket":
            async with connect(
                self.websocket_url(),
                additional_headers=self._headers(),
                open_timeout=15,
                max_size=4 * 1024 * 1024,
            ) as ws:
                yield _ws_messages(ws)
            return
        async with aconnect_sse(client, "GET", self.sse_url()) as source:
            resp = source.response
            if resp.status_code != 200:
                body = (await resp.aread())[:300].decode("utf-8", "replace")
                raise UpstreamError(f"HTTP {resp.status_code} from {self.sse_url()}: {body}")
            yield _sse_messages(source)

    async def _backfill(
        self, client: httpx.AsyncClient, since: str
    ) -> AsyncGenerator[Batch, None]:
        """Page forward from ``since`` through the REST timeline; errors only log."""
        for _ in range(self.opts.backfill_pages):
            url = self.timeline_url(since)
            try:
                resp = await client.get(url)
                statuses = resp.json() if resp.status_code == 200 else None
            except (httpx.HTTPError, ValueError, RecursionError) as exc:
                log.warning("mastodon: backfill from %s failed: %s", url, describe_error(exc))
                return
            if not isinstance(statuses, list):
                log.warning("mastodon: backfill from %s: HTTP %s", url, resp.status_code)
                return
            if not statuses:
                return
            statuses.sort(key=lambda s: _id_key(s.get("id") if isinstance(s, dict) else None))
            batch = self._to_batch(
                (("update", s, json.dumps(s, ensure_ascii=False)) for s in statuses), since
            )
            yield batch
            if batch.cursor == since or len(statuses) < 40:
                return
            since = batch.cursor or since

    def _to_batch(self, messages: Iterable[Message], last_id: str | None) -> Batch:
        events: list[Event] = []
        newest = last_id
        for name, payload, raw in messages:
            if name is None:
                events.append(quarantine(SOURCE, raw, "unreadable streaming message"))
                continue
            event = self.parser.parse(name, payload, raw)
            if event is None:
                continue
            events.append(event)
            if isinstance(event, Upsert):
                status_id = event.post.raw.get("id") if isinstance(event.post.raw, dict) else None
                if status_id is not None and _id_key(status_id) > _id_key(newest):
                    newest = str(status_id)
        upserts = [e.post.created_at for e in events if isinstance(e, Upsert)]
        if upserts:
            self._mark_event()
        return Batch(events, newest, max(upserts) if upserts else None)


def _timeline(spec: str) -> tuple[str, str | None]:
    if spec in ("public", "public:local"):
        return spec, None
    if spec.startswith("hashtag:") and spec[len("hashtag:"):].strip().lstrip("#"):
        return "hashtag", spec[len("hashtag:"):].strip().lstrip("#")
    raise SourceError(
        f"mastodon: unknown timeline {spec!r}; use public, public:local or hashtag:<tag>"
    )


def _id_key(status_id: Any) -> tuple[int, int, str]:
    """Mastodon ids are numeric strings of varying length: compare them as numbers."""
    if status_id is None:
        return (-1, 0, "")
    text = str(status_id)
    return (0, int(text), text) if text.isascii() and text.isdigit() else (0, 0, text)


async def _sse_messages(source: EventSource) -> AsyncIterator[Message]:
    async for event in source.aiter_sse():
        if event.data:  # the spec dispatches no event without data (a bare id or retry)
            yield event.event, event.data, event.data


async def _ws_messages(ws: Any) -> AsyncIterator[Message]:
    async for text in ws:
        raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            yield None, None, raw
            continue
        if isinstance(obj, dict) and isinstance(obj.get("event"), str):
            yield obj["event"], obj.get("payload"), raw
        else:
            yield None, None, raw


__all__ = ["MastodonOptions", "MastodonSource"]
