"""The HTTP service (OpenAI-compatible API, search, live status, web page); see ``app``.

HTTP only: ``routes/``, the request ``gate/``, ``wire/`` formats and ``errors``.
The system it serves is built by the composition root (:mod:`townsquare.runtime`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(*args: Any, **kwargs: Any) -> FastAPI:
    """:func:`townsquare.service.app.create_app`, imported on first use."""
    from townsquare.service.app import create_app as factory

    return factory(*args, **kwargs)


__all__ = ["create_app"]
