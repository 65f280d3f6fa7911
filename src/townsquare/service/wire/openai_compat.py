"""OpenAI's chat-completions wire format, with xAI's and Perplexity's search extensions.

No parameter is silently ignored: every field a request may carry is either
implemented or refused with a 400 that names it. Unknown fields are refused
(``extra="forbid"`` everywhere); OpenAI parameters we do not implement are
declared with :func:`~townsquare.service.wire.fields.neutral`, which accepts only
the value that changes nothing (``presence_penalty: 0``, ``logprobs: false``,
as SDKs and frameworks often send) and refuses any other, naming the field.

Search extensions, all turned into one :class:`~townsquare.store.base.SearchFilters`:

- xAI's ``search_parameters`` (``mode``, ``from_date``, ``to_date``,
  ``max_search_results``, ``return_citations``, ``sources`` with per-source
  ``x_handles``/``included_x_handles``/``excluded_x_handles``,
  ``allowed_websites``/``excluded_websites`` (the host of a post's URL) and
  ``post_favorite_count`` (likes, where a source counts them); each source
  entry is a scope: a post must match one of them) and xAI's ``x_search`` /
  ``web_search`` tools in ``tools``.
- Perplexity's ``search_recency_filter`` (hour, day, week, month, year),
  ``search_domain_filter`` (``-domain`` excludes), ``search_after_date_filter``
  and ``search_before_date_filter`` (``%m/%d/%Y``), ``return_citations``.

Responses are plain dicts (the SDKs parse JSON, not our classes), and the
streamed chunks are assembled from pre-serialized pieces so a token costs
one ``json.dumps`` of its text; sse-starlette frames them as events.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sse_starlette import EventSourceResponse, ServerSentEvent

from townsquare.service.wire.fields import Text, neutral
from townsquare.store.base import SearchFilters, normalize_domain
from townsquare.timeutil import parse_since

#: xAI's source types, mapped to the ``source`` field of our posts.
SOURCE_TYPES: dict[str, list[str]] = {
    "x": ["bluesky", "mastodon"],
    "social": ["bluesky", "mastodon"],
    "bluesky": ["bluesky"],
    "mastodon": ["mastodon"],
    "news": ["rss"],
    "web": ["rss"],
    "rss": ["rss"],
    "jsonl": ["jsonl"],
    "demo": ["demo"],
}
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
Handles = list[Text] | None
Domains = Annotated[list[Text] | None, Field(None, max_length=100)]
SortOrder = Literal["relevance", "latest", "top"]
#: Perplexity's ``search_recency_filter``.
RECENCY: dict[str, timedelta] = {
    "hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1),
    "month": timedelta(days=31), "year": timedelta(days=366),
}

_NO_VIEWS = "no source townsquare reads publishes view counts"


class Strict(BaseModel):
    """A request object: unknown fields are refused, never dropped."""

    model_config = ConfigDict(extra="forbid")


class SearchSource(Strict):
    """One entry of ``search_parameters.sources``, xAI style: ``{"type": "x", ...}``.

    An entry is a scope: its type's sources, narrowed by its own options.
    """

    type: Literal["x", "social", "bluesky", "mastodon", "news", "web", "rss", "jsonl", "demo"]
    included_x_handles: Handles = Field(None, max_length=100)
    excluded_x_handles: Handles = Field(None, max_length=100)
    x_handles: Handles = Field(None, max_length=100)
    allowed_websites: Domains = None
    excluded_websites: Domains = None
    post_favorite_count: int | None = Field(None, ge=0, description="at least this many likes")
    post_view_count: Annotated[int | None, neutral(None, why=_NO_VIEWS)] = None
    country: Annotated[str | None, neutral(
        None, why="posts carry no country (use langs for the language)")] = None
    safe_search: Annotated[bool | None, neutral(
        None, why="posts carry no safety rating to filter on")] = None
    links: Annotated[list[str] | None, neutral(
        None, [], why="posts do not record which feed URL they came from; use "
        "allowed_websites for the sites of posts' URLs")] = None

    def scope(self) -> SearchFilters:
        return SearchFilters(
            sources=list(SOURCE_TYPES[self.type]),
            authors=[*(self.included_x_handles or []), *(self.x_handles or [])],
            exclude_authors=list(self.excluded_x_handles or []),
            domains=[normalize_domain(d) for d in self.allowed_websites or []],
            exclude_domains=[normalize_domain(d) for d in self.excluded_websites or []],
            min_likes=self.post_favorite_count,
        )


class SearchParameters(Strict):
    """xAI's live-search parameters (``mode``: auto, on, off), plus ``langs`` and ``sort``."""

    mode: Literal["auto", "on", "off"] = "auto"
    from_date: Text | None = Field(None, max_length=64,
                                   description="YYYY-MM-DD, ISO 8601, or relative (2h, 3d)")
    to_date: Text | None = Field(None, max_length=64,
                                 description="YYYY-MM-DD (whole day), ISO 8601, or relative")
    sources: list[SearchSource | Text] | None = Field(None, max_length=20)
    included_handles: Handles = Field(None, max_length=100)
    excluded_handles: Handles = Field(None, max_length=100)
    included_x_handles: Handles = Field(None, max_length=100)
    excluded_x_handles: Handles = Field(None, max_length=100)
    langs: list[Text] | None = Field(None, max_length=20)
    max_search_results: int | None = Field(None, ge=1, le=50)
    return_citations: bool = True
    sort: SortOrder = Field("relevance", description="relevance (with recency), latest, or "
                            "top (most engagement)")

    @field_validator("sources")
    @classmethod
    def _known_types(cls, v: list[SearchSource | str] | None) -> list[SearchSource | str] | None:
        for src in v or []:
            if isinstance(src, str) and src not in SOURCE_TYPES:
                raise ValueError(f"unknown source type {src!r}; one of {', '.join(SOURCE_TYPES)}")
        return v

    def filters(self) -> SearchFilters:
        """The store filters these parameters mean; ValueError names a bad field."""
        since = _bound(self.from_date, "from_date", end_of_day=False)
        until = _bound(self.to_date, "to_date", end_of_day=True)
        included = [*(self.included_handles or []), *(self.included_x_handles or [])]
        excluded = [*(self.excluded_handles or []), *(self.excluded_x_handles or [])]
        scopes = [
            src.scope() if isinstance(src, SearchSource)
            else SearchFilters(sources=list(SOURCE_TYPES[src]))
            for src in self.sources or []
        ]
        return SearchFilters(
            since=since,
            until=until,
            authors=list(dict.fromkeys(included)),
            exclude_authors=list(dict.fromkeys(excluded)),
            langs=list(self.langs or []),
            scopes=scopes,
        )


