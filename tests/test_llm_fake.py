"""The scripted fake LLM: what CLI, engine and HTTP tests drive answers with."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from townsquare.config import Settings
from townsquare.llm import LLMS, ChatMessage, LLMError, LLMUnavailable
from townsquare.llm.fake import SCRIPT_ENV, FakeLLM

MSGS = [ChatMessage("system", "rules"), ChatMessage("user", "posts...\nQuestion: what now?")]


async def collect(llm: FakeLLM) -> list[str]:
    return [piece async for piece in llm.generate(MSGS)]


async def test_queued_chunks_stream_in_order_and_messages_are_recorded() -> None:
    llm = FakeLLM()
    llm.enqueue(["Hello ", "world [1]"])
    llm.enqueue("second")
    assert await collect(llm) == ["Hello ", "world [1]"]
    assert await collect(llm) == ["second"]
    assert llm.last_messages == MSGS
    assert len(llm.calls) == 2


async def test_unscripted_answer_is_deterministic_and_cites_one() -> None:
    llm = FakeLLM()
    gen = llm.generate(MSGS)
    text = await gen.text()
    assert text == "Fake answer about: what now? [1]"
    assert gen.usage.prompt_tokens > 0 and gen.usage.completion_tokens == 1


async def test_errors_can_be_queued() -> None:
    llm = FakeLLM()
    llm.enqueue_error(retry_after=7)
    llm.enqueue_error(unavailable=False)
    with pytest.raises(LLMUnavailable) as info:
        await collect(llm)
    assert info.value.retry_after == 7
    with pytest.raises(LLMError):
        await collect(llm)


async def test_script_file_from_env_through_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([
        "one chunk", ["a", "b"], {"chunks": ["c"], "delay_s": 0.01},
        {"error": "unavailable", "retry_after": 2},
    ]))
    monkeypatch.setenv(SCRIPT_ENV, str(script))
    llm = LLMS.create("fake", Settings())
    assert isinstance(llm, FakeLLM)
    assert await collect(llm) == ["one chunk"]
    assert await collect(llm) == ["a", "b"]
    assert await collect(llm) == ["c"]
    with pytest.raises(LLMUnavailable):
        await collect(llm)
    assert (await collect(llm))[0].startswith("Fake answer")


async def test_gate_holds_the_stream_after_the_first_chunk(tmp_path: Path) -> None:
    gate = tmp_path / "go"
    llm = FakeLLM()
    llm.load_script_items([{"chunks": ["first ", "second"], "gate": str(gate)}])
    it = llm.generate(MSGS).__aiter__()
    assert await it.__anext__() == "first "
    pending = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0.1)
    assert not pending.done()
    gate.touch()
    assert await pending == "second"
