"""A scripted LLM for tests: queued chunks out, every prompt it got recorded.

Like simonw/llm's ``MockModel``: ``enqueue(["Hello ", "world [1]"])`` makes the
next generation stream exactly those chunks; with nothing queued it answers
deterministically (a short echo of the question that cites ``[1]``), so code
that just needs *an* answer never has to script one.

Tests in other processes (the CLI through a pty, the HTTP service) script it
with ``TOWNSQUARE_FAKE_LLM_SCRIPT``: a JSON file holding a list of responses,
consumed in order. Each response is a string (one chunk), a list of chunks,
or an object::

    {"chunks": ["Hi ", "[1]"], "delay_s": 0.05}   # stream slowly
    {"chunks": ["Hi ", "[1]"], "gate": "/tmp/go"}   # hold after the first chunk until
                                                    # that file exists (streaming tests)
    {"error": "unavailable", "retry_after": 3}      # raise LLMUnavailable
    {"error": "failed"}                             # raise LLMError
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

SCRIPT_ENV = "TOWNSQUARE_FAKE_LLM_SCRIPT"


@dataclass(slots=True)
class Scripted:
    """One queued response."""

    chunks: list[str] = field(default_factory=list)
    delay_s: float = 0.0
    error: str | None = None
    retry_after: float = 5.0
    gate: str | None = None


def parse_response(item: Any) -> Scripted:
    """A script entry (string, list of chunks, or object) as a :class:`Scripted`."""
    if isinstance(item, str):
        return Scripted([item])
    if isinstance(item, list):
        return Scripted([str(c) for c in item])
    if isinstance(item, dict):
        chunks = item.get("chunks", [])
        return Scripted(
            [chunks] if isinstance(chunks, str) else [str(c) for c in chunks],
            delay_s=float(item.get("delay_s", 0.0)),
            error=item.get("error"),
            retry_after=float(item.get("retry_after", 5.0)),
            gate=item.get("gate"),
        )
    raise ValueError(f"fake LLM script entries are strings, lists or objects, not {item!r}")


class FakeGeneration(Generation):
    def __init__(self, llm: FakeLLM, messages: list[ChatMessage], scripted: Scripted | None):
        self.usage = Usage()
        self._llm = llm
        self._messages = messages
        self._scripted = scripted

    async def __aiter__(self) -> AsyncIterator[str]:
        scripted = self._scripted or Scripted([_echo(self._messages)])
        if scripted.error == "unavailable":
            raise LLMUnavailable("fake LLM scripted as unavailable", scripted.retry_after)
        if scripted.error:
            raise LLMError(f"fake LLM scripted failure: {scripted.error}")
        self.usage.prompt_tokens = sum(self._llm.count_tokens(m.content) for m in self._messages)
        for i, chunk in enumerate(scripted.chunks):
            if i == 1 and scripted.gate:
                await _wait_for(Path(scripted.gate))
            if scripted.delay_s:
                await asyncio.sleep(scripted.delay_s)
            else:
                await asyncio.sleep(0)  # let cancellation in, as a real backend would
            self.usage.completion_tokens += 1
            yield chunk


async def _wait_for(path: Path, timeout_s: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not path.exists():
        if loop.time() > deadline:
            raise LLMError(f"fake LLM gate {path} never opened")
        await asyncio.sleep(0.02)


def _echo(messages: Sequence[ChatMessage]) -> str:
    """The unscripted answer: the question's last line, cited to the first post."""
    last = next((m.content for m in reversed(messages) if m.role == "user"), "")
    lines = [ln.strip() for ln in last.splitlines() if ln.strip()]
    question = lines[-1] if lines else ""
    if question.lower().startswith("question:"):
        question = question[len("question:"):].strip()
    return f"Fake answer about: {question[:120]} [1]"


class FakeLLM(LLM):
    """Queued responses first, then the deterministic echo."""

    name = "fake"

    def __init__(self, script: Path | str | None = None, model_id: str = "fake") -> None:
        self.model_id = model_id
        self.context_tokens = 4096
        self.calls: list[list[ChatMessage]] = []
        self.options: list[GenerationOptions] = []
        self._queue: deque[Scripted] = deque()
        if script:
            self.load_script(Path(script))

    def enqueue(self, chunks: Sequence[str] | str, delay_s: float = 0.0) -> None:
        """Queue one response streamed as ``chunks``."""
        items = [chunks] if isinstance(chunks, str) else list(chunks)
        self._queue.append(Scripted(items, delay_s=delay_s))

    def enqueue_error(self, unavailable: bool = True, retry_after: float = 5.0) -> None:
        """Queue a failure: :class:`LLMUnavailable` (default) or :class:`LLMError`."""
        self._queue.append(
            Scripted(error="unavailable" if unavailable else "failed", retry_after=retry_after)
        )

    def load_script(self, path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"{path}: a fake LLM script is a JSON list of responses")
        self.load_script_items(data)

    def load_script_items(self, items: Sequence[Any]) -> None:
        """Queue responses in the script-file format (strings, lists, objects)."""
        self._queue.extend(parse_response(item) for item in items)

    @property
    def last_messages(self) -> list[ChatMessage]:
        if not self.calls:
            raise AssertionError("the fake LLM was never called")
        return self.calls[-1]

    def generate(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> Generation:
        self.calls.append(list(messages))
        self.options.append(options or GenerationOptions())
        scripted = self._queue.popleft() if self._queue else None
        return FakeGeneration(self, list(messages), scripted)


@LLMS.register("fake")
def create(settings: Settings | None = None) -> FakeLLM:
    """The registry factory: scripted from ``TOWNSQUARE_FAKE_LLM_SCRIPT`` when set."""
    return FakeLLM(script=os.environ.get(SCRIPT_ENV) or None)