def _bound(value: str | None, name: str, end_of_day: bool,
           prefix: str = "search_parameters.") -> datetime | None:
    if not value:
        return None
    try:
        when = parse_since(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise ValueError(f"{prefix}{name}: {exc}") from None
    if when is not None and end_of_day and _DATE_ONLY.match(value.strip()):
        when += timedelta(days=1) - timedelta(milliseconds=1)
    return when


class XSearchTool(Strict):
    """xAI's server-side ``x_search`` tool: posts, by handle and date."""

    type: Literal["x_search"]
    allowed_x_handles: Handles = Field(None, max_length=100)
    excluded_x_handles: Handles = Field(None, max_length=100)
    from_date: Text | None = Field(None, max_length=64)
    to_date: Text | None = Field(None, max_length=64)
    enable_image_understanding: Annotated[bool | None, neutral(
        None, False, why="townsquare reads posts' text only")] = None
    enable_video_understanding: Annotated[bool | None, neutral(
        None, False, why="townsquare reads posts' text only")] = None

    @model_validator(mode="after")
    def _one_handle_list(self) -> XSearchTool:
        if self.allowed_x_handles and self.excluded_x_handles:
            raise ValueError("allowed_x_handles and excluded_x_handles cannot both be set")
        return self

    def scope(self) -> SearchFilters:
        return SearchFilters(
            sources=list(SOURCE_TYPES["x"]),
            authors=list(self.allowed_x_handles or []),
            exclude_authors=list(self.excluded_x_handles or []),
            since=_bound(self.from_date, "from_date", False, "tools.x_search."),
            until=_bound(self.to_date, "to_date", True, "tools.x_search."),
        )


class WebSearchTool(Strict):
    """xAI's ``web_search`` tool, over the news/web sources (RSS): by the site of the link."""

    type: Literal["web_search"]
    allowed_domains: Domains = None
    excluded_domains: Domains = None
    enable_image_understanding: Annotated[bool | None, neutral(
        None, False, why="townsquare reads posts' text only")] = None

    def scope(self) -> SearchFilters:
        return SearchFilters(
            sources=list(SOURCE_TYPES["web"]),
            domains=[normalize_domain(d) for d in self.allowed_domains or []],
            exclude_domains=[normalize_domain(d) for d in self.excluded_domains or []],
        )


class TextPart(Strict):
    type: Literal["text"]
    text: Text


_MEDIA_PARTS = {"image_url", "input_image", "image", "input_audio", "audio", "file",
                "input_file", "video_url"}


class ChatMessageIn(Strict):
    """One message. Text only: a media part is refused, naming its position."""

    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart] | None = None
    # Echoed back by SDKs when a client appends the assistant message it got:
    # accepted empty only.
    refusal: Annotated[str | None, neutral(None, why="send the text in content")] = None
    tool_calls: Annotated[list[Any] | None, neutral(
        None, [], why="townsquare calls no client tools")] = None
    function_call: Annotated[Any, neutral(None, why="townsquare calls no functions")] = None
    audio: Annotated[Any, neutral(None, why="townsquare answers in text only")] = None
    annotations: Annotated[list[Any] | None, neutral(
        None, [], why="annotations are output only")] = None
    name: Annotated[str | None, neutral(
        None, why="townsquare has one user per conversation; leave name out")] = None

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("role") == "tool":
            raise ValueError("role 'tool' is not supported: townsquare calls no client tools")
        content = data.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in _MEDIA_PARTS:
                    raise ValueError(
                        f"content[{j}].type {kind!r} is not supported: townsquare answers from "
                        "posts' text and "
                        "reads no images, audio or files; send text parts only"
                    )
        return data

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if p.text)


