"""The ``local`` backend: SmolLM2-135M in-process through llama-cpp-python (slow: loads it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from townsquare.config import Settings
from townsquare.llm import LLMS, ChatMessage, GenerationOptions
from townsquare.llm.local import LocalLLM, available_cores, default_model_path, shared_model

MSGS = [ChatMessage("system", "You are brief."), ChatMessage("user", "Name three colours.")]


def test_model_file_ships_in_the_wheel() -> None:
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def test_factory_reads_settings_without_loading() -> None:
    llm = LLMS.create("local", Settings(llm_context=2048, llm_threads=1))
    assert isinstance(llm, LocalLLM)
    assert (llm.context_tokens, llm.n_threads) == (2048, 1)
    default = LLMS.create("local", Settings())
    assert isinstance(default, LocalLLM) and default.n_threads == available_cores()


@pytest.fixture(scope="module")
def llm() -> LocalLLM:
    model = LocalLLM(n_ctx=4096, n_threads=available_cores())
    model.load()
    return model


@pytest.mark.slow
async def test_streams_tokens_with_exact_usage(llm: LocalLLM) -> None:
    gen = llm.generate(MSGS, GenerationOptions(max_tokens=24, temperature=0.0, seed=1))
    pieces = [p async for p in gen]
    assert len(pieces) > 1 and "".join(pieces).strip()
    assert gen.usage.prompt_tokens > llm.count_tokens("Name three colours.")
    assert 0 < gen.usage.completion_tokens <= 24


@pytest.mark.slow
def test_the_model_is_loaded_once_per_process(llm: LocalLLM) -> None:
    other = LLMS.create("local", Settings(llm_context=4096, llm_threads=llm.n_threads))
    assert isinstance(other, LocalLLM)
    assert other.model is llm.model
    assert shared_model(llm.path, 4096, llm.n_threads) is llm.model
    assert llm.model.llama.n_ctx() == 4096  # not the library's 512


@pytest.mark.slow
async def test_stopping_early_frees_the_model_for_the_next_request(llm: LocalLLM) -> None:
    long = [ChatMessage("user", "Count from 1 to 200, one number per line.")]
    it = llm.generate(long, GenerationOptions(max_tokens=400)).__aiter__()
    await it.__anext__()
    await it.aclose()  # type: ignore[attr-defined]  # a client went away
    # The worker notices after at most one token and releases the lock.
    text = await asyncio.wait_for(
        llm.generate(MSGS, GenerationOptions(max_tokens=8)).text(), timeout=120
    )
    assert text


@pytest.mark.slow
async def test_concurrent_generations_are_serialized_not_corrupted(llm: LocalLLM) -> None:
    opts = GenerationOptions(max_tokens=16, temperature=0.0, seed=7)
    alone = await llm.generate(MSGS, opts).text()
    together = await asyncio.gather(*(llm.generate(MSGS, opts).text() for _ in range(3)))
    assert together == [alone] * 3


@pytest.mark.slow
def test_count_tokens_uses_the_real_tokenizer(llm: LocalLLM) -> None:
    assert llm.count_tokens("") == 0
    assert llm.count_tokens("hello world") == 2


def test_local_model_path_loads_any_gguf_and_says_when_it_is_missing(tmp_path: Path) -> None:
    from townsquare.llm.base import LLMError

    copy = tmp_path / "my-model.gguf"
    copy.symlink_to(default_model_path())
    llm = LLMS.create("local", Settings(home=tmp_path, local_model_path=str(copy)))
    assert isinstance(llm, LocalLLM)
    # Another GGUF is not the bundled 135M model: answers take the generative path.
    assert llm.model_id == "my-model" and not llm.bundled
    assert llm.count_tokens("hello world") > 0
    with pytest.raises(LLMError, match="local_model_path"):
        LLMS.create("local", Settings(home=tmp_path, local_model_path=str(tmp_path / "no.gguf")))


def test_amx_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    """On AMX CPUs the model loads without AMX buffers (their kernels crash llama.cpp)."""
    from townsquare.llm.local import cpu_has_amx

    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n")
    assert cpu_has_amx(info)
    info.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert not cpu_has_amx(info)
    assert not cpu_has_amx(tmp_path / "missing")


def test_a_wrapped_gguf_of_ones_own_still_writes_its_answers(tmp_path: Path) -> None:
    """The limiter and the meter read ``bundled`` through: another GGUF behind them is not
    mistaken for the bundled 135M model (whose answers are composed from the posts)."""
    from townsquare.answer import AnswerEngine, Personas, Policy
    from townsquare.llm.limiter import ConcurrencyLimitedLLM
    from townsquare.llm.metering import MeteredLLM
    from townsquare.retrieval import Retriever
    from townsquare.store import open_store

    copy = tmp_path / "my-model.gguf"
    copy.symlink_to(default_model_path())
    store = open_store(str(tmp_path / "s.db"), tmp_path)
    try:
        for local, style in ((LocalLLM(copy), "generative"), (LocalLLM(), "grounded")):
            wrapped = MeteredLLM(ConcurrencyLimitedLLM(local, max_concurrent=1))
            assert wrapped.bundled is local.bundled
            engine = AnswerEngine(Retriever(store, None), wrapped, store, Personas.load(),
                                  Policy())
            assert engine.style_for(wrapped) == style
    finally:
        store.close()
