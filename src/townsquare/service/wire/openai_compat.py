"""OpenAI's chat-completions wire format, with xAI's and Perplexity's search extensions.

No parameter is silently ignored: every field a request may carry is either
implemented or refused with a 400 that names it. Unknown fields are refused
(``extra="forbid"`` everywhere); OpenAI parameters we do not implement are
declared with :func:`~townsquare.service.wire.fields.neutral`, which accepts only
the value that changes nothing (``presence_penalty: 0``, ``logprobs: false``,
as SDKs and frameworks often send) and refuses any other, naming the field.

Search extensions, all turned into one :class:`~townsquare.store.base.SearchFilters`:
xAI's ``search_parameters`` and ``x_search``/``web_search`` tools (their models in
:mod:`~townsquare.service.wire.search_options`), and Perplexity's
``search_recency_filter``, ``search_domain_filter`` (``-domain`` excludes),
``search_after_date_filter``/``search_before_date_filter`` (``%m/%d/%Y``) and
``return_citations``, fields of the chat request itself.

Responses and streaming live in :mod:`~townsquare.service.wire.responses`. The names of
both modules are re-exported here, the one module routes import the wire format from.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from townsquare.service.wire.fields import Strict, Text, neutral
from townsquare.service.wire.responses import (
    DONE,
    SHUTDOWN_GRACE_S,
    SSE_SEP,
    ChunkWriter,
    MarkerStripper,
    chat_completion,
    completion_id,
    event_stream,
    model_object,
    now_s,
    sse,
    strip_markers,
    usage_dict,
)
from townsquare.service.wire.search_options import (
    RECENCY,
    SOURCE_TYPES,
    Domains,
    Handles,
    SearchParameters,
    SearchSource,
    SortOrder,
    WebSearchTool,
    XSearchTool,
    us_date,
)
from townsquare.store.base import SearchFilters, normalize_domain


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
            f.since, used = us_date(self.search_after_date_filter,
                                     "search_after_date_filter"), True
        if self.search_before_date_filter:
            f.until = us_date(self.search_before_date_filter, "search_before_date_filter")
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


__all__ = [
    "DONE", "RECENCY", "SHUTDOWN_GRACE_S", "SOURCE_TYPES", "SSE_SEP", "ChatCompletionRequest",
    "ChatMessageIn", "ChunkWriter", "Domains", "Handles", "MarkerStripper", "ResponseFormat",
    "SearchParameters", "SearchSource", "SortOrder", "StreamOptions", "Strict", "TextPart",
    "WebSearchTool", "XSearchTool", "chat_completion", "completion_id", "event_stream",
    "model_object", "now_s", "sse", "strip_markers", "usage_dict",
]
