"""The LLM interface: messages in, a stream of text chunks out, usage at the end.

Modelled on simonw/llm: one method per backend, a lazy response object that
is iterated for text and asked for usage afterwards. Backends are async
because the service streams tokens to many clients at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from townsquare.errors import BackendError

Role = Literal["system", "user", "assistant"]


@dataclass(slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class GenerationOptions:
    max_tokens: int = 256
    temperature: float = 0.3
    top_p: float = 0.9
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


class LLMError(BackendError):
    """The backend failed (after its own retries)."""

    prefix = "The answer backend failed: "


class LLMUnavailable(LLMError):
    """The backend is down or saturated: callers degrade to a search-only answer.

    ``retry_after`` (seconds) is passed on to HTTP clients as ``Retry-After``.
    """

    status = 503
    code = "service_unavailable"
    prefix = "The answer backend is unavailable: "

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class Generation(ABC):
    """One streaming completion. Iterate for text; ``usage`` is final after iteration."""

    usage: Usage

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[str]: ...

    async def text(self) -> str:
        return "".join([piece async for piece in self])


class LLM(ABC):
    """A chat model. ``model_id`` names the weights for the ``model`` field of answers."""

    name: str
    model_id: str
    #: How many prompt tokens the model can take (prompt budget is derived from it).
    context_tokens: int = 4096
    #: The bundled 135M model: too small to write reliable prose, so ``answer_style =
    #: "auto"`` composes its answers from the posts.
    bundled: bool = False

    @abstractmethod
    def generate(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> Generation:
        """Start a completion; nothing runs until the result is iterated."""

    def count_tokens(self, text: str) -> int:
        """Token count for budgeting; backends with a tokenizer override this."""
        return max(1, len(text) // 4)

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load weights now (in-process models), so the first question does not wait."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources (HTTP clients, model memory)."""


class WrappedLLM(LLM):
    """An LLM in front of another (a limit, a meter): its identity is read through.

    ``name``, ``model_id``, ``context_tokens`` and ``bundled`` are the inner backend's at
    every read, not copies: the OpenAI backend learns its real model name
    from the server on first use, and answers must say that name, not the
    ``default`` it started with.
    """

    def __init__(self, inner: LLM) -> None:
        self.inner = inner

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def model_id(self) -> str:  # type: ignore[override]
        return self.inner.model_id

    @property
    def context_tokens(self) -> int:  # type: ignore[override]
        return self.inner.context_tokens

    @property
    def bundled(self) -> bool:  # type: ignore[override]
        return self.inner.bundled

    def load(self) -> None:
        self.inner.load()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def aclose(self) -> None:
        await self.inner.aclose()

