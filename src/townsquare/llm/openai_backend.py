"""``openai``: any OpenAI-compatible chat server through the official SDK.

vLLM, llama.cpp's server (or llama-cpp-python's ``python -m llama_cpp.server``),
Ollama, xAI, Mistral and OpenAI itself all speak ``POST /v1/chat/completions``
with server-sent events, so one backend covers them. Configuration:

    openai_base_url   TOWNSQUARE_OPENAI_BASE_URL  (else OPENAI_BASE_URL)
    openai_api_key    TOWNSQUARE_OPENAI_API_KEY   (else OPENAI_API_KEY)
    openai_model      TOWNSQUARE_OPENAI_MODEL     ("default": the server's first model)
    llm_timeout_s     per-request timeout (connect, and the gap between chunks)

A request that fails with 429, a 5xx, a timeout or a refused connection is
retried under :mod:`townsquare.retry`'s policy (exponential backoff, equal
jitter), honouring ``Retry-After`` up to :data:`MAX_RETRY_AFTER_S`, but only
*before* the first token; once text has streamed to a client a retry would
repeat it. The SDK's own retries stay off (``max_retries=0`` there) on
purpose: a chat waiting on this backend must degrade within seconds, and the
SDK honours a server's ``Retry-After`` of up to two minutes per retry (60 s in
1.x, then it retries sooner than asked) where this backend gives up at once
and passes the wait on to the HTTP client; its base delay cannot be set
either. When retries run out the caller gets
:class:`~townsquare.llm.base.LLMUnavailable` (carrying ``retry_after``) and
degrades to a search-only answer; other failures (bad key, unknown model, a
reply that is not an OpenAI stream: a proxy's HTML page) are
:class:`~townsquare.llm.base.LLMError` with a message saying what to fix, which
the service answers as a 502.

Usage comes from the server when it reports it (``stream_options.include_usage``);
servers that ignore the option get an estimate from the prompt length.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai

from townsquare.config import Settings
from townsquare.llm import LLMS
from townsquare.llm.base import (
    LLM,
    ChatMessage,
    Generation,
    GenerationOptions,
    LLMError,
    LLMUnavailable,
    Usage,
)
from townsquare.retry import Backoff, Retry, parse_retry_after

#: Statuses worth retrying: rate limited, or the server (or a proxy) failed.
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
#: A server asking us to wait longer than this is treated as unavailable now.
MAX_RETRY_AFTER_S = 20.0


class OpenAIGeneration(Generation):
    def __init__(
        self, backend: OpenAIBackend, messages: Sequence[ChatMessage], options: GenerationOptions
    ) -> None:
        self.usage = Usage()
        self._backend = backend
        self._messages = list(messages)
        self._options = options

    async def __aiter__(self) -> AsyncIterator[str]:
        backend = self._backend
        stream = await backend.open_stream(self._messages, self._options)
        pieces: list[str] = []
        reported = False
        try:
            async for chunk in stream:
                if getattr(chunk, "usage", None):
                    self.usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                    reported = True
                for choice in chunk.choices:
                    text = choice.delta.content if choice.delta else None
                    if text:
                        pieces.append(text)
                        yield text
        except openai.APIError as exc:
            raise LLMError(f"{backend.base_url}: stream broke off: {exc}") from exc
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # Not JSON, or JSON of another shape (a proxy's HTML page, a captive portal).
            raise LLMError(
                f"{backend.base_url}: the server's reply is not an OpenAI chat stream "
                f"({type(exc).__name__})"
            ) from exc
        finally:
            await stream.close()
        if not reported:
            self.usage = Usage(
                sum(backend.count_tokens(m.content) + 4 for m in self._messages),
                backend.count_tokens("".join(pieces)) if pieces else 0,
            )


class OpenAIBackend(LLM):
    """A client of one OpenAI-compatible server."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str = "not-needed",
        model: str = "default",
        timeout_s: float = 60.0,
        context_tokens: int = 4096,
        max_retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model_id = model
        self.timeout_s = timeout_s
        self.context_tokens = context_tokens
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.retry = Retry(max_retries + 1, Backoff(backoff_s, cap=8.0, jitter="equal"))
        self._usage_option = True
        # One SDK client per event loop: its connection pool belongs to the loop.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI]
        self._clients = weakref.WeakKeyDictionary()

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIBackend:
        explicit = settings.model_fields_set
        base_url = settings.openai_base_url
        if "openai_base_url" not in explicit and os.environ.get("OPENAI_BASE_URL"):
            base_url = os.environ["OPENAI_BASE_URL"]
        api_key = settings.openai_api_key
        if "openai_api_key" not in explicit and os.environ.get("OPENAI_API_KEY"):
            api_key = os.environ["OPENAI_API_KEY"]
        return cls(
            base_url,
            api_key=api_key,
            model=settings.openai_model,
            timeout_s=settings.llm_timeout_s,
            context_tokens=settings.llm_context,
        )

    def client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = openai.AsyncOpenAI(
                api_key=self.api_key,
                base_url=self.base_url,
                timeout=self.timeout_s,
                max_retries=0,
            )
            self._clients[loop] = client
        return client

    def generate(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> Generation:
        return OpenAIGeneration(self, messages, options or GenerationOptions())

    async def resolve_model(self) -> str:
        """``default`` means whatever the server serves first (llama.cpp, vLLM, Ollama)."""
        if self.model_id != "default":
            return self.model_id
        try:
            page = await self.client().models.list()
            models = [str(m.id) for m in page.data]
        except (openai.APIError, ValueError, TypeError, AttributeError):
            return self.model_id  # the chat request will say what is wrong
        if models:
            self.model_id = models[0]
        return self.model_id

    async def open_stream(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> Any:
        """Start a streaming completion, retrying transient failures with backoff."""
        model = await self.resolve_model()
        tries = self.retry.atries()
        async for attempt in tries:
            try:
                return await self._create(model, messages, options)
            except (ValueError, TypeError) as exc:  # a reply the SDK cannot read
                raise LLMError(
                    f"{self.base_url}: the server's reply is not an OpenAI chat stream "
                    f"({type(exc).__name__})"
                ) from exc
            except openai.APIStatusError as exc:
                if exc.status_code not in RETRY_STATUSES:
                    raise self._fatal(exc) from exc
                wait = _retry_after(exc)
                if not tries.more() or (wait or 0) > MAX_RETRY_AFTER_S:
                    raise LLMUnavailable(
                        f"{self.base_url} answered {exc.status_code} after {attempt + 1} tries",
                        retry_after=wait or self.retry.backoff.delay(attempt),
                    ) from exc
                if wait is not None:
                    tries.set_wait(wait)
            except (openai.APIConnectionError, openai.APITimeoutError) as exc:
                if not tries.more():
                    raise LLMUnavailable(
                        f"{self.base_url} unreachable after {attempt + 1} tries: {exc}",
                        retry_after=self.retry.backoff.delay(attempt),
                    ) from exc
        raise AssertionError("unreachable: a Retry always allows one try")

    async def _create(
        self, model: str, messages: Sequence[ChatMessage], options: GenerationOptions
    ) -> Any:
        """One request; an older server that rejects ``stream_options`` is asked again without."""
        while True:
            kwargs: dict[str, Any] = {
                "model": model,
                "messages": [{"role": m.role, "content": m.content} for m in messages],
                "stream": True,
                "max_tokens": options.max_tokens,
                "temperature": options.temperature,
                "top_p": options.top_p,
            }
            if options.stop:
                kwargs["stop"] = options.stop
            if options.seed is not None:
                kwargs["seed"] = options.seed
            if self._usage_option:
                kwargs["stream_options"] = {"include_usage": True}
            try:
                return await self.client().chat.completions.create(**kwargs)
            except openai.APIStatusError as exc:
                if exc.status_code in (400, 422) and self._usage_option and _mentions_option(exc):
                    self._usage_option = False  # an older server: ask without it
                    continue
                raise

    def _fatal(self, exc: openai.APIStatusError) -> LLMError:
        if exc.status_code in (401, 403):
            return LLMError(
                f"{self.base_url} refused the API key ({exc.status_code}): set openai_api_key "
                "in config.toml or TOWNSQUARE_OPENAI_API_KEY"
            )
        if exc.status_code == 404:
            return LLMError(
                f"{self.base_url}: model {self.model_id!r} or endpoint not found (404): check "
                "openai_model / TOWNSQUARE_OPENAI_MODEL and that the base URL ends in /v1"
            )
        return LLMError(f"{self.base_url} answered {exc.status_code}: {exc.message}")

    async def aclose(self) -> None:
        clients = list(self._clients.items())
        self._clients.clear()
        for loop, client in clients:
            if loop is asyncio.get_running_loop():
                await client.close()


def _retry_after(exc: openai.APIStatusError) -> float | None:
    return parse_retry_after(
        exc.response.headers.get("retry-after") if exc.response is not None else None
    )


def _mentions_option(exc: openai.APIStatusError) -> bool:
    return "stream_options" in str(exc.message) or "include_usage" in str(exc.message)


@LLMS.register("openai")
def create(settings: Settings) -> OpenAIBackend:
    return OpenAIBackend.from_settings(settings)
