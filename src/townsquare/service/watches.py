"""Standing queries: ``/v1/watches``, saved queries that push new posts or new stories.

A watch is a query plus filters saved by one API key (only that key lists,
reads or deletes it; any other key gets 404). It is one of two kinds:

- ``posts`` (the default): every batch committed to the store, by this
  server's sources or by another process (:mod:`townsquare.service.feed`), is
  matched against the watches, new posts only;
- ``stories``: each story refresh (:mod:`townsquare.service.story_loop`)
  matches the window's stories, and a story the watch has not reported yet
  (by id, which survives refreshes) is pushed once it has ``min_posts`` posts.

Each match is

- sent to the watch's live subscribers, ``GET /v1/watches/{id}/events``
  (Server-Sent Events, ``event: post`` or ``event: story``), and
- POSTed as JSON to the watch's ``webhook_url`` if it has one, signed with
  the watch's secret, by :mod:`townsquare.service.webhooks` (one queue per
  destination, timeouts, retries, a circuit breaker; private and metadata
  addresses refused at creation and at every connection): ingest never waits
  on a webhook, and a full delivery queue drops (and logs) rather than grow.

Matching rule (cheap, lexical): the query and the text are case- and
accent-folded and split into word tokens; the text matches when at least
``min_terms`` of the query's distinct tokens occur in it (default: all of
them). A post's text is its own, and it must pass every given filter
(``authors`` compared folded, ``sources``, ``langs``); a story's text is its
title, features and its first posts. Posts are never matched twice for one
commit; edits re-committed by a source may match again.

Watches are saved in ``<home>/watches.json`` (written atomically), with the
stories each one already reported, so they survive restarts of this process.
The file is private (0600): it holds each watch's signing secret, shown to
its key once, when the watch is created (``POST /v1/watches/{id}/secret``
makes a new one). Replicas with separate homes do not share them; webhooks to
loopback or private addresses need the operator's ``webhook_allow``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from townsquare.model import Post
from townsquare.service.auth import Principal
from townsquare.service.deps import Services, get_principal
from townsquare.service.errors import ApiError
from townsquare.service.webhook_guard import DestinationGuard, DestinationRefused
from townsquare.service.webhooks import WebhookDispatcher, new_secret
from townsquare.text import fold
from townsquare.trends.windows import DEFAULT_WINDOWS

if TYPE_CHECKING:
    from townsquare.trends.stories import Story

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")

MAX_WATCHES_PER_KEY = 50
#: Events a slow SSE subscriber may have pending before new ones are dropped for it.
SUBSCRIBER_BACKLOG = 1000
#: How often the hub re-reads which keys are live: a key revoked (by
#: ``townsquare keys revoke``, maybe in another process) stops its watches
#: within this many seconds.
LIVE_KEYS_REFRESH_S = 10.0
HEARTBEAT_S = 15.0
#: Story ids a watch remembers having reported (oldest forgotten first).
MAX_NOTIFIED = 500
WatchKind = Literal["posts", "stories"]
STORY_WINDOWS = tuple(spec.name for spec in DEFAULT_WINDOWS)

_TOKEN_RE = re.compile(r"\w+")


def tokens(text: str) -> set[str]:
    return set(_TOKEN_RE.findall(fold(text)))


@dataclass
class Watch:
    """One saved query, owned by the key id that created it."""

    id: str
    owner: int
    query: str
    min_terms: int
    authors: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    langs: list[str] = field(default_factory=list)
    webhook_url: str | None = None
    created_at: float = field(default_factory=time.time)
    kind: WatchKind = "posts"
    #: Stories: the trend window watched, and the size a story needs to be reported.
    window: str = "1h"
    min_posts: int = 1
    #: Stories: ids already reported (persisted, so a restart does not repeat them).
    notified: list[str] = field(default_factory=list)
    #: Signs webhook deliveries (HMAC-SHA256); shown to the owner only at creation.
    secret: str = field(default_factory=new_secret)

    @cached_property
    def terms(self) -> set[str]:
        return tokens(self.query)

    def matches_story(self, story: Story, text: str) -> bool:
        if story.size < self.min_posts or story.id in self.notified:
            return False
        return len(self.terms & tokens(text)) >= self.min_terms

    def matches(self, post: Post, post_tokens: set[str]) -> bool:
        if self.authors and fold(post.author) not in {fold(a) for a in self.authors}:
            return False
        if self.sources and post.source not in self.sources:
            return False
        if self.langs and (post.lang or "") not in self.langs:
            return False
        return len(self.terms & post_tokens) >= self.min_terms

    def public_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["owner"], out["notified"], out["secret"]
        if self.kind == "posts":
            del out["window"], out["min_posts"]
        out["object"] = "watch"
        return out


class WatchFile:
    """The saved watches: a JSON list in one file, rewritten atomically on each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._watches: dict[str, Watch] = {}
        if path.exists():
            try:
                items = json.loads(path.read_text(encoding="utf-8"))
                unsigned = False
                for item in items:
                    unsigned = unsigned or not item.get("secret")
                    watch = Watch(**item)  # a watch saved before secrets gets one now
                    self._watches[watch.id] = watch
                if unsigned:
                    self._save()
            except (ValueError, TypeError) as exc:  # keep serving; keep the file for a human
                aside = path.with_name(path.name + ".unreadable")
                os.replace(path, aside)
                self._watches.clear()
                log.error("could not read %s (%s); moved it to %s", path, exc, aside)

    def all(self) -> list[Watch]:
        with self._lock:
            return list(self._watches.values())

    def of(self, owner: int) -> list[Watch]:
        return [w for w in self.all() if w.owner == owner]

    def get(self, owner: int, watch_id: str) -> Watch | None:
        with self._lock:
            watch = self._watches.get(watch_id)
        return watch if watch is not None and watch.owner == owner else None

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._watches[watch.id] = watch
            self._save()

    def rotate_secret(self, watch: Watch) -> str:
        with self._lock:
            watch.secret = new_secret()
            self._save()
            return watch.secret

    def remove(self, watch_id: str) -> None:
        with self._lock:
            self._watches.pop(watch_id, None)
            self._save()

    def mark_notified(self, marks: list[tuple[Watch, str]]) -> None:
        """Record reported stories, then save once."""
        with self._lock:
            for watch, story_id in marks:
                watch.notified.append(story_id)
                del watch.notified[:-MAX_NOTIFIED]
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        data = [asdict(w) for w in self._watches.values()]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds secrets
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, ensure_ascii=False, indent=1))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


