"""Field types shared by the request models, and the refusal of unimplemented ones."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, ConfigDict


def _encodable(value: str) -> str:
    """Reject text that is not valid Unicode (JSON allows lone surrogates; SQLite does not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogate escapes)") from None
    return value


#: A string that can be stored and searched: valid UTF-8 once encoded.
Text = Annotated[str, AfterValidator(_encodable)]


def neutral(*allowed: Any, why: str) -> AfterValidator:
    """Accept only the values of a parameter that change nothing; refuse the rest.

    For parameters of a wire format we follow (OpenAI's, xAI's) that townsquare
    does not implement: stock clients often send their defaults
    (``presence_penalty: 0``), which are honoured by doing nothing, while any
    other value is a request we would silently ignore, so it is refused (a 400
    naming the field, saying ``why``).
    """

    def check(value: Any) -> Any:
        if any(_same(value, ok) for ok in allowed):
            return value
        shown = " or ".join(json.dumps(ok) for ok in allowed if ok is not None) or "null"
        raise ValueError(f"not supported ({why}); send {shown} or leave it out")

    return AfterValidator(check)


def _same(a: Any, b: Any) -> bool:
    """Equal, with booleans never equal to numbers (``0`` is not ``false``)."""
    if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def refuse_unknown_query(request: Request) -> None:
    """A query parameter no route declares is refused (FastAPI would drop it silently).

    Installed as an app-wide dependency: ``GET /v1/trends?windw=5m`` is a 400
    naming ``windw``, not the 1 h default served as if it were asked for.
    """
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    allowed = _query_names(route.dependant)
    for name in request.query_params:
        if name not in allowed:
            from townsquare.service.errors import ApiError

            known = ", ".join(sorted(allowed)) or "none"
            raise ApiError(400, f"Unknown query parameter {name!r} (this route takes: {known})",
                           code="unknown_parameter", param=name)


def _query_names(dependant: Any) -> set[str]:
    """The query parameters a route and its dependencies declare."""
    names: set[str] = set()
    todo = [dependant]
    while todo:
        current = todo.pop()
        names.update(p.alias for p in current.query_params)
        todo.extend(current.dependencies)
    return names


class Strict(BaseModel):
    """A request object: unknown fields are refused, never dropped."""

    model_config = ConfigDict(extra="forbid")
