"""What route handlers share: the :class:`Services` bundle and the caller's identity.

:class:`Services` holds the request gate's parts (built by ``create_app``)
and the running system (:class:`townsquare.runtime.Live`, built by the
composition root); routes read both, and assign neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request

from townsquare.service.errors import ApiError
from townsquare.service.gate.auth import Authenticator, Principal
from townsquare.service.gate.ledger import UsageLedger
from townsquare.service.gate.limits import Limiter, MonthlyQuota
from townsquare.service.gate.metrics import CachedStats, Metrics
from townsquare.service.gate.search_cache import SearchCache

if TYPE_CHECKING:
    from townsquare.runtime import Live, Runtime

#: The bearer scheme as /openapi.json declares it (the gate middleware does the checking).
SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key (`ts-...`) from `townsquare keys create`.",
}


@dataclass(frozen=True)
class Services:
    """Everything a request may need, built once by ``create_app`` (frozen: nothing is
    attached to it later)."""

    runtime: Runtime
    #: The running system: answer engine, trends, feed, watches, supervisor.
    live: Live
    auth: Authenticator
    limiter: Limiter
    quota: MonthlyQuota
    ledger: UsageLedger
    metrics: Metrics
    stats: CachedStats
    search_cache: SearchCache
    started: float = field(default_factory=time.time)

    def meter(self, who: Principal, model: str, prompt: int, completion: int, route: str) -> None:
        """Record one metered request: ledger, per-minute tokens, monthly quota, metrics."""
        self.ledger.record(who.key_id, model, prompt, completion, route)
        tokens = prompt + completion
        if tokens:
            self.limiter.charge_tokens(who, tokens)
            self.quota.charge(who.key_id, tokens)
            self.metrics.count_tokens(model, prompt, completion)


def declare_security(app: FastAPI, is_public: Callable[[str], bool]) -> None:
    """Mark every non-public operation in /openapi.json as needing the bearer key.

    Declared here rather than through a ``Security`` dependency, which FastAPI
    would resolve on every request for a check the gate has already made.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": SECURITY_SCHEME}
            for path, operations in schema.get("paths", {}).items():
                if not is_public(path):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Dependencies are ``async def``: FastAPI runs plain ``def`` ones in a thread pool,
# a thread hop per request for what is an attribute lookup.


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_principal(request: Request) -> Principal:
    """The key the gate authenticated (deny by default: none means 401)."""
    who = getattr(request.state, "principal", None)
    if not isinstance(who, Principal):
        raise ApiError(401, "You didn't provide an API key.", code="missing_api_key")
    return who
