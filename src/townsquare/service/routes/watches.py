"""``/v1/watches``: the HTTP face of standing queries (:mod:`townsquare.watches`).

Create, list, delete a watch, replace its webhook secret, and follow its
matches as Server-Sent Events (``event: post`` or ``event: story``; encoded by
sse-starlette). A watch is its creating key's alone: any other key gets 404.
The watches themselves live in the store, shared by every replica.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from townsquare.service.deps import get_principal
from townsquare.service.errors import ApiError
from townsquare.service.gate.auth import Principal
from townsquare.watches import (
    MAX_WATCHES_PER_KEY,
    STORY_WINDOWS,
    DestinationRefused,
    Watch,
    WatchHub,
    WatchKind,
    tokens,
)

router = APIRouter(prefix="/v1")

#: Seconds between heartbeats on an idle event stream (each also checks the
#: watch still exists and its key is still live).
HEARTBEAT_S = 15.0


def _hub(request: Request) -> WatchHub:
    hub: WatchHub = request.app.state.watches
    return hub


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
    if len(await asyncio.to_thread(hub.saved.of, who.key_id)) >= MAX_WATCHES_PER_KEY:
        raise ApiError(400, f"At most {MAX_WATCHES_PER_KEY} watches per key",
                       code="too_many_watches")
    watch = Watch(
        id="watch_" + secrets.token_hex(8), owner=who.key_id, query=body.query,
        min_terms=body.min_terms or len(terms), authors=body.authors, sources=body.sources,
        langs=body.langs, webhook_url=body.webhook_url, kind=body.kind,
        window=body.window, min_posts=body.min_posts,
    )
    watch = await asyncio.to_thread(hub.saved.add, watch)
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


async def _owned(hub: WatchHub, who: Principal, watch_id: str) -> Watch:
    watch = await asyncio.to_thread(hub.saved.get, who.key_id, watch_id)
    if watch is None:
        raise _not_found(watch_id)
    return watch


@router.post("/watches/{watch_id}/secret",
             summary="Replace a watch's webhook signing secret (returned once)")
async def rotate_secret(
    watch_id: str, request: Request, who: Principal = Depends(get_principal),
) -> dict[str, Any]:
    hub = _hub(request)
    watch = await _owned(hub, who, watch_id)
    secret = await asyncio.to_thread(hub.saved.rotate_secret, watch)
    return {"id": watch_id, "object": "watch.secret", "secret": secret}


@router.get("/watches", summary="The calling key's watches")
async def list_watches(
    request: Request, who: Principal = Depends(get_principal),
) -> dict[str, Any]:
    watches = await asyncio.to_thread(_hub(request).saved.of, who.key_id)
    return {"object": "list", "data": [w.public_dict() for w in watches]}


@router.delete("/watches/{watch_id}", summary="Delete one of the calling key's watches")
async def delete_watch(
    watch_id: str, request: Request, who: Principal = Depends(get_principal),
) -> dict[str, Any]:
    hub = _hub(request)
    if not await asyncio.to_thread(hub.saved.remove, watch_id, who.key_id):
        raise _not_found(watch_id)
    return {"id": watch_id, "object": "watch", "deleted": True}


@router.get("/watches/{watch_id}/events",
            summary="New posts or stories matching a watch, as Server-Sent Events")
async def watch_events(
    watch_id: str,
    request: Request,
    who: Principal = Depends(get_principal),
) -> EventSourceResponse:
    hub = _hub(request)
    await _owned(hub, who, watch_id)
    sub = hub.subscribe(watch_id)  # before the response starts: no post is missed after 200

    async def stream() -> AsyncIterator[ServerSentEvent]:
        try:
            yield ServerSentEvent(comment=f"watching {watch_id}")
            while True:
                try:
                    event = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    if await asyncio.to_thread(hub.saved.get, who.key_id, watch_id) is None:
                        yield ServerSentEvent("{}", event="deleted")
                        return
                    if not hub.owner_live(who.key_id):
                        yield ServerSentEvent("{}", event="revoked")
                        return
                    yield ServerSentEvent(comment="heartbeat")
                    continue
                name = "story" if "story" in event else "post"
                yield ServerSentEvent(json.dumps(event, ensure_ascii=False), event=name)
        finally:
            hub.unsubscribe(watch_id, sub)

    # Heartbeats are ours (each one checks the watch and the key), so no library pings.
    return EventSourceResponse(stream(), sep="\n", ping=3600)
