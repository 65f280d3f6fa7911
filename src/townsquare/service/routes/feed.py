"""``GET /v1/posts/stream``: new posts as they are committed, as Server-Sent Events.

The web page's live feed. Posts come from the process's
:class:`townsquare.ingest.feed.PostFeed` (its own sources and any other
process's ingest), filtered per connection by source, language and author,
with the newest stored posts first (``backlog``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from townsquare.model import Post
from townsquare.service.deps import Services, get_principal, get_services
from townsquare.service.errors import ApiError
from townsquare.service.gate.auth import Principal
from townsquare.store.base import SearchFilters

router = APIRouter(prefix="/v1")

HEARTBEAT_S = 15.0
MAX_BACKLOG = 100


def _values(items: list[str]) -> list[str]:
    """Repeated or comma-separated query values: ``?sources=rss,jsonl`` = two."""
    return [v.strip() for item in items for v in item.split(",") if v.strip()]


STREAM_PARAMS = frozenset({"sources", "langs", "authors", "backlog"})


@router.get("/posts/stream", summary="New posts as they are committed (Server-Sent Events)")
async def post_stream(
    request: Request,
    sources: list[str] = Query([], description="Only these sources (repeat or comma-separate)"),
    langs: list[str] = Query([], description="Only these languages, e.g. en, fr"),
    authors: list[str] = Query([], description="Only these handles or account ids"),
    backlog: int = Query(20, ge=0, le=MAX_BACKLOG,
                         description="Newest stored posts sent first, oldest of them first"),
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> StreamingResponse:
    unknown = sorted(set(request.query_params) - STREAM_PARAMS)
    if unknown:
        raise ApiError(400, f"Unknown parameter {unknown[0]!r}; use "
                       f"{', '.join(sorted(STREAM_PARAMS))}", code="unknown_parameter",
                       param=unknown[0])
    filters = SearchFilters(sources=_values(sources), langs=_values(langs),
                            authors=_values(authors))
    feed = services.live.feed
    sub = feed.subscribe(filters)  # before reading the backlog: nothing falls in between
    store = services.runtime.store
    services.meter(who, "posts", 0, 0, "/v1/posts/stream")

    def newest() -> list[Post]:
        if not backlog:
            return []
        keys = [c.key for c in store.recent(filters, backlog)]
        found = store.posts_by_keys(keys)
        return sorted((found[k] for k in keys if k in found), key=lambda p: p.created_at)

    try:
        first = await asyncio.to_thread(newest)
    except BaseException:
        feed.unsubscribe(sub)
        raise

    def event(post: dict[str, Any]) -> str:
        return f"event: post\ndata: {json.dumps(post, ensure_ascii=False)}\n\n"

    async def stream() -> AsyncIterator[str]:
        sent: dict[str, str] = {}  # backlog post id -> text
        try:
            yield ": live posts\n\n"
            for post in first:
                sent[post.id] = post.text
                yield event(post.public_dict())
            yield "event: ready\ndata: {}\n\n"
            while True:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                if sent.pop(item["id"], None) == item["text"]:
                    continue  # in the backlog, and its commit was heard meanwhile
                yield event(item)
        finally:
            feed.unsubscribe(sub)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
