"""``POST /v1/chat/completions``: OpenAI's chat, answered from live posts.

The route translates between OpenAI's wire format and
:class:`townsquare.answer.AnswerEngine`; the engine does the work (policy,
retrieval, prompt, generation, citations, conversations).

- ``model`` names a persona and optionally an LLM backend (see
  :mod:`townsquare.service.models`): ``townsquare``, ``townsquare-fun``,
  ``townsquare-fun:openai``.
- The question is the last ``user`` message. With ``conversation_id`` the
  stored conversation is the history (the other messages are ignored);
  without it, earlier ``user``/``assistant`` messages seed a new
  conversation, so stateless OpenAI clients get follow-ups right. System
  messages are ignored: the persona and the engine's rules make the system
  prompt, and a caller cannot replace them.
- Every answer is kept as a conversation of the calling key (its id comes
  back as ``conversation_id``) unless the request says ``"store": false``.
- Citations come back in ``citations`` (in the final chunk when streaming),
  with ``usage``, ``conversation_id``, ``as_of`` and ``degraded`` (true for a
  search-only answer given while the LLM is unavailable).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sse_starlette import ServerSentEvent

from townsquare.answer import (
    Answer,
    AnswerEngine,
    AnswerRequest,
    ConversationNotFound,
    Delta,
    Final,
    UnknownModel,
    UnknownPersona,
)
from townsquare.answer.engine import AnswerEvent
from townsquare.answer.personas import Personas
from townsquare.answer.policy import Policy
from townsquare.answer.verify import Verification
from townsquare.llm import LLMError, LLMUnavailable
from townsquare.model import Post, iso
from townsquare.service.auth import Principal
from townsquare.service.deps import Services, get_principal, get_services
from townsquare.service.errors import ApiError
from townsquare.service.metering import MeteredLLM, RequestMeter, current_meter
from townsquare.service.models import (
    allowed_backend,
    model_id,
    model_not_found,
    parse_model,
    personas_in,
)
from townsquare.service.openai_compat import (
    DONE,
    ChatCompletionRequest,
    ChunkWriter,
    MarkerStripper,
    chat_completion,
    completion_id,
    event_stream,
    now_s,
    strip_markers,
    usage_dict,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1")

_engine_lock = threading.Lock()
#: Tokens of context a prompt needs besides the completion (rules, question, a few posts).
MIN_PROMPT_TOKENS = 512


# --- chat completions --------------------------------------------------------------


def _build_engine(services: Services) -> AnswerEngine:
    with _engine_lock:
        if services.engine is None:
            # AnswerEngine.from_runtime's parts, with every LLM metered per request.
            runtime = services.runtime
            services.engine = AnswerEngine(
                runtime.retriever,
                MeteredLLM(runtime.llm()),
                runtime.store,
                Personas.load(runtime.settings.personas_dir),
                Policy(),
                llms=lambda name: MeteredLLM(runtime.llm(name)),
            )
    engine: AnswerEngine = services.engine
    return engine


async def engine_of(services: Services) -> AnswerEngine:
    """The answer engine, built once (building may load an LLM: off the loop)."""
    if services.engine is not None:
        engine: AnswerEngine = services.engine
    else:
        engine = await asyncio.to_thread(_build_engine, services)
    if getattr(engine, "trending", False) is None:  # a test's stand-in may have none
        engine.trending = lambda: trend_samples(services)
    return engine


def trend_samples(services: Services, limit: int = 5) -> list[Post]:
    """One sample post of each of the top trends of the last hour (none while warming up).

    Read back from the store (blocking: call it in a thread), so a post deleted
    since the trend engine counted it is never cited.
    """
    trends = services.trends
    if trends is None:
        return []
    out = []
    for trend in trends.trends("1h", limit):
        for pid in trend.sample_ids[:1]:
            post = services.runtime.store.get_post(pid)
            if post is not None:
                out.append(post)
    return out


def _question_and_history(
    body: ChatCompletionRequest, max_chars: int
) -> tuple[str, list[tuple[str, str]]]:
    for i, message in enumerate(body.messages):
        length = len(message.text())
        if length > max_chars:
            # Before any regex sees it: policy and query understanding cost ~2 s of CPU per MB.
            raise ApiError(
                400, f"messages[{i}].content is {length:,} characters; the limit is "
                f"{max_chars:,} (max_message_chars)",
                code="string_above_max_length", param=f"messages[{i}].content",
            )
    turns = [(m.role, m.text()) for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1][0] != "user":
        raise ApiError(400, "The last message must be a user message with the question",
                       code="invalid_value", param="messages")
    question = turns[-1][1]
    if not question.strip():
        raise ApiError(400, "The question (the last user message) is empty",
                       code="invalid_value", param="messages")
    return question, [t for t in turns[:-1] if t[1].strip()]


async def _answer_request(
    body: ChatCompletionRequest, who: Principal, services: Services
) -> AnswerRequest:
    settings = services.runtime.settings
    persona, backend = parse_model(body.model)
    backend = allowed_backend(backend, settings.llm, settings.models, body.model)
    question, history = _question_and_history(body, settings.max_message_chars)
    params = body.search_parameters
    try:
        filters = body.filters()
    except ValueError as exc:
        param = str(exc).partition(":")[0].partition(".")[0] or "search_parameters"
        raise ApiError(400, str(exc), code="invalid_value", param=param) from None
    persist = body.store is not False
    conversation_id = body.conversation_id
    if conversation_id is None and history and persist:
        conversation_id = await asyncio.to_thread(
            _seed_conversation, services, who.owner, persona, history
        )
    request = AnswerRequest(
        question=question,
        conversation_id=conversation_id,
        owner=who.owner,
        mode=persona,
        search=body.search_mode(),
        model=backend,
        persist=persist,
        top_p=body.top_p,
        stop=body.stops(),
        seed=body.seed,
        sort=params.sort if params is not None else "relevance",
    )
    if filters is not None:
        request.filters = filters
    if params is not None and params.max_search_results:
        request.max_search_results = params.max_search_results
    if body.token_limit():
        request.max_tokens = int(body.token_limit() or request.max_tokens)
    if body.temperature is not None:
        request.temperature = body.temperature
    return request


def _check_context(engine: AnswerEngine, request: AnswerRequest,
                   body: ChatCompletionRequest) -> None:
    """``max_tokens`` must leave room for a prompt in the model's context."""
    limit = body.token_limit()
    if not limit:
        return
    try:
        context = int(engine.llm_for(request.model).context_tokens)
    except Exception:  # an unknown model: the engine says so in its own words
        return
    room = context - MIN_PROMPT_TOKENS
    if limit > room:
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise ApiError(
            400, f"{param} is {limit:,} but the model's context holds {context:,} tokens, "
            f"and the prompt (rules, question, posts) needs at least {MIN_PROMPT_TOKENS:,} "
            f"of them: ask for at most {max(1, room):,}",
            code="invalid_value", param=param,
        )