class StreamOptions(Strict):
    include_usage: bool = False


class ResponseFormat(Strict):
    type: Literal["text"] = Field(
        description="text only: answers are prose with [n] citation markers")


class ChatCompletionRequest(Strict):
    """``POST /v1/chat/completions``: every field is honoured or refused (400, named)."""

    model: str = Field("townsquare", max_length=200,
                       description="townsquare, townsquare-fun, ... (see /v1/models)")
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=500)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=32_768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32_768)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: Text | list[Text] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1, le=1, description="Only 1 is supported")
    store: bool | None = Field(
        None, description="false: do not keep this exchange as a conversation"
    )
    search_parameters: SearchParameters | None = None
    conversation_id: str | None = Field(
        None, max_length=100, description="Continue a conversation this key started"
    )
    response_format: ResponseFormat | None = Field(
        None, description='{"type": "text"} only; JSON output is refused')
    tools: list[XSearchTool | WebSearchTool] | None = Field(
        None, max_length=8, description="xAI's x_search and web_search (server-side); "
        "function tools are refused")
    tool_choice: Literal["auto", "none", "required"] | None = Field(
        None, description="with tools: none turns search off, required forces it")
    # Perplexity
    return_citations: bool | None = Field(None, description="false: no [n] markers, no "
                                          "citations (also search_parameters.return_citations)")
    search_recency_filter: Literal["hour", "day", "week", "month", "year"] | None = None
    search_domain_filter: list[Text] | None = Field(
        None, max_length=20, description="domains of post URLs; -domain excludes")
    search_after_date_filter: Text | None = Field(None, max_length=20, description="%m/%d/%Y")
    search_before_date_filter: Text | None = Field(None, max_length=20, description="%m/%d/%Y")
    return_images: Annotated[bool | None, neutral(None, False, why="posts' images are not "
                                                  "kept")] = None
    return_related_questions: Annotated[bool | None, neutral(
        None, False, why="townsquare suggests no questions")] = None
    # OpenAI parameters with no effect here: their neutral value only.
    frequency_penalty: Annotated[float | None, neutral(
        None, 0, why="the local model has one fixed repeat penalty")] = None
    presence_penalty: Annotated[float | None, neutral(
        None, 0, why="the local model has one fixed repeat penalty")] = None
    logprobs: Annotated[bool | None, neutral(None, False, why="no token probabilities are "
                                             "returned")] = None
    top_logprobs: Annotated[int | None, neutral(None, 0, why="no token probabilities are "
                                                "returned")] = None
    logit_bias: Annotated[dict[str, float] | None, neutral(
        None, {}, why="token biases are not supported")] = None
    parallel_tool_calls: Annotated[bool | None, neutral(
        None, True, why="townsquare calls no client tools")] = None
    user: Annotated[str | None, neutral(
        None, why="townsquare keeps no per-end-user records; the API key identifies the "
        "caller")] = None
    metadata: Annotated[dict[str, Any] | None, neutral(
        None, {}, why="stored completions are conversations (see store)")] = None
    modalities: Annotated[list[str] | None, neutral(
        None, ["text"], why="answers are text")] = None
    service_tier: Annotated[str | None, neutral(
        None, "auto", "default", why="the API key's tier sets the limits")] = None
    reasoning_effort: Annotated[str | None, neutral(
        None, why="the models are not reasoning models")] = None

    @model_validator(mode="before")
    @classmethod
    def _no_function_tools(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("tools"), list):
            for i, tool in enumerate(data["tools"]):
                kind = tool.get("type") if isinstance(tool, dict) else None
                if kind not in ("x_search", "web_search"):
                    raise ValueError(
                        f"tools[{i}] is {kind!r}: townsquare calls no client tools; "
                        "the server-side tools are x_search and web_search"
                    )
        if isinstance(data, dict) and isinstance(data.get("response_format"), dict):
            kind = data["response_format"].get("type")
            if kind != "text":
                raise ValueError(
                    f"response_format {kind!r} is not supported: answers are prose with "
                    "[n] citation markers; use {'type': 'text'} or leave it out"
                )
        return data

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @model_validator(mode="after")
    def _choice_needs_tools(self) -> ChatCompletionRequest:
        if self.tool_choice is not None and not self.tools:
            raise ValueError("tool_choice needs tools (x_search or web_search)")
        return self

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def wants_citations(self) -> bool:
        """False when either xAI's or Perplexity's ``return_citations`` says so."""
        if self.return_citations is False:
            return False
        return self.search_parameters is None or self.search_parameters.return_citations

    def search_mode(self) -> Literal["auto", "on", "off"]:
        if self.tools and self.tool_choice == "none":
            return "off"
        if self.tools and self.tool_choice == "required":
            return "on"
        return self.search_parameters.mode if self.search_parameters is not None else "auto"

    def filters(self, now: datetime | None = None) -> SearchFilters | None:
        """Every search option of the request as one filter; ValueError names a bad field."""
        params = self.search_parameters
        found = params.filters() if params is not None else None
        perplexity = self._perplexity(now or datetime.now(UTC))
        tools = [t.scope() for t in self.tools or []]
        if found is None and perplexity is None and not tools:
            return None
        out = found or SearchFilters()
        if perplexity is not None:
            # Time bounds stay on top (they narrow the index scans); the rest nests.
            out.since = max((t for t in (out.since, perplexity.since) if t), default=None)
            out.until = min((t for t in (out.until, perplexity.until) if t), default=None)
            perplexity.since = perplexity.until = None
            if not perplexity.is_empty():
                out = out.both(perplexity)
        if tools:
            # Each tool is a scope (a post matches one of them), and with
            # search_parameters.sources too, a post must match an entry and a tool.
            out = out.both(SearchFilters(scopes=tools))
        return out

    def _perplexity(self, now: datetime) -> SearchFilters | None:
        f = SearchFilters()
        used = False
        if self.search_recency_filter:
            f.since, used = now - RECENCY[self.search_recency_filter], True
        if self.search_after_date_filter:
            f.since, used = _us_date(self.search_after_date_filter,
                                     "search_after_date_filter"), True
        if self.search_before_date_filter:
            f.until = _us_date(self.search_before_date_filter, "search_before_date_filter")
            f.until += timedelta(days=1) - timedelta(milliseconds=1)
            used = True
        for raw in self.search_domain_filter or []:
            excluded = raw.strip().startswith("-")
            domain = normalize_domain(raw.strip().lstrip("-"))
            if not domain:
                raise ValueError(f"search_domain_filter: {raw!r} is not a domain")
            (f.exclude_domains if excluded else f.domains).append(domain)
            used = True
        return f if used else None


