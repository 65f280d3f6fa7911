"""OpenAI's chat-completions wire format, and xAI's ``search_parameters`` extension.

Requests are pydantic models. The top level ignores parameters it does not
implement (``presence_penalty``, ``logprobs``, ``tools``...) the way most
OpenAI-compatible servers do, so stock clients and frameworks that always
send them keep working; ``search_parameters`` is our own extension and
forbids unknown keys, so a typo there fails loudly instead of silently
searching everything.

Responses are plain dicts (the SDKs parse JSON, not our classes), and the
streamed chunks are assembled from pre-serialized pieces so a token costs
one ``json.dumps`` of its text.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from townsquare.service.fields import Text
from townsquare.store.base import SearchFilters
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


class SearchSource(BaseModel):
    """One entry of ``search_parameters.sources``, xAI style: ``{"type": "x", ...}``.

    Honoured: ``type`` and the handle lists. Accepted and ignored (we do not
    have the data): ``country``, ``safe_search``, ``allowed_websites``,
    ``excluded_websites``, ``links``, ``post_favorite_count``, ``post_view_count``.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["x", "social", "bluesky", "mastodon", "news", "web", "rss", "jsonl", "demo"]
    included_x_handles: Handles = Field(None, max_length=100)
    excluded_x_handles: Handles = Field(None, max_length=100)
    x_handles: Handles = Field(None, max_length=100)
    country: str | None = None
    safe_search: bool | None = None
    allowed_websites: list[str] | None = None
    excluded_websites: list[str] | None = None
    links: list[str] | None = None
    post_favorite_count: int | None = None
    post_view_count: int | None = None


class SearchParameters(BaseModel):
    """xAI's live-search parameters (``mode``: auto, on, off)."""

    model_config = ConfigDict(extra="forbid")

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

    def filters(self) -> SearchFilters:
        """The store filters these parameters mean; ValueError names a bad field."""
        since = _bound(self.from_date, "from_date", end_of_day=False)
        until = _bound(self.to_date, "to_date", end_of_day=True)
        included = [*(self.included_handles or []), *(self.included_x_handles or [])]
        excluded = [*(self.excluded_handles or []), *(self.excluded_x_handles or [])]
        sources: list[str] = []
        for src in self.sources or []:
            if isinstance(src, str):
                sources += SOURCE_TYPES.get(src, [src])
                continue
            sources += SOURCE_TYPES[src.type]
            included += [*(src.included_x_handles or []), *(src.x_handles or [])]
            excluded += src.excluded_x_handles or []
        return SearchFilters(
            since=since,
            until=until,
            authors=list(dict.fromkeys(included)),
            exclude_authors=list(dict.fromkeys(excluded)),
            sources=list(dict.fromkeys(sources)),
            langs=list(self.langs or []),
        )


def _bound(value: str | None, name: str, end_of_day: bool) -> datetime | None:
    if not value:
        return None
    try:
        when = parse_since(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise ValueError(f"search_parameters.{name}: {exc}") from None
    if when is not None and end_of_day and _DATE_ONLY.match(value.strip()):
        when += timedelta(days=1) - timedelta(milliseconds=1)
    return when


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: Text | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if p.type == "text" and p.text)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. Unknown OpenAI parameters are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

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
    user: str | None = Field(None, max_length=256)
    store: bool | None = Field(
        None, description="false: do not keep this exchange as a conversation"
    )
    search_parameters: SearchParameters | None = None
    conversation_id: str | None = Field(
        None, max_length=100, description="Continue a conversation this key started"
    )

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


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


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


class ChunkWriter:
    """Builds the ``chat.completion.chunk`` events of one streamed completion."""

    _DELTA_TAIL = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def __init__(self, cid: str, model: str, created: int) -> None:
        self.cid = cid
        self.model = model
        self.created = created
        head = {"id": cid, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": None}
        prefix = json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1]
        self._delta_head = (
            "data: " + prefix + ',"choices":[{"index":0,"delta":{"content":'
        ).encode()

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse({"id": self.cid, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "system_fingerprint": None, "choices": choices,
                    **extra})

    def role(self) -> bytes:
        return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}])

    def delta(self, text: str) -> bytes:
        return self._delta_head + json.dumps(text, ensure_ascii=False).encode() + self._DELTA_TAIL

    def finish(self, finish_reason: str, **extra: Any) -> bytes:
        return self._chunk(
            [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}], **extra
        )

    def usage_only(self, **extra: Any) -> bytes:
        """The extra last chunk ``stream_options.include_usage`` asks for (no choices)."""
        return self._chunk([], **extra)

    def error(
        self, message: str, type: str = "server_error", code: str = "internal_error"
    ) -> bytes:
        return sse({"error": {"message": message, "type": type, "param": None, "code": code}})


def now_s() -> int:
    return int(time.time())


def model_object(model_id: str, created: int, description: str = "") -> dict[str, Any]:
    obj: dict[str, Any] = {"id": model_id, "object": "model", "created": created,
                           "owned_by": "townsquare"}
    if description:
        obj["description"] = description
    return obj