def _seed_conversation(
    services: Services, owner: str, persona: str, history: list[tuple[str, str]]
) -> str:
    """A new conversation holding the history a stateless client sent."""
    store = services.runtime.store
    personas = personas_in(services.runtime.settings.personas_dir)
    if persona not in personas:
        raise model_not_found(model_id(persona))
    conv = store.create_conversation(owner, persona)
    for role, content in history[-40:]:
        store.add_message(conv.id, role, content, {"from_request": True})
    return conv.id


def _request_error(exc: Exception, model: str) -> ApiError:
    if isinstance(exc, ConversationNotFound):
        return ApiError(404, "No such conversation for this key", code="conversation_not_found",
                        param="conversation_id")
    if isinstance(exc, UnknownPersona | UnknownModel):
        return model_not_found(model, str(exc))
    if isinstance(exc, LLMUnavailable):
        retry = exc.retry_after
        return ApiError(503, f"The answer backend is unavailable: {exc}",
                        headers={"Retry-After": str(max(1, round(retry)))})
    if isinstance(exc, LLMError):  # the upstream answered, wrongly: a bad gateway
        return ApiError(502, f"The answer backend failed: {exc}", type="server_error",
                        code="upstream_error")
    if isinstance(exc, ValueError):
        return ApiError(400, str(exc), code="invalid_value", param="messages")
    raise exc


def _citations(services: Services, answer: Answer) -> list[dict[str, Any]]:
    """The contract's citation shape: the engine's, plus author_name and source."""
    out = []
    for c in answer.citations:
        item = c.to_dict()
        if "author_name" not in item or "source" not in item:
            post = services.runtime.store.get_post(c.id)
            item.setdefault("author_name", post.author_name if post else None)
            item.setdefault("source", post.source if post else c.id.partition(":")[0])
        out.append(item)
    return out


