"""OpenAI's chat-completion responses, whole and streamed.

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
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent


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
