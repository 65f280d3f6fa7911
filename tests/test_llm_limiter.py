"""The concurrency limit in front of an LLM: saturation becomes LLMUnavailable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from townsquare.llm.base import (
    LLM,
    ChatMessage,
    Generation,
    GenerationOptions,
    LLMUnavailable,
    Usage,
)
from townsquare.llm.limiter import ConcurrencyLimitedLLM


class _Gate(Generation):
    def __init__(self, gate: asyncio.Event) -> None:
        self.gate = gate
        self.usage = Usage()

    async def __aiter__(self) -> AsyncIterator[str]:
        yield "a"
        await self.gate.wait()
        yield "b"


class _Slow(LLM):
    name = "slow"
    model_id = "slow-1"

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    def generate(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> Generation:
        return _Gate(self.gate)


async def test_saturated_backend_raises_unavailable_with_retry_after() -> None:
    inner = _Slow()
    llm = ConcurrencyLimitedLLM(inner, max_concurrent=2, queue_timeout_s=0.05)
    msgs = [ChatMessage("user", "hi")]
    running = [llm.generate(msgs).__aiter__() for _ in range(2)]
    assert [await g.__anext__() for g in running] == ["a", "a"]
    assert llm.in_flight == 2
    with pytest.raises(LLMUnavailable) as err:
        await llm.generate(msgs).text()
    assert err.value.retry_after >= 1.0 and llm.rejected == 1
    inner.gate.set()
    for g in running:
        assert [p async for p in g] == ["b"]
    assert llm.in_flight == 0
    assert await llm.generate(msgs).text() == "ab"  # slots were released
