"""The HTTP service: an OpenAI-compatible API, search, live status, and the web page.

``create_app(runtime, ...)`` builds one FastAPI application around a
:class:`~townsquare.runtime.Runtime` (store, retriever, LLMs). ``townsquare
serve`` runs it on uvicorn together with a
:class:`~townsquare.service.supervisor.Supervisor` that ingests the configured
sources in the same process; tests drive it in-process through
``httpx.ASGITransport`` or on a loopback port.

Layers, outermost first: metrics (``ObserveMiddleware``), the body-size guard
(413), the gate (API key, deny by default, per-key limits, ``x-ratelimit-*``
headers), then FastAPI routing with one OpenAI-shaped error handler set
(:mod:`townsquare.service.errors`).

Routes (all need ``Authorization: Bearer ts-...`` except ``/healthz``, the
OpenAPI document and the web page's static shell; see
:mod:`townsquare.service.middleware`):

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
``/v1/watches[/{id}[/events]]``       standing queries (:mod:`townsquare.service.watches`)
``GET /v1/trends``, ``/v1/stories``   when :mod:`townsquare.trends` is installed
``GET /metrics``                      Prometheus text
``GET /healthz``                      liveness, no key
====================================  ==================================================
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from importlib import import_module
from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from townsquare import __version__
from townsquare.runtime import Runtime
from townsquare.service import chat, conversations, data, feed, models, ops, watches
from townsquare.service.auth import Authenticator
from townsquare.service.deps import Services, declare_security
from townsquare.service.errors import install_error_handlers
from townsquare.service.fields import refuse_unknown_query
from townsquare.service.ledger import UsageLedger
from townsquare.service.limits import Limiter, MonthlyQuota, RateLimiter
from townsquare.service.metrics import CachedStats, Metrics
from townsquare.service.middleware import (
    DEFAULT_MAX_BODY,
    BodyLimitMiddleware,
    GateMiddleware,
    ObserveMiddleware,
    is_public,
)
from townsquare.service.search_cache import SearchCache
from townsquare.service.supervisor import Supervisor

log = logging.getLogger(__name__)


def create_app(
    runtime: Runtime,
    *,
    supervisor: Supervisor | None = None,
    engine: Any = None,
    trends: bool = True,
    web: bool = True,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    auth_cache_s: float = 5.0,
    search_cache_s: float | None = None,
) -> FastAPI:
    """The application. ``supervisor`` (if any) is started and stopped with it.

    ``engine`` replaces the answer engine built from the runtime (tests pass
    one with a scripted LLM); ``trends`` wires ``/v1/trends`` and
    ``/v1/stories`` when the trends package is importable; ``web`` mounts the
    web page when :mod:`townsquare.service.web` exists. ``search_cache_s``
    bounds how long a search result may be reused (see
    :mod:`townsquare.service.search_cache`; 0 turns the cache off; default
    5 s with an embedder, whose vectors signal writes from any process, else 1 s).
    """
    store = runtime.store
    ledger = UsageLedger(store)
    stats = CachedStats(store.stats)
    metrics = Metrics(supervisor, stats)
    has_dense = runtime.settings.embedder != "none"
    if search_cache_s is None:
        search_cache_s = 5.0 if has_dense else 1.0
    search_cache = SearchCache(ttl_s=search_cache_s, version=lambda: _dense_seq(runtime))
    # Every committed post, from this process's sources or another process's ingest.
    posts = feed.PostFeed(store)
    if supervisor is not None:
        supervisor.add_listener(posts.heard)
    posts.add_listener(search_cache.invalidate)
    services = Services(
        runtime=runtime,
        auth=Authenticator(store, runtime.settings.tiers, cache_s=auth_cache_s),
        limiter=_limiter(runtime),
        quota=MonthlyQuota(store, flush=ledger.flush_sync),
        ledger=ledger,
        metrics=metrics,
        stats=stats,
        search_cache=search_cache,
        supervisor=supervisor,
        engine=engine,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        background = [
            asyncio.create_task(_start_background(services, trends), name="start-background"),
            asyncio.create_task(posts.run(), name="live-feed"),
        ]
        every = runtime.settings.story_refresh_s
        if trends and every > 0:
            background.append(asyncio.create_task(
                _run_story_loop(services, app.state.watches, every), name="story-loop"))
        lookup = _identity_lookup(services)
        if lookup is not None:
            background.append(asyncio.create_task(lookup.run(), name="identity-lookup"))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with suppress(asyncio.CancelledError, Exception):
                    await task
            if services.supervisor is not None:
                await services.supervisor.stop()
            await asyncio.to_thread(app.state.watches.close)
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
    app.state.feed = services.feed = posts
    install_error_handlers(app)
    app.include_router(chat.router)
    app.include_router(models.router)
    app.include_router(conversations.router)
    app.include_router(feed.router)  # before data's /v1/posts/{id}, which would take "stream"
    app.include_router(data.router)
    app.include_router(ops.router)
    watches.mount(app, services)
    if trends:
        _mount_trends(app)
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
    from townsquare.service.shared_limits import RedisRateLimiter

    return RedisRateLimiter(url)


def _identity_lookup(services: Services) -> Any:
    """The Bluesky handle lookup, when the settings and the running sources want it."""
    from townsquare.ingest.identity import IdentityLookup, lookup_wanted

    settings = services.runtime.settings
    kinds = [s.kind for s in services.supervisor.statuses()] if services.supervisor else []
    if not lookup_wanted(settings.identity_lookup, kinds):
        return None
    return IdentityLookup(services.runtime.store, settings.identity_lookup_url)


async def _start_background(services: Services, trends: bool) -> None:
    """Warm the trends up, load the embedder and dense index, start ingesting, follow.

    All of it after the server is listening: the API answers meanwhile (a
    first start may spend a minute distilling the embedder).
    """
    runtime = services.runtime
    if trends:  # first: it needs no model, and must hear posts before ingest starts
        try:
            from townsquare.service import trend_routes

            await trend_routes.attach(services)
        except Exception:
            log.exception("trends unavailable; /v1/trends and /v1/stories will answer 503")
    if runtime.settings.embedder != "none":
        try:
            retriever = await asyncio.to_thread(lambda: runtime.retriever)
            await asyncio.to_thread(retriever.sync_dense, True)
        except Exception:
            log.exception("could not load the embedder or the dense index")
    if services.supervisor is not None:
        await services.supervisor.start()
    await _follow_dense(runtime)


async def _run_story_loop(services: Services, hub: Any, every_s: float) -> None:
    """Once the trend engine is warm: keep stories summarized and story watches told."""
    from townsquare.service.story_loop import StoryLoop

    while services.trends is None:
        await asyncio.sleep(min(1.0, every_s))
    summaries = max(0, services.runtime.settings.story_summaries)
    services.story_loop = loop = StoryLoop(services, hub, every_s, summaries)
    await loop.run()


def _dense_seq(runtime: Runtime) -> int:
    """The newest vector sequence the in-process dense index has seen (0 without one)."""
    retriever = runtime.__dict__.get("retriever")  # never build it just to ask
    dense = getattr(retriever, "dense", None)
    return int(getattr(dense, "seq", 0))


async def _follow_dense(runtime: Runtime, every_s: float = 0.2) -> None:
    """Keep pulling new vectors into the dense index in the background.

    Searches then find the index current, and the search cache sees vectors
    written by any process even while every request is a cache hit.
    """
    retriever = runtime.__dict__.get("retriever")
    if runtime.settings.embedder == "none" or retriever is None:
        return
    try:
        while True:
            await asyncio.sleep(every_s)
            await asyncio.to_thread(retriever.sync_dense)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("dense index follower stopped; searches still sync on their own")


def _mount_trends(app: FastAPI) -> None:
    try:
        from townsquare.service import trend_routes
    except ImportError as exc:  # the trends package is optional
        log.info("trends not available: %s", exc)
        return
    router: APIRouter = trend_routes.router
    app.include_router(router)


def _mount_web(app: FastAPI) -> None:
    try:
        module = import_module("townsquare.service.web")
    except ModuleNotFoundError as exc:
        if exc.name != "townsquare.service.web":
            raise
        return
    module.mount_web(app)
