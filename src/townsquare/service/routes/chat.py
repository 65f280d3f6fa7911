"""``POST /v1/chat/completions``: OpenAI's chat, answered from live posts.

The route translates between OpenAI's wire format and
:class:`townsquare.answer.AnswerEngine`; the engine does the work (policy,
retrieval, prompt, generation, citations, conversations).

- ``model`` names a persona and optionally an LLM backend (see
  :mod:`townsquare.service.routes.models`): ``townsquare``, ``townsquare-fun``,
  ``townsquare-fun:openai``.
- The question is the last ``user`` message. With ``conversation_id`` the
  stored conversation is the history (the other messages are ignored);
  without it, earlier ``user``/``assistant`` messages are the history, so
  stateless OpenAI clients get follow-ups right: they seed a new stored
  conversation, or with ``"store": false`` go to the engine as they are. System
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
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sse_starlette import ServerSentEvent

from townsquare.answer import Answer, AnswerEngine, AnswerRequest, Delta, Final
from townsquare.answer.engine import AnswerEvent
from townsquare.answer.verify import Verification
from townsquare.errors import NotFound, TownsquareError
from townsquare.llm import ChatMessage, LLMError
from townsquare.llm.metering import RequestMeter, current_meter
from townsquare.model import iso
from townsquare.service.deps import Services, get_principal, get_services
from townsquare.service.errors import ApiError
from townsquare.service.gate.auth import Principal
from townsquare.service.routes.models import (
    allowed_backend,
    model_id,
    model_not_found,
    parse_model,
    personas_in,
)
from townsquare.service.wire.openai_compat import (
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

#: Tokens of context a prompt needs besides the completion (rules, question, a few posts).
MIN_PROMPT_TOKENS = 512


# --- chat completions --------------------------------------------------------------


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
    given: list[ChatMessage] = []
    if conversation_id is None and history:
        if persist:  # kept as a conversation of this key, follow-ups included
            conversation_id = await asyncio.to_thread(
                _seed_conversation, services, who.owner, persona, history
            )
        else:  # nothing stored: the engine reads the turns as they were sent
            given = [ChatMessage("user" if role == "user" else "assistant", content)
                     for role, content in history[-40:]]
    request = AnswerRequest(
        question=question,
        conversation_id=conversation_id,
        owner=who.owner,
        mode=persona,
        search=body.search_mode(),
        model=backend,
        persist=persist,
        history=given,
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


def _request_error(exc: Exception, model: str) -> Exception:
    """What an engine error becomes over HTTP (the error handlers do the rest).

    Errors of townsquare's tree carry their own status; a model that does not
    exist is reported in the request's own words; any other ``ValueError`` is
    a message the engine could not take.
    """
    if isinstance(exc, NotFound) and exc.code == "model_not_found":
        return model_not_found(model, str(exc))
    if isinstance(exc, TownsquareError):
        return exc
    if isinstance(exc, ValueError):
        return ApiError(400, str(exc), code="invalid_value", param="messages")
    return exc


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


def _extras(answer: Answer, body: ChatCompletionRequest) -> dict[str, Any]:
    return_citations = body.wants_citations()
    # From the posts the engine had: author_name and source included, no store read.
    citations = [c.public_dict() for c in answer.citations] if return_citations else []
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
    engine = await services.live.aengine()
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
        if not isinstance(exc, Exception):
            raise
        error = _request_error(exc, body.model)
        if error is exc:
            raise
        raise error from exc
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
    extra = _extras(answer, body)
    usage = usage_dict(answer.usage.prompt_tokens, answer.usage.completion_tokens)
    text = answer.answer if body.wants_citations() else strip_markers(answer.answer)
    return JSONResponse(
        chat_completion(cid, created, model, text, _finish_reason(answer, request),
                        usage, extra)
    )


async def _collect(events: AsyncIterator[AnswerEvent], first: AnswerEvent) -> Answer:
    if isinstance(first, Final):
        return first.answer
    # An LLMError here is a 502, or a 503 when unavailable (townsquare.service.errors).
    async for event in events:
        if isinstance(event, Final):
            return event.answer
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
    extra = _extras(answer, body)
    usage = usage_dict(answer.usage.prompt_tokens, answer.usage.completion_tokens)
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    if include_usage:
        yield writer.finish(_finish_reason(answer, request), **extra)
        yield writer.usage_only(usage=usage, **extra)
    else:
        yield writer.finish(_finish_reason(answer, request), usage=usage, **extra)
    yield DONE
