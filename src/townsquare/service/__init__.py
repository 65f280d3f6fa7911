"""The HTTP service (OpenAI-compatible API, search, live status, web page); see ``app``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(*args: Any, **kwargs: Any) -> FastAPI:
    """:func:`townsquare.service.app.create_app`, imported on first use."""
    from townsquare.service.app import create_app as factory

    return factory(*args, **kwargs)


__all__ = ["create_app"]
