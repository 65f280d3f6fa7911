"""The three pure-ASGI layers every request passes, outermost first.

- :class:`ObserveMiddleware` times and counts every response for /metrics.
- :class:`BodyLimitMiddleware` buffers request bodies up to a size and answers
  413 past it, before any JSON parsing happens.
- :class:`GateMiddleware` authenticates and applies the key's limits. It is
  *deny by default*: every path needs a key except the few listed in
  :data:`PUBLIC_PATHS` / :data:`PUBLIC_PREFIXES` (the health check, the
  OpenAPI document and the web page's static shell, which holds no data), so
  a route added later is protected without anyone remembering to.

Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task per request, and
streamed responses pass through untouched (the concurrency slot is held until
the last byte of a stream is sent).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from townsquare.service.errors import ApiError, send_error
from townsquare.service.gate.auth import Authenticator, AuthError
from townsquare.service.gate.limits import MonthlyQuota, Refusal

if TYPE_CHECKING:
    from townsquare.service.gate.limits import Limiter
    from townsquare.service.gate.metrics import Metrics

PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", "/", "/favicon.ico", "/robots.txt"})
PUBLIC_PREFIXES = ("/static/",)
#: Routes whose responses consume LLM tokens (tokens/min and the monthly quota apply).
TOKEN_PATHS = frozenset({"/v1/chat/completions"})
#: Authenticated routes that do not count against the per-minute request limit.
UNMETERED_PATHS = frozenset({"/v1/live"})
#: Streams the web page keeps open: counted per minute, but they hold no concurrency slot.
LONG_LIVED_PATHS = frozenset({"/v1/posts/stream"})
DEFAULT_MAX_BODY = 1024 * 1024


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def observe_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observe_send)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or "other"
            self.metrics.observe(route, scope["method"], status, time.perf_counter() - start)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> ApiError:
        return ApiError(
            413, f"Request body too large: the limit is {self.max_bytes:,} bytes",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_error(send, ApiError(400, "Bad Content-Length header"))
                    return
                if declared > self.max_bytes:
                    await send_error(send, self._too_large())
                    return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await send_error(send, self._too_large())
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def refusal_error(refusal: Refusal, headers: dict[str, str]) -> ApiError:
    headers = dict(headers)
    retry = max(refusal.retry_after, 0.001)
    headers["Retry-After"] = str(max(1, math.ceil(retry)))
    headers["retry-after-ms"] = str(math.ceil(retry * 1000))
    if not refusal.retryable:
        headers["x-should-retry"] = "false"
    code = "insufficient_quota" if refusal.kind == "insufficient_quota" else "rate_limit_exceeded"
    return ApiError(429, refusal.message, type=refusal.kind, code=code, headers=headers)


class GateMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        limiter: Limiter,
        quota: MonthlyQuota,
        metrics: Metrics,
    ) -> None:
        self.app = app
        self.auth = authenticator
        self.limiter = limiter
        self.quota = quota
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            who = self.auth.authenticate(_header(scope, b"authorization"))
        except AuthError as exc:
            await send_error(send, exc)
            return
        scope.setdefault("state", {})["principal"] = who
        if scope["path"] in UNMETERED_PATHS:
            # Cheap status polled by the web page every few seconds: authenticated,
            # but not counted against requests/min (a free key would starve its chat).
            await self.app(scope, receive, send)
            return
        uses_tokens = scope["path"] in TOKEN_PATHS
        refusal = await self.quota.check(who) if uses_tokens else None
        admission = None
        if refusal is None:
            admission = await self.limiter.admit(who, uses_tokens)  # counts it, takes a slot
            refusal = admission.refusal
        if refusal is not None:
            self.metrics.rate_limited.labels(refusal.kind).inc()
            await send_error(send, refusal_error(refusal, self.limiter.headers(who)))
            return
        if scope["path"] in LONG_LIVED_PATHS:
            assert admission is not None
            await self.limiter.leave(who, admission)  # an open feed must not hold a chat slot
            await self.app(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in self.limiter.headers(who).items()
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_limits)
        finally:
            assert admission is not None
            await self.limiter.leave(who, admission)
