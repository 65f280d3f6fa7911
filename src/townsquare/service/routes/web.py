"""The web page: ``GET /`` and its three static files, under a strict CSP.

The page is static (plain HTML, CSS and JS shipped in ``static/``, no build
step); it talks to the same ``/v1`` API as any client, with the key the
operator opened it with, so these routes need no key themselves. Only the
files listed in :data:`STATIC_FILES` are served: a request can never name a
path outside the package.

Every response carries a Content-Security-Policy that allows only this
origin's script, style and API calls, and images only from this origin or
``data:``. The page builds post text with ``textContent``; the policy is the
second wall, so even a bug there could not load a remote image or run an
inline script.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.exceptions import HTTPException

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The files change with the installed version: revalidate, never serve stale.
    "Cache-Control": "no-cache",
}

STATIC_FILES: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
INDEX_TYPE = "text/html; charset=utf-8"


STATIC_DIR = Path(__file__).parent.parent / "static"


def _read(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


def mount_web(app: FastAPI) -> None:
    """Add ``GET /`` (the page) and ``GET /static/{name}`` to ``app``.

    The files are read once, here: they are part of the installed package
    and do not change while the server runs.
    """
    index = _read("index.html")
    files = {name: _read(name) for name in STATIC_FILES}

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def web_index() -> Response:
        return Response(index, media_type=INDEX_TYPE, headers=SECURITY_HEADERS)

    @app.api_route("/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def web_static(name: str) -> Response:
        body = files.get(name)
        if body is None:
            raise HTTPException(404, "No such static file")
        return Response(body, media_type=STATIC_FILES[name], headers=SECURITY_HEADERS)
