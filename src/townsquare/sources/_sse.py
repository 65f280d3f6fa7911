"""Server-sent events (the WHATWG ``text/event-stream`` format), decoded line by line.

``event:`` names the event, ``data:`` lines (joined with newlines) carry its
payload, a blank line dispatches it, and lines starting with ``:`` are
comments (Mastodon's ``:thump`` heartbeats).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None = None


class SseDecoder:
    """Feed it lines (with or without their line ending); it returns whole events."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SseEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None  # "retry" and unknown fields are ignored, as the spec says

    def _dispatch(self) -> SseEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return SseEvent(event, "\n".join(data), self._id)


def decode_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Every complete event in ``lines`` (a trailing event without its blank line is kept back)."""
    decoder = SseDecoder()
    for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event


async def adecode_sse(lines: AsyncIterator[str]) -> AsyncIterator[SseEvent]:
    decoder = SseDecoder()
    async for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event