def _us_date(value: str, name: str) -> datetime:
    try:
        return datetime.strptime(value.strip(), "%m/%d/%Y").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a date like 3/1/2025 (%m/%d/%Y)") from None


# --- responses -------------------------------------------------------------------


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def usage_dict(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def chat_completion(
    cid: str,
    created: int,
    model: str,
    content: str,
    finish_reason: str,
    usage: dict[str, int],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """A ``chat.completion`` object; ``extra`` adds our fields (citations, conversation_id...)."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage,
        **extra,
    }


#: OpenAI's streams end lines with "\n" (sse-starlette's default is "\r\n").
SSE_SEP = "\n"
#: How long a stream may go on finishing after the server is told to stop
#: (``townsquare serve`` gives uvicorn the same ``timeout_graceful_shutdown``).
SHUTDOWN_GRACE_S = 5.0


def sse(obj: Any) -> ServerSentEvent:
    return ServerSentEvent(json.dumps(obj, ensure_ascii=False, separators=(",", ":")), sep=SSE_SEP)


DONE = ServerSentEvent("[DONE]", sep=SSE_SEP)


def event_stream(events: AsyncIterator[ServerSentEvent]) -> EventSourceResponse:
    """A streamed completion, framed by sse-starlette byte for byte as OpenAI frames
    it: ``data: {...}\n\n`` events, ``data: [DONE]\n\n`` last, no keep-alive pings
    (strict clients read every non-empty line as data)."""
    return EventSourceResponse(
        events, sep=SSE_SEP, ping=0, shutdown_grace_period=SHUTDOWN_GRACE_S,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class ChunkWriter:
    """Builds the ``chat.completion.chunk`` events of one streamed completion."""

    _DELTA_TAIL = '},"logprobs":null,"finish_reason":null}]}'

    def __init__(self, cid: str, model: str, created: int) -> None:
        self.cid = cid
        self.model = model
        self.created = created
        head = {"id": cid, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": None}
        prefix = json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1]
        self._delta_head = prefix + ',"choices":[{"index":0,"delta":{"content":'

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> ServerSentEvent:
        return sse({"id": self.cid, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "system_fingerprint": None, "choices": choices,
                    **extra})

    def role(self) -> ServerSentEvent:
        return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}])

    def delta(self, text: str) -> ServerSentEvent:
        return ServerSentEvent(
            self._delta_head + json.dumps(text, ensure_ascii=False) + self._DELTA_TAIL,
            sep=SSE_SEP)

    def finish(self, finish_reason: str, **extra: Any) -> ServerSentEvent:
        return self._chunk(
            [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}], **extra
        )

    def usage_only(self, **extra: Any) -> ServerSentEvent:
        """The extra last chunk ``stream_options.include_usage`` asks for (no choices)."""
        return self._chunk([], **extra)

    def error(
        self, message: str, type: str = "server_error", code: str = "internal_error"
    ) -> ServerSentEvent:
        return sse({"error": {"message": message, "type": type, "param": None, "code": code}})


#: A citation marker as the answer engine writes it (renumbered: ``[3]``), and the
#: blanks before it.
_MARKER = re.compile(r"[ \t]*\[\d{1,3}\]")


def strip_markers(text: str) -> str:
    """The answer without its ``[n]`` markers (``return_citations: false``)."""
    return _MARKER.sub("", text)


class MarkerStripper:
    """:func:`strip_markers` over a stream: blanks are held until the next piece shows
    whether a marker follows them (the engine emits each marker whole)."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, piece: str) -> str:
        text = strip_markers(self._held + piece)
        body = text.rstrip(" \t")
        self._held = text[len(body):]
        return body

    def finish(self) -> str:
        held, self._held = self._held, ""
        return held


def now_s() -> int:
    return int(time.time())


def model_object(model_id: str, created: int, description: str = "") -> dict[str, Any]:
    obj: dict[str, Any] = {"id": model_id, "object": "model", "created": created,
                           "owned_by": "townsquare"}
    if description:
        obj["description"] = description
    return obj
