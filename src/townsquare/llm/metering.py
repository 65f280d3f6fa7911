"""What a chat request has cost so far, whatever its client does.

A completion's tokens used to be known only when the answer engine handed
over its final answer; a client that hung up after the first token was
billed nothing for the prompt the model had read and one token for what it
had written. So the answer engine the composition root builds
(:meth:`townsquare.runtime.Runtime.new_engine`) talks to its LLMs through
:class:`MeteredLLM`: each generation it starts counts the prompt when the
model starts on it and each piece of text as the model writes it, into the
:class:`RequestMeter` of the request that asked (found through a context
variable set by the chat route; generations started outside a request, the
story summaries and the CLI, are not metered). The route bills the meter's figures
when a request ends without an answer (disconnect, error), and the
backend's own usage when it ends with one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from townsquare.llm.base import (
    LLM,
    ChatMessage,
    Generation,
    GenerationOptions,
    LLMUnavailable,
    WrappedLLM,
)


@dataclass(slots=True)
class RequestMeter:
    """Tokens one request has consumed so far (prompt read, completion written)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


current_meter: ContextVar[RequestMeter | None] = ContextVar("townsquare_meter", default=None)


class _MeteredGeneration(Generation):
    def __init__(self, llm: LLM, inner: Generation, messages: Sequence[ChatMessage],
                 meter: RequestMeter | None) -> None:
        self._llm = llm
        self._inner = inner
        self._messages = list(messages)
        self._meter = meter
        self.usage = inner.usage

    def _prompt_estimate(self) -> int:
        return sum(self._llm.count_tokens(m.content) + 4 for m in self._messages)

    async def __aiter__(self) -> AsyncIterator[str]:
        meter = self._meter
        prompt = 0
        if meter is not None:
            prompt = self._prompt_estimate()
            meter.prompt_tokens += prompt  # the model reads it before the first token
        pieces = 0
        try:
            async for piece in self._inner:
                pieces += 1
                if meter is not None:
                    meter.completion_tokens += 1
                yield piece
        except LLMUnavailable:
            if meter is not None and not pieces:  # never reached the model: no charge
                meter.prompt_tokens -= prompt
            raise
        finally:
            self.usage = self._inner.usage
            if meter is not None and self.usage.prompt_tokens:
                # The backend's own figures, once it reports them, replace the estimate.
                meter.prompt_tokens += self.usage.prompt_tokens - prompt
                meter.completion_tokens += max(0, self.usage.completion_tokens - pieces)


class MeteredLLM(WrappedLLM):
    """``inner`` with every generation counted into the calling request's meter."""

    def generate(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> Generation:
        # Read here, in the request's context: the generation may be iterated elsewhere.
        return _MeteredGeneration(self, self.inner.generate(messages, options), messages,
                                  current_meter.get())
