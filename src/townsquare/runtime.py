"""The objects a running townsquare needs, built lazily from settings.

CLI commands and the server both go through :class:`Runtime`, so "which
store, which embedder, which LLM" is decided in one place. Everything is
created on first use: ``townsquare search`` never loads an LLM, and
``--help`` never opens a database.
"""

from __future__ import annotations

import logging
import threading
from functools import cached_property
from typing import TYPE_CHECKING

from townsquare.config import Settings
from townsquare.index import EMBEDDERS, Embedder
from townsquare.ingest import Ingestor, Limits
from townsquare.ingest.pipeline import Listener
from townsquare.retrieval import Retriever
from townsquare.store import Store, open_store
from townsquare.timeutil import parse_duration

if TYPE_CHECKING:
    from townsquare.llm import LLM

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings, read_only: bool = False) -> None:
        self.settings = settings
        self.read_only = read_only
        self._llms: dict[str, LLM] = {}
        self._llm_lock = threading.Lock()

    @cached_property
    def store(self) -> Store:
        return open_store(self.settings.store, self.settings.home, read_only=self.read_only)

    @cached_property
    def embedder(self) -> Embedder | None:
        """The configured embedder; for a home whose vectors another one made, that one.

        Vectors of two embedders are not comparable (and ``minilm-static`` and
        ``use-static`` have the same width, so nothing would notice). A home
        indexed before the default changed keeps the embedder it recorded,
        unless one was chosen explicitly (flag, env, config.toml): then the
        store refuses the mix, as it always did.
        """
        name = self.settings.embedder
        if name == "none":
            return None
        if "embedder" not in self.settings.model_fields_set:
            recorded = (self.store.embedder_name() or "").rpartition("/")[0]
            if recorded and recorded != name:
                log.warning(
                    "this home's vectors were made by the %s embedder: using it, not the "
                    "default %s (set embedder = %r to silence this, or start a fresh home "
                    "to use %s)", recorded, name, recorded, name)
                name = recorded
        embedder = EMBEDDERS.create(name, cache_dir=self.settings.cache_dir)
        holds = self.store.embedder_name()
        if holds and holds != f"{embedder.name}/{embedder.dim}":
            raise ValueError(
                f"this store holds vectors from embedder {holds!r}, not "
                f"{embedder.name}/{embedder.dim}; use the same --embedder or a fresh store"
            )
        return embedder

    @cached_property
    def limits(self) -> Limits:
        """The ingest bounds every source's posts meet (time, size, types)."""
        return Limits.from_settings(self.settings)

    def ingestor(self, listeners: list[Listener] | None = None) -> Ingestor:
        """The ingest pipeline into this runtime's store, with its embedder and limits."""
        return Ingestor(self.store, self.embedder, listeners, self.limits)

    @cached_property
    def retriever(self) -> Retriever:
        return Retriever(
            self.store, self.embedder, half_life=parse_duration(self.settings.half_life)
        )

    def llm(self, name: str | None = None) -> LLM:
        """The LLM backend by name (default: settings.llm), created once per runtime."""
        from townsquare.llm import LLMS

        key = name or self.settings.llm
        with self._llm_lock:
            if key not in self._llms:
                llm = LLMS.create(key, self.settings)
                if key == "openai":
                    from townsquare.llm.limiter import ConcurrencyLimitedLLM

                    llm = ConcurrencyLimitedLLM(llm, self.settings.llm_max_concurrency)
                self._llms[key] = llm
            return self._llms[key]

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
