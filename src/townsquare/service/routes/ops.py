"""Operations routes: the health check (the one route without a key) and /metrics (admin)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Response

from townsquare import __version__
from townsquare.service.deps import Services, get_principal, get_services
from townsquare.service.errors import ApiError
from townsquare.service.gate.auth import Principal
from townsquare.service.gate.metrics import CONTENT_TYPE

router = APIRouter()


@router.get("/healthz", summary="Liveness: answers while the process serves (no key needed)")
async def healthz() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get(
    "/metrics",
    summary="Prometheus metrics, all tenants' totals (admin keys only)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
async def metrics(
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> Response:
    if not who.admin:
        raise ApiError(
            403, "/metrics shows every tenant's totals: it needs an admin key "
            "(townsquare keys create --admin --name NAME)", code="admin_required",
        )
    body = await asyncio.to_thread(services.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)
