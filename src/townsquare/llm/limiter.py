"""A concurrency limit in front of any LLM backend.

An external server (vLLM, a hosted API) has a throughput ceiling; sending it
more concurrent streams than it can serve only makes every answer slow. The
limiter admits at most ``max_concurrent`` generations at once and lets a new
one wait ``queue_timeout_s`` for a slot; past that it raises
:class:`~townsquare.llm.base.LLMUnavailable` with a ``retry_after`` hint, which
the service turns into a 503 with ``Retry-After`` (or, where the engine
degrades, a search-only answer). The slot is held until the stream is fully
consumed or abandoned.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from townsquare.llm.base import (
    LLM,
    ChatMessage,
    Generation,
    GenerationOptions,
    LLMUnavailable,
    WrappedLLM,
)


class _LimitedGeneration(Generation):
    def __init__(self, limiter: ConcurrencyLimitedLLM, inner: Generation) -> None:
        self._limiter = limiter
        self._inner = inner
        self.usage = inner.usage

    async def __aiter__(self) -> AsyncIterator[str]:
        await self._limiter.acquire()
        try:
            async for piece in self._inner:
                yield piece
        finally:
            self.usage = self._inner.usage
            self._limiter.release()


class ConcurrencyLimitedLLM(WrappedLLM):
    """Wraps ``inner``; same name, model and context (read through), bounded concurrency."""

    def __init__(self, inner: LLM, max_concurrent: int, queue_timeout_s: float = 2.0) -> None:
        super().__init__(inner)
        self.max_concurrent = max(1, max_concurrent)
        self.queue_timeout_s = queue_timeout_s
        self._sem = asyncio.Semaphore(self.max_concurrent)
        self.in_flight = 0
        self.rejected = 0

    async def acquire(self) -> None:
        try:
            await asyncio.wait_for(self._sem.acquire(), self.queue_timeout_s)
        except TimeoutError:
            self.rejected += 1
            raise LLMUnavailable(
                f"the LLM backend is saturated ({self.max_concurrent} generations in flight)",
                retry_after=max(1.0, self.queue_timeout_s),
            ) from None
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._sem.release()

    def generate(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> Generation:
        return _LimitedGeneration(self, self.inner.generate(messages, options))
