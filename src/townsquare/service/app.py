"""The HTTP service: an OpenAI-compatible API, search, live status, and the web page.

``create_app(runtime, ...)`` builds one FastAPI application around a
:class:`~townsquare.runtime.Runtime` (store, retriever, LLMs). The running
system (answer engine, trend engine, live feed, watch hub, story loop,
ingest supervisor) is a :class:`~townsquare.runtime.Live` from the
composition root, started and stopped with the app's lifespan; this module
adds only the HTTP side: the request gate, the routes, the error shape.
``townsquare serve`` runs it on uvicorn together with a
:class:`~townsquare.ingest.supervisor.Supervisor` that ingests the configured
sources in the same process; tests drive it in-process through
``httpx.ASGITransport`` or on a loopback port.

Layout of :mod:`townsquare.service`: ``routes/`` (one module per group of
routes), ``gate/`` (middleware, auth, limits, ledger, metrics, search cache,
header timeout), ``wire/`` (OpenAI's wire format, request field types),
``errors`` (errors to HTTP, in one place), ``deps`` (what routes share).

Layers, outermost first: metrics (``ObserveMiddleware``), the body-size guard
(413), the gate (API key, deny by default, per-key limits, ``x-ratelimit-*``
headers), then FastAPI routing with one OpenAI-shaped error handler set
(:mod:`townsquare.service.errors`).

Routes (all need ``Authorization: Bearer ts-...`` except ``/healthz``, the
OpenAPI document and the web page's static shell; see
:mod:`townsquare.service.gate.middleware`):

====================================  ==================================================
``POST /v1/chat/completions``         OpenAI chat, streamed (SSE) or not; ``citations``,
                                      ``conversation_id``, xAI's ``search_parameters``
``GET /v1/models[/{id}]``             one model per persona (``townsquare``, ``-fun``)
``/v1/conversations[/{id}[/export]]`` the calling key's conversations: list, read,
                                      rename, delete, export as Markdown
``GET /v1/posts/stream``              new posts as they commit, any process (SSE)
``POST /v1/search``                   hybrid search with filters
``GET /v1/posts/{id}``                one post (posts are shared public data)
``GET /v1/live``                      sources' status, posts/s, lag
``GET /v1/usage``                     the calling key's usage and quota
``/v1/watches[/{id}[/events]]``       standing queries (:mod:`townsquare.service.routes.watches`)
``GET /v1/trends``, ``/v1/stories``   when :mod:`townsquare.trends` is installed
``GET /metrics``                      Prometheus text
``GET /healthz``                      liveness, no key
====================================  ==================================================
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import import_module

from fastapi import Depends, FastAPI

from townsquare import __version__
from townsquare.answer import AnswerEngine
from townsquare.ingest.supervisor import Supervisor
from townsquare.runtime import Live, Runtime
from townsquare.service.deps import Services, declare_security
from townsquare.service.errors import install_error_handlers
from townsquare.service.gate.auth import Authenticator
from townsquare.service.gate.ledger import UsageLedger
from townsquare.service.gate.limits import Limiter, MonthlyQuota, RateLimiter
from townsquare.service.gate.metrics import CachedStats, Metrics
from townsquare.service.gate.middleware import (
    DEFAULT_MAX_BODY,
    BodyLimitMiddleware,
    GateMiddleware,
    ObserveMiddleware,
    is_public,
)
from townsquare.service.gate.search_cache import SearchCache
from townsquare.service.routes import chat, conversations, data, feed, models, ops, watches
from townsquare.service.wire.fields import refuse_unknown_query

log = logging.getLogger(__name__)


def create_app(
    runtime: Runtime,
    *,
    supervisor: Supervisor | None = None,
    engine: AnswerEngine | None = None,
    trends: bool = True,
    web: bool = True,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    auth_cache_s: float = 5.0,
    search_cache_s: float | None = None,
) -> FastAPI:
    """The application. ``supervisor`` (if any) is started and stopped with it.

    ``engine`` replaces the answer engine built from the runtime (tests pass
    one with their own policy); ``trends`` wires ``/v1/trends`` and
    ``/v1/stories`` and the story loop; ``web`` mounts the web page when
    :mod:`townsquare.service.routes.web` exists. ``search_cache_s`` bounds how
    long a search result may be reused (see
    :mod:`townsquare.service.gate.search_cache`; 0 turns the cache off; default
    5 s with an embedder, whose vectors signal writes from any process, else 1 s).
    """
    store = runtime.store
    ledger = UsageLedger(store)
    stats = CachedStats(store.stats)
    metrics = Metrics(supervisor, stats)
    has_dense = runtime.settings.embedder != "none"
    if search_cache_s is None:
        search_cache_s = 5.0 if has_dense else 1.0
    search_cache = SearchCache(ttl_s=search_cache_s, version=runtime.dense_seq)
    live = Live(runtime, supervisor=supervisor, engine=engine, trends=trends,
                on_posts=[search_cache.invalidate])
    services = Services(
        runtime=runtime,
        live=live,
        auth=Authenticator(store, runtime.settings.tiers, cache_s=auth_cache_s),
        limiter=_limiter(runtime),
        quota=MonthlyQuota(store, flush=ledger.flush_sync),
        ledger=ledger,
        metrics=metrics,
        stats=stats,
        search_cache=search_cache,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await live.start()
        try:
            yield
        finally:
            await live.stop()
            await services.ledger.aclose()
            await services.limiter.aclose()

    app = FastAPI(
        title="townsquare",
        version=__version__,
        summary="Live posts in, cited answers out: an OpenAI-compatible API over the live "
        "public conversation.",
        docs_url=None,  # Swagger UI loads from a CDN: not offline, not under our CSP
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[Depends(refuse_unknown_query)],
    )
    app.state.services = services
    app.state.watches = live.watches  # where townsquare.service.routes.watches' routes look
    install_error_handlers(app)
    app.include_router(chat.router)
    app.include_router(models.router)
    app.include_router(conversations.router)
    app.include_router(feed.router)  # before data's /v1/posts/{id}, which would take "stream"
    app.include_router(data.router)
    app.include_router(ops.router)
    app.include_router(watches.router)
    if trends:
        from townsquare.service.routes import trends as trend_routes

        app.include_router(trend_routes.router)
    if web:
        _mount_web(app)
    declare_security(app, is_public)
    # Added last = outermost.
    app.add_middleware(
        GateMiddleware, authenticator=services.auth, limiter=services.limiter,
        quota=services.quota, metrics=metrics,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    return app


def _limiter(runtime: Runtime) -> Limiter:
    """Shared through Redis when ``redis_url`` is set (replicas), else in process."""
    url = runtime.settings.redis_url
    if not url:
        return RateLimiter()
    from townsquare.service.gate.shared_limits import RedisRateLimiter

    return RedisRateLimiter(url)


def _mount_web(app: FastAPI) -> None:
    try:
        module = import_module("townsquare.service.routes.web")
    except ModuleNotFoundError as exc:
        if exc.name != "townsquare.service.routes.web":
            raise
        return
    module.mount_web(app)
