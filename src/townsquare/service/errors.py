"""One error shape for every failure: OpenAI's ``{"error": {message, type, param, code}}``.

Stock OpenAI clients parse this body to build their exceptions, so every
path that can fail answers in it. This module is the one place errors
become HTTP: every :class:`townsquare.errors.TownsquareError` (the tree is
drawn in that module) carries its status, type, code, param and headers,
and :func:`install_error_handlers` answers with them; :class:`ApiError` is
the member of that tree that routes raise with a status of their own. Also
handled here: FastAPI's
validation errors (400, not FastAPI's usual 422), Starlette's 404 and 405
for unknown routes and methods, the body-size guard (413), the gate (401,
403, 429), the answer backend failing (502: it answered wrongly, or not in
OpenAI's format) or being down (503), and anything unexpected
(500, with the details left in the server log, not in the response).
``tests/test_service_errors.py`` pins each status.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from townsquare.errors import TownsquareError

log = logging.getLogger(__name__)

#: Default (type, code) per status, for errors raised without their own.
_DEFAULTS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    502: ("server_error", "upstream_error"),
    503: ("server_error", "service_unavailable"),
}


class ApiError(TownsquareError):
    """An error a route reports to its caller, with the status and headers it needs."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        default_type, default_code = _DEFAULTS.get(status, ("invalid_request_error", "error"))
        self.status = status
        self.message = message
        self.error_type = type or default_type
        self.code = code or default_code
        self.param = param
        self._headers = dict(headers or {})

    @property
    def type(self) -> str:
        return self.error_type

    def headers(self) -> dict[str, str]:
        return self._headers

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.code, self.param)

    def response(self) -> JSONResponse:
        return error_response(self)


def error_response(exc: TownsquareError) -> JSONResponse:
    """The HTTP response for any of townsquare's errors."""
    body = error_body(exc.public_message(), exc.error_type, exc.code, exc.param)
    return JSONResponse(body, status_code=exc.status, headers=exc.headers())


def error_body(
    message: str, type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


async def send_error(send: Send, error: TownsquareError) -> None:
    """Answer from a pure ASGI middleware (no request object there)."""
    response = error_response(error)
    await send(
        {"type": "http.response.start", "status": response.status_code,
         "headers": response.raw_headers}
    )
    await send({"type": "http.response.body", "body": response.body})


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    problems = []
    first_param: str | None = None
    for err in exc.errors()[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc)
        if first_param is None and where:
            first_param = where
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown parameter: townsquare does not implement it (see /openapi.json)"
        problems.append(f"{where}: {msg}" if where else msg)
    return "Invalid request: " + "; ".join(problems), first_param


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure the app can raise through the one shape."""

    async def townsquare_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TownsquareError)
        if exc.status >= 500 and not isinstance(exc, ApiError):
            log.warning("%s: %s", type(exc).__name__, exc)
        return error_response(exc)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if status == 404 and message == "Not Found":
            message = "Unknown URL; see /openapi.json for the routes this server offers"
        elif status == 405:
            message = "Method not allowed for this URL"
        return ApiError(status, message, headers=exc.headers).response()

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param = _validation_message(exc)
        return ApiError(400, message, code="invalid_value", param=param).response()

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return ApiError(500, "The server had an error while processing your request").response()

    app.add_exception_handler(TownsquareError, townsquare_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
