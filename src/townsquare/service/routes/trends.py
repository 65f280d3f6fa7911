"""``GET /v1/trends`` and ``GET /v1/stories``, over :class:`townsquare.trends.TrendEngine`.

The engine is derived state, owned by :class:`townsquare.runtime.Live`: at
startup it is rebuilt from the store's recent posts in a worker thread (the
API serves meanwhile; these two routes answer 503 with ``Retry-After`` until
it is ready), then fed every committed post (and told of every delete)
through the live feed (:mod:`townsquare.ingest.feed`).

Story summaries are written by the answer engine's LLM
(:class:`townsquare.answer.summaries.StorySummarizer`) in the persona the
request's ``mode`` names, and cached per story, mode and size (see
:mod:`townsquare.trends.stories`). A request writes at most ``summaries`` new
ones and returns the rest with ``summary: null``; the story loop
(:mod:`townsquare.trends.story_loop`) keeps the top stories of the last hour
summarized in ``regular`` mode ahead of requests. Summaries are not metered
to the calling key: they are shared by every caller.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query

from townsquare.answer.personas import UnknownPersona
from townsquare.model import iso
from townsquare.service.deps import Services, get_principal, get_services
from townsquare.service.errors import ApiError
from townsquare.service.gate.auth import Principal
from townsquare.trends import TrendEngine

router = APIRouter(prefix="/v1")


def _engine(services: Services, window: str) -> TrendEngine:
    engine = services.live.trends
    if engine is None:
        raise ApiError(503, "Trends are warming up from the stored posts; try again shortly",
                       headers={"Retry-After": "5"})
    names = engine.window_names()
    if window not in names:
        raise ApiError(400, f"window must be one of {', '.join(names)}", code="invalid_value",
                       param="window")
    return engine


@router.get("/trends", summary="What is bursting now (hashtags, terms, phrases, entities)")
async def trends(
    window: str = Query("1h", max_length=16, description="5m, 1h or 24h"),
    limit: int = Query(20, ge=1, le=100),
    _: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    engine = _engine(services, window)
    found = await asyncio.to_thread(engine.trends, window, limit)
    data = []
    for t in found:
        item = t.to_dict()
        item["samples"] = engine.public_posts(list(t.sample_ids)[:3])
        data.append(item)
    return {"object": "list", "window": window, "data": data, "as_of": iso(datetime.now(UTC))}


@router.get("/stories", summary="Trending posts clustered into stories, with cited summaries")
async def stories(
    window: str = Query("1h", max_length=16, description="5m, 1h or 24h"),
    limit: int = Query(10, ge=1, le=50),
    mode: str = Query("regular", max_length=40, description="the summaries' persona"),
    summaries: int = Query(
        3, ge=0, le=10,
        description="at most this many summaries written for this request (the rest come "
        "from the cache or stay null until a later request or refresh)"),
    _: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    engine = _engine(services, window)
    summarizer = await services.live.summarizer()
    try:
        summarizer.engine.personas.get(mode)
    except UnknownPersona as exc:
        raise ApiError(400, str(exc), code="invalid_value", param="mode") from None
    found = await engine.astories(summarizer, window, limit, mode=mode.strip().lower(),
                                  max_summaries=summaries)
    data = [engine.story_dict(s) for s in found]
    return {"object": "list", "window": window, "mode": mode, "data": data,
            "as_of": iso(datetime.now(UTC))}
