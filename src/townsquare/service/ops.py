"""Operations routes: the health check (the one route without a key) and /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Response

from townsquare import __version__
from townsquare.service.auth import Principal
from townsquare.service.deps import Services, get_principal, get_services
from townsquare.service.metrics import CONTENT_TYPE

router = APIRouter()


@router.get("/healthz", summary="Liveness: answers while the process serves (no key needed)")
async def healthz() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get(
    "/metrics",
    summary="Prometheus metrics (ingest rate and lag per source, quarantine, latency, tokens)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
async def metrics(
    _: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> Response:
    body = await asyncio.to_thread(services.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)
