"""A tiny by-name registry, the one extension mechanism every backend uses.

Sources, stores, embedders and LLM backends each keep one ``Registry``;
built-ins register themselves at import time with ``@REGISTRY.register("name")``
and third parties do the same from an entry point group
(``townsquare.sources``, ``townsquare.stores``, ``townsquare.embedders``,
``townsquare.llms``). Adding a backend never touches the others.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from townsquare.errors import RequestError

T = TypeVar("T")


class UnknownBackend(RequestError, KeyError):
    """Raised for a name nobody registered; the message lists what exists."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> factory. ``builtins`` maps names to modules imported on demand."""

    def __init__(self, kind: str, group: str, builtins: dict[str, str]) -> None:
        self.kind = kind
        self.group = group
        self._builtins = dict(builtins)
        self._factories: dict[str, Callable[..., T]] = {}
        self._plugins_loaded = False

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self._factories[name] = factory
            return factory

        return deco

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(set(self._builtins) | set(self._factories))

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._factories and name in self._builtins:
            import_module(self._builtins[name])
        if name not in self._factories:
            self._load_plugins()
        try:
            return self._factories[name]
        except KeyError:
            raise UnknownBackend(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            ) from None

    def create(self, name: str, *args: object, **kwargs: object) -> T:
        return self.get(name)(*args, **kwargs)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            if ep.name not in self._factories:
                self._factories[ep.name] = ep.load()
