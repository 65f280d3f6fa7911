"""One error tree: every exception class townsquare defines descends from TownsquareError."""

from __future__ import annotations

import importlib
import pkgutil

import townsquare
from townsquare.errors import TownsquareError

#: Optional dependencies a module may need; such a module is skipped when they are absent.
OPTIONAL = ("torch", "sentence_transformers", "transformers", "nats", "redis", "psycopg")


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(townsquare.__path__, "townsquare."):
        if info.name.endswith("__main__"):
            continue  # runs the CLI
        try:
            module = importlib.import_module(info.name)
        except ImportError as exc:
            if exc.name and exc.name.split(".")[0] in OPTIONAL:
                continue
            raise
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, BaseException)
                    and value.__module__ == info.name):
                found[f"{info.name}.{value.__qualname__}"] = value
    return found


def test_every_exception_class_is_in_the_tree() -> None:
    classes = _exception_classes()
    assert "townsquare.llm.base.LLMUnavailable" in classes
    outside = sorted(name for name, cls in classes.items()
                     if not issubclass(cls, TownsquareError)
                     # a private sentinel (retry's _Done) never leaves its module
                     and not cls.__qualname__.startswith("_"))
    assert outside == []


def test_each_error_says_what_it_means_over_http() -> None:
    from townsquare.answer import ConversationNotFound, UnknownPersona
    from townsquare.llm import LLMError, LLMUnavailable
    from townsquare.registry import UnknownBackend

    assert (ConversationNotFound("x").status, ConversationNotFound("x").param) == (
        404, "conversation_id")
    assert isinstance(UnknownPersona("x"), ValueError)  # older ``except`` clauses still work
    assert isinstance(UnknownBackend("x"), KeyError) and UnknownBackend("x").status == 400
    assert (LLMError("x").status, LLMError("x").code) == (502, "upstream_error")
    down = LLMUnavailable("busy", retry_after=7.4)
    assert down.status == 503 and down.headers() == {"Retry-After": "7"}
    assert down.public_message() == "The answer backend is unavailable: busy"
