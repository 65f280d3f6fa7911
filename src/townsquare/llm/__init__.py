"""LLM backends, registered by name: ``local`` (default), ``openai``, ``fake``."""

from __future__ import annotations

from townsquare.llm.base import (
    LLM,
    ChatMessage,
    Generation,
    GenerationOptions,
    LLMError,
    LLMUnavailable,
    Usage,
)
from townsquare.registry import Registry

LLMS: Registry[LLM] = Registry(
    "LLM backend",
    "townsquare.llms",
    {
        "local": "townsquare.llm.local",
        "openai": "townsquare.llm.openai_backend",
        "fake": "townsquare.llm.fake",
    },
)

__all__ = [
    "LLM",
    "LLMS",
    "ChatMessage",
    "Generation",
    "GenerationOptions",
    "LLMError",
    "LLMUnavailable",
    "Usage",
]