def search_results(citations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Perplexity's ``search_results``: the posts the answer was written from."""
    return [
        {
            "title": f"@{c['author']}" + (f" ({c['author_name']})" if c.get("author_name")
                                          else ""),
            "url": c.get("url"),
            "date": str(c.get("created_at") or "")[:10] or None,
            "last_updated": c.get("created_at"),
            "snippet": c.get("text"),
            "id": c.get("id"),
            "source": c.get("source"),
        }
        for c in citations
    ]


async def _extras(
    services: Services, answer: Answer, body: ChatCompletionRequest
) -> dict[str, Any]:
    return_citations = body.wants_citations()
    citations = await asyncio.to_thread(_citations, services, answer) if return_citations else []
    extra: dict[str, Any] = {
        "citations": citations,
        "search_results": search_results(citations),
        "conversation_id": answer.conversation_id,
        "as_of": iso(answer.as_of),
        "mode": answer.mode,
        "degraded": answer.degraded,
        "verification": (answer.verification or Verification()).to_dict(),
        "language": answer.language,
    }
    if answer.degraded:
        extra["retry_after"] = answer.retry_after
    if answer.declined:
        extra["declined"] = answer.declined
    return extra


def _finish_reason(answer: Answer, request: AnswerRequest) -> str:
    return "length" if answer.usage.completion_tokens >= request.max_tokens else "stop"


@router.post("/chat/completions", summary="OpenAI chat completions, answered from live posts")
async def chat_completions(
    body: ChatCompletionRequest,
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> Any:
    request = await _answer_request(body, who, services)
    engine = await engine_of(services)
    _check_context(engine, request, body)
    model = model_id(request.mode or "regular") + (f":{request.model}" if request.model else "")
    meter = RequestMeter()
    current_meter.set(meter)  # the engine's LLM counts into it as it reads and writes
    events = engine.stream(request)
    try:
        first = await anext(events)  # errors before any text become HTTP errors
    except StopAsyncIteration:  # pragma: no cover - the engine always ends with Final
        raise ApiError(500, "The answer engine returned nothing") from None
    except BaseException as exc:
        _bill_unfinished(services, who, model, meter, 0)
        if isinstance(exc, LLMUnavailable) or not isinstance(exc, Exception):
            raise
        raise _request_error(exc, body.model) from exc
    cid, created = completion_id(), now_s()
    if body.stream:
        return event_stream(
            _stream(services, who, body, request, model, events, first, cid, created, meter))
    try:
        answer = await _collect(events, first)
    except BaseException:  # failed, or cancelled with its client: bill what was used
        _bill_unfinished(services, who, model, meter, 0)
        raise
    _meter(services, who, model, answer)
    extra = await _extras(services, answer, body)
    usage = usage_dict(answer.usage.prompt_tokens, answer.usage.completion_tokens)
    text = answer.answer if body.wants_citations() else strip_markers(answer.answer)
    return JSONResponse(
        chat_completion(cid, created, model, text, _finish_reason(answer, request),
                        usage, extra)
    )


async def _collect(events: AsyncIterator[AnswerEvent], first: AnswerEvent) -> Answer:
    if isinstance(first, Final):
        return first.answer
    try:
        async for event in events:
            if isinstance(event, Final):
                return event.answer
    except LLMUnavailable:
        raise
    except LLMError as exc:
        raise _request_error(exc, "") from exc
    raise ApiError(500, "The answer engine ended without an answer")


def _meter(services: Services, who: Principal, model: str, answer: Answer) -> None:
    services.meter(who, model, answer.usage.prompt_tokens, answer.usage.completion_tokens,
                   "/v1/chat/completions")
    if answer.degraded:
        services.metrics.degraded.inc()


def _bill_unfinished(
    services: Services, who: Principal, model: str, meter: RequestMeter, sent: int
) -> None:
    """Bill a request that ended without an answer: the prompt read, the tokens written."""
    prompt, completion = meter.prompt_tokens, max(meter.completion_tokens, sent)
    if prompt or completion:
        services.meter(who, model, prompt, completion, "/v1/chat/completions")


async def _stream(
    services: Services,
    who: Principal,
    body: ChatCompletionRequest,
    request: AnswerRequest,
    model: str,
    events: AsyncIterator[AnswerEvent],
    first: AnswerEvent,
    cid: str,
    created: int,
    meter: RequestMeter,
) -> AsyncIterator[ServerSentEvent]:
    writer = ChunkWriter(cid, model, created)
    answer: Answer | None = None
    sent = 0
    stripper = MarkerStripper() if not body.wants_citations() else None
    try:
        yield writer.role()
        event: AnswerEvent | None = first
        while event is not None:
            if isinstance(event, Delta):
                text = stripper.feed(event.text) if stripper is not None else event.text
                if text:
                    sent += 1
                    yield writer.delta(text)
            else:
                answer = event.answer
                tail = stripper.finish() if stripper is not None else ""
                if tail:
                    yield writer.delta(tail)
                break
            event = await anext(events, None)
    except LLMError as exc:
        log.warning("chat stream broke off: %s", exc)
        yield writer.error(f"The answer backend broke off: {exc}", code="backend_error")
        yield DONE
        return
    finally:
        if answer is None:  # disconnected or failed: bill the prompt and what was written
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                # Shielded: after a disconnect the response's cancel scope would cancel
                # this await too, and the engine would never close its generation.
                with anyio.CancelScope(shield=True):
                    await aclose()
            _bill_unfinished(services, who, model, meter, sent)
    if answer is None:  # pragma: no cover - the engine always ends with Final
        yield writer.error("The answer engine ended without an answer")
        yield DONE
        return
    _meter(services, who, model, answer)
    extra = await _extras(services, answer, body)
    usage = usage_dict(answer.usage.prompt_tokens, answer.usage.completion_tokens)
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    if include_usage:
        yield writer.finish(_finish_reason(answer, request), **extra)
        yield writer.usage_only(usage=usage, **extra)
    else:
        yield writer.finish(_finish_reason(answer, request), usage=usage, **extra)
    yield DONE