@dataclass(eq=False)
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]]


class WatchHub:
    """Matches committed posts against the watches and fans the matches out."""

    def __init__(
        self,
        saved: WatchFile,
        live_keys: Callable[[], set[int]] | None = None,
        live_keys_refresh_s: float | None = None,
        webhooks: WebhookDispatcher | None = None,
    ) -> None:
        self.saved = saved
        self.webhooks = webhooks or WebhookDispatcher()
        self._live_keys = live_keys
        self._live_refresh_s = (
            LIVE_KEYS_REFRESH_S if live_keys_refresh_s is None else live_keys_refresh_s
        )
        self._live: tuple[float, set[int]] | None = None
        self._subs: dict[str, set[_Subscriber]] = {}
        self._subs_lock = threading.Lock()

    # --- whose watches run -----------------------------------------------------

    def owner_live(self, owner: int) -> bool:
        """Whether ``owner``'s key is unrevoked (re-read every few seconds).

        A revoked key's watches stay saved (``keys`` has no un-revoke, but an
        operator may want to see them) and neither match nor push anything.
        """
        if self._live_keys is None:
            return True
        now = time.monotonic()
        if self._live is None or now - self._live[0] >= self._live_refresh_s:
            try:
                self._live = (now, self._live_keys())
            except Exception:  # keep the last answer rather than stop every watch
                log.exception("watches: could not read the live keys")
                if self._live is None:
                    return True
        return owner in self._live[1]

    def _running(self, kind: str) -> list[Watch]:
        return [w for w in self.saved.all() if w.kind == kind and self.owner_live(w.owner)]

    # --- matching (an ingest listener: runs in the committing thread) -------------

    def listener(self, posts: list[Post], _deleted: list[str]) -> None:
        watches = self._running("posts")
        if not watches or not posts:
            return
        folded = [(p, tokens(p.text)) for p in posts]
        for watch in watches:
            for post, post_tokens in folded:
                if watch.matches(post, post_tokens):
                    self._push(watch, {"watch_id": watch.id, "post": post.public_dict()})

    # --- stories (called by the story loop after each refresh) ---------------------

    def story_windows(self) -> set[str]:
        """The windows some story watch looks at."""
        return {w.window for w in self._running("stories")}

    def new_stories(
        self, window: str, stories: list[Story], text_of: Callable[[Story], str]
    ) -> list[tuple[Watch, Story]]:
        """(watch, story) pairs to report: matching, big enough, not reported before."""
        watches = [w for w in self._running("stories") if w.window == window]
        if not watches or not stories:
            return []
        texts = {s.id: text_of(s) for s in stories}
        return [(w, s) for w in watches for s in stories if w.matches_story(s, texts[s.id])]

    def push_stories(self, found: list[tuple[Watch, dict[str, Any]]]) -> None:
        """Send each story event, then remember it was sent (one file write)."""
        for watch, story in found:
            self._push(watch, {"watch_id": watch.id, "story": story})
        if found:
            self.saved.mark_notified([(w, str(story["id"])) for w, story in found])

    def _push(self, watch: Watch, event: dict[str, Any]) -> None:
        with self._subs_lock:
            subs = list(self._subs.get(watch.id, ()))
        for sub in subs:
            sub.loop.call_soon_threadsafe(_offer, sub.queue, event)
        if watch.webhook_url:
            self.webhooks.submit(watch.owner, watch.webhook_url, watch.secret, event)

    # --- SSE subscribers ---------------------------------------------------------

    def subscribe(self, watch_id: str) -> _Subscriber:
        sub = _Subscriber(asyncio.get_running_loop(), asyncio.Queue(SUBSCRIBER_BACKLOG))
        with self._subs_lock:
            self._subs.setdefault(watch_id, set()).add(sub)
        return sub

    def unsubscribe(self, watch_id: str, sub: _Subscriber) -> None:
        with self._subs_lock:
            subs = self._subs.get(watch_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[watch_id]

    def subscribers(self, watch_id: str) -> int:
        with self._subs_lock:
            return len(self._subs.get(watch_id, ()))

    @property
    def delivered(self) -> int:
        return self.webhooks.stats.delivered

    @property
    def failed(self) -> int:
        return self.webhooks.stats.failed

    def close(self) -> None:
        self.webhooks.close()


def _offer(q: asyncio.Queue[dict[str, Any]], event: dict[str, Any]) -> None:
    try:
        q.put_nowait(event)
    except asyncio.QueueFull:
        pass  # a subscriber this far behind loses events rather than memory


def mount(app: FastAPI, services: Services) -> WatchHub:
    """Load the saved watches, hear every committed post, serve the routes."""
    store = services.runtime.store

    def live_keys() -> set[int]:
        return {k.id for k in store.list_api_keys() if k.revoked_at is None}

    settings = services.runtime.settings
    guard = DestinationGuard(settings.webhook_allow)
    hub = WatchHub(WatchFile(settings.home / "watches.json"), live_keys,
                   webhooks=WebhookDispatcher(guard))
    # The live feed: posts this process commits and those another process's ingest does.
    app.state.feed.add_listener(hub.listener)
    app.state.watches = hub
    app.include_router(router)
    return hub


def _hub(request: Request) -> WatchHub:
    hub: WatchHub = request.app.state.watches
    return hub


# --- routes ------------------------------------------------------------------------


class WatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is refused, never dropped
    query: str = Field(min_length=1, max_length=500)
    min_terms: int | None = Field(
        None, ge=1, le=50,
        description="How many of the query's words a post must contain (default: all)")
    authors: list[str] = Field(default_factory=list, max_length=100)
    sources: list[str] = Field(default_factory=list, max_length=20)
    langs: list[str] = Field(default_factory=list, max_length=20)
    webhook_url: str | None = Field(None, max_length=2000)
    kind: WatchKind = Field(
        "posts", description="posts: push each new matching post; stories: push each new "
        "trending story that matches")
    window: str = Field("1h", max_length=16, description="stories: the trend window watched")
    min_posts: int = Field(
        1, ge=1, le=1_000_000, description="stories: the posts a story needs to be reported")



def _not_found(watch_id: str) -> ApiError:
    return ApiError(404, f"No watch {watch_id!r} for this key", code="watch_not_found",
                    param="id")


@router.post("/watches", summary="Save a standing query that pushes new posts or stories")
async def create_watch(
    body: WatchRequest,
    request: Request,
    who: Principal = Depends(get_principal),
) -> dict[str, Any]:
    hub = _hub(request)
    terms = tokens(body.query)
    if not terms:
        raise ApiError(400, "query must contain at least one word", code="invalid_value",
                       param="query")
    if body.min_terms is not None and body.min_terms > len(terms):
        raise ApiError(400, f"min_terms is more than the query's {len(terms)} words",
                       code="invalid_value", param="min_terms")
    if body.kind == "stories" and body.window not in STORY_WINDOWS:
        raise ApiError(400, f"window must be one of {', '.join(STORY_WINDOWS)}",
                       code="invalid_value", param="window")
    if body.webhook_url is not None:
        await _check_webhook(hub, body.webhook_url)
    if len(hub.saved.of(who.key_id)) >= MAX_WATCHES_PER_KEY:
        raise ApiError(400, f"At most {MAX_WATCHES_PER_KEY} watches per key",
                       code="too_many_watches")
    watch = Watch(
        id="watch_" + secrets.token_hex(8), owner=who.key_id, query=body.query,
        min_terms=body.min_terms or len(terms), authors=body.authors, sources=body.sources,
        langs=body.langs, webhook_url=body.webhook_url, kind=body.kind,
        window=body.window, min_posts=body.min_posts,
    )
    await asyncio.to_thread(hub.saved.add, watch)
    out = watch.public_dict()
    if watch.webhook_url:
        out["secret"] = watch.secret  # shown once: the receiver verifies signatures with it
    return out


async def _check_webhook(hub: WatchHub, url: str) -> None:
    """Refuse a destination the server may not call (checked again at every delivery).

    A name that does not resolve now is accepted (DNS may be down); one that
    resolves to a private or metadata address is refused.
    """
    guard = hub.webhooks.guard
    try:
        guard.parse(url)
        await asyncio.to_thread(guard.check, url)
    except DestinationRefused as exc:
        if "does not resolve" in str(exc):
            return
        raise ApiError(400, str(exc), code="invalid_value", param="webhook_url") from None


@router.post("/watches/{watch_id}/secret",
             summary="Replace a watch's webhook signing secret (returned once)")
async def rotate_secret(
    watch_id: str, request: Request, who: Principal = Depends(get_principal),
) -> dict[str, Any]:
    hub = _hub(request)
    watch = hub.saved.get(who.key_id, watch_id)
    if watch is None:
        raise _not_found(watch_id)
    secret = await asyncio.to_thread(hub.saved.rotate_secret, watch)
    return {"id": watch_id, "object": "watch.secret", "secret": secret}


@router.get("/watches", summary="The calling key's watches")
async def list_watches(
    request: Request, who: Principal = Depends(get_principal),
) -> dict[str, Any]:
    watches = sorted(_hub(request).saved.of(who.key_id), key=lambda w: w.created_at)
    return {"object": "list", "data": [w.public_dict() for w in watches]}


@router.delete("/watches/{watch_id}", summary="Delete one of the calling key's watches")
async def delete_watch(
    watch_id: str, request: Request, who: Principal = Depends(get_principal),
) -> dict[str, Any]:
    hub = _hub(request)
    if hub.saved.get(who.key_id, watch_id) is None:
        raise _not_found(watch_id)
    await asyncio.to_thread(hub.saved.remove, watch_id)
    return {"id": watch_id, "object": "watch", "deleted": True}


@router.get("/watches/{watch_id}/events",
            summary="New posts or stories matching a watch, as Server-Sent Events")
async def watch_events(
    watch_id: str,
    request: Request,
    who: Principal = Depends(get_principal),
) -> StreamingResponse:
    hub = _hub(request)
    if hub.saved.get(who.key_id, watch_id) is None:
        raise _not_found(watch_id)
    sub = hub.subscribe(watch_id)  # before the response starts: no post is missed after 200

    async def stream() -> AsyncIterator[str]:
        try:
            yield f": watching {watch_id}\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    if hub.saved.get(who.key_id, watch_id) is None:
                        yield "event: deleted\ndata: {}\n\n"
                        return
                    if not hub.owner_live(who.key_id):
                        yield "event: revoked\ndata: {}\n\n"
                        return
                    yield ": heartbeat\n\n"
                    continue
                name = "story" if "story" in event else "post"
                yield f"event: {name}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
        finally:
            hub.unsubscribe(watch_id, sub)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
