"""``GET /v1/models``: one model per persona, and how a ``model`` string is read.

``townsquare`` is the regular persona, ``townsquare-<persona>`` any other
(the built-in ``fun``, or one in ``<home>/personas``), and an optional
``:<backend>`` suffix picks another LLM backend than the configured one
(``townsquare-fun:openai``), among those the operator lists in ``models``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends

from townsquare.answer import Personas
from townsquare.service.deps import Services, get_principal, get_services
from townsquare.service.errors import ApiError
from townsquare.service.gate.auth import Principal
from townsquare.service.wire.openai_compat import model_object

router = APIRouter(prefix="/v1")

MODEL_PREFIX = "townsquare"


@lru_cache(maxsize=4)
def personas_in(user_dir: Path) -> Personas:
    """Built-in and user personas, read once per process (as the answer engine does)."""
    return Personas.load(user_dir)


def model_id(persona: str) -> str:
    return MODEL_PREFIX if persona == "regular" else f"{MODEL_PREFIX}-{persona}"


def parse_model(model: str) -> tuple[str, str | None]:
    """``townsquare-fun:openai`` -> (persona ``fun``, backend ``openai``)."""
    name, _, backend = model.strip().partition(":")
    name = name.lower()
    if name == MODEL_PREFIX:
        return "regular", backend or None
    if name.startswith(MODEL_PREFIX + "-") and len(name) > len(MODEL_PREFIX) + 1:
        return name[len(MODEL_PREFIX) + 1 :], backend or None
    raise model_not_found(model)


def offered_backends(configured: str, extra: list[str]) -> list[str]:
    """The LLM backends callers may name: the configured one, then the operator's list."""
    return list(dict.fromkeys([configured, *extra]))


def allowed_backend(
    backend: str | None, configured: str, extra: list[str], model: str
) -> str | None:
    """The ``:<backend>`` a request may use (None: the configured one, unnamed), or 404.

    Naming a backend loads it into the server (a model in memory, or calls to a
    paid upstream), so a caller may only pick among those the operator listed in
    ``models``; the configured ``llm`` is always offered.
    """
    if backend is None or backend == configured or backend in extra:
        return backend
    offered = ", ".join(f"townsquare:{b}" for b in offered_backends(configured, extra))
    raise model_not_found(model, f"this server offers the backends {offered}")


def model_not_found(model: str, detail: str = "") -> ApiError:
    return ApiError(
        404,
        f"The model {model!r} does not exist. Models are townsquare or townsquare-<mode> "
        f"(see /v1/models){': ' + detail if detail else ''}",
        code="model_not_found",
        param="model",
    )


@router.get("/models", summary="Models: one per persona (mode)")
async def list_models(
    _: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    settings = services.runtime.settings
    personas = personas_in(settings.personas_dir)
    created = int(services.started)
    backends = offered_backends(settings.llm, settings.models)
    data = []
    for name in personas.names():
        obj = model_object(model_id(name), created, personas.get(name).description)
        obj["persona"] = name
        obj["backend"] = settings.llm
        obj["backends"] = backends  # what `<model>:<backend>` may name
        data.append(obj)
    return {"object": "list", "data": data}


@router.get("/models/{model}", summary="One model")
async def get_model(
    model: str,
    _: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    persona, _backend = parse_model(model)
    personas = personas_in(services.runtime.settings.personas_dir)
    if persona not in personas:
        raise model_not_found(model)
    obj = model_object(model_id(persona), int(services.started),
                       personas.get(persona).description)
    obj["persona"] = persona
    obj["backend"] = services.runtime.settings.llm
    return obj
