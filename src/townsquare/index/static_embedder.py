"""The ``minilm-static`` embedder: static token vectors distilled from all-MiniLM-L6-v2.

The full transformer embeds ~150 posts/s on 2 cores; a live firehose needs
thousands. Following model2vec, every WordPiece token is run once through the
full model as a one-token sentence (``[CLS] tok [SEP]``, mean-pooled like the
sentence model), the table is centred and reduced with PCA, and a post becomes
the weighted mean of its tokens' rows. Embedding is then a tokenizer call and a
gather: over ten thousand posts/s on 2 cores.

Distillation runs once per model file and recipe (tens of seconds on 2 cores)
and is cached as a float16 ``.npy`` under the cache directory, keyed by the
model file's SHA-256 and the recipe, so a new model or recipe never reuses a
stale table. ``benchmarks/bench_embedders.py`` measures what the shortcut
costs against the full model.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
from tokenizers import Tokenizer

from townsquare.index import EMBEDDERS
from townsquare.index.embedder import Embedder
from townsquare.index.minilm import model_dir, sentence_model

#: Bumped whenever distillation or post-processing changes: old caches are then ignored.
RECIPE_VERSION = 1
DEFAULT_DIM = 256
MAX_TOKENS = 128
#: Characters kept before tokenizing: far more than MAX_TOKENS tokens need, and
#: it spares normalizing a whole long article only to truncate it.
MAX_CHARS = 4096
#: SIF smoothing constant (Arora et al. 2017), see ``sif_weights``.
SIF_A = 1e-4
CHAR_RANK = 50.0

_SPECIAL_RE = re.compile(r"\[[A-Za-z0-9_]+\]")  # [PAD] [UNK] [CLS] [SEP] [MASK] [unused*]
_table_lock = threading.Lock()
_tables: dict[Path, np.ndarray] = {}


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("townsquare"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_tokenizer(max_tokens: int = MAX_TOKENS) -> Tokenizer:
    """The packaged WordPiece tokenizer, unpadded (the file pads to 128) and truncating."""
    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_tokens)
    return tok


def token_id(tok: Tokenizer, token: str) -> int:
    found = tok.token_to_id(token)
    if found is None:
        raise RuntimeError(f"token {token!r} missing from the all-MiniLM-L6-v2 vocabulary")
    return found


def content_token_ids(tok: Tokenizer) -> np.ndarray:
    """Every token id except the special and ``[unused*]`` ones, ascending."""
    vocab = tok.get_vocab()
    return np.array(sorted(i for t, i in vocab.items() if not _SPECIAL_RE.fullmatch(t)), np.int64)


def token_vectors(ids: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Mean-pooled, unnormalized all-MiniLM-L6-v2 output for each token alone.

    ``[CLS] tok [SEP]`` with every position attended and pooled: exactly what
    the sentence model computes for a one-token text, before its Normalize.
    """
    import torch

    bert: Any = sentence_model()[0].auto_model
    tok = load_tokenizer()
    cls_id, sep_id = token_id(tok, "[CLS]"), token_id(tok, "[SEP]")
    out = np.empty((len(ids), bert.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for lo in range(0, len(ids), batch):
            chunk = torch.from_numpy(ids[lo : lo + batch])
            input_ids = torch.stack(
                [torch.full_like(chunk, cls_id), chunk, torch.full_like(chunk, sep_id)], dim=1
            )
            hidden = bert(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            out[lo : lo + len(chunk)] = hidden.mean(dim=1).numpy()
    return out


def pca(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Centre, then project on the top ``dim`` principal axes (float64 eigh, tiny: d x d).

    Centring removes the direction every token shares, which would otherwise
    dominate a mean of many tokens and pull all posts together.
    """
    centred = vectors.astype(np.float64) - vectors.mean(axis=0)
    cov = centred.T @ centred / len(centred)
    vals, vecs = np.linalg.eigh(cov)
    axes = vecs[:, np.argsort(vals)[::-1][: min(dim, vectors.shape[1])]]
    # eigh's signs are arbitrary; fix them so a rebuild gives the same table.
    axes *= np.where(axes[np.abs(axes).argmax(axis=0), range(axes.shape[1])] < 0, -1.0, 1.0)
    return (centred @ axes).astype(np.float32)


def sif_weights(ids: np.ndarray, first_word_id: int) -> np.ndarray:
    """SIF weights ``a / (a + p(token))``, ``p`` a Zipf law over an estimated frequency rank.

    BERT's WordPiece vocabulary lists single characters first and then words
    and word pieces roughly by corpus frequency, starting at ``the``. So a
    token's rank is its distance from ``the``; characters and punctuation,
    which are common but not ranked, count as rank ``CHAR_RANK``. Measured on
    airline tweets (benchmarks/bench_embedders.py) this beats both no weights
    and model2vec's plain id rank.
    """
    rank = np.where(ids >= first_word_id, ids - first_word_id + 1, CHAR_RANK).astype(np.float64)
    proba = (1.0 / rank) / (1.0 / rank).sum()
    return (SIF_A / (SIF_A + proba)).astype(np.float32)


def distill(tok: Tokenizer, dim: int) -> np.ndarray:
    """The full ``(vocab, dim)`` table; rows of special tokens stay zero."""
    ids = content_token_ids(tok)
    first_word = token_id(tok, "the")
    reduced = pca(token_vectors(ids), dim) * sif_weights(ids, first_word)[:, None]
    table = np.zeros((tok.get_vocab_size(), reduced.shape[1]), dtype=np.float32)
    table[ids] = reduced
    return table


def cached_table(cache_dir: Path, dim: int) -> np.ndarray:
    """Load the distilled table, distilling (and saving) it on first use in this cache."""
    weights = model_dir() / "model.safetensors"
    stamp = f"{file_sha256(weights)[:16]}-{weights.stat().st_size}"
    path = cache_dir / f"minilm-static-v{RECIPE_VERSION}-{dim}d-{stamp}.npy"
    with _table_lock:
        if path in _tables:
            return _tables[path]
        if path.is_file():
            table = np.load(path).astype(np.float32)
        else:
            table = distill(load_tokenizer(), dim)
            cache_dir.mkdir(parents=True, exist_ok=True)
            # Write then rename: a crash or a concurrent process never leaves half a file.
            fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npy.tmp")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, table.astype(np.float16))
            os.replace(tmp, path)
            table = table.astype(np.float16).astype(np.float32)  # what a later load gives
        table.flags.writeable = False
        _tables[path] = table
        return table


class StaticEmbedder(Embedder):
    """Weighted mean of distilled token vectors, L2-normalized.

    Thread-safe: the table is read-only and the tokenizer is only read after
    construction. A text with no known token embeds to the zero vector.
    """

    name = "minilm-static"

    def __init__(
        self, cache_dir: Path | None = None, dim: int = DEFAULT_DIM, max_tokens: int = MAX_TOKENS
    ) -> None:
        self._table = cached_table(cache_dir or default_cache_dir(), dim)
        self._tokenizer = load_tokenizer(max_tokens)
        self.dim = int(self._table.shape[1])

    def embed(self, texts: Sequence[str], chunk: int = 1024) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for lo in range(0, len(texts), chunk):
            part = [t[:MAX_CHARS] for t in texts[lo : lo + chunk]]
            self._embed_chunk(part, out[lo : lo + chunk])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def _embed_chunk(self, texts: list[str], out: np.ndarray) -> None:
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
        total = int(lengths.sum())
        if not total:
            return
        flat = np.fromiter((i for e in encodings for i in e.ids), np.int64, total)
        rows = self._table[flat]
        nonempty = lengths > 0
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[nonempty]
        # The sum, not the mean: the norm is divided out afterwards anyway.
        out[nonempty] = np.add.reduceat(rows, starts, axis=0)


@EMBEDDERS.register("minilm-static")
def create(cache_dir: Path | None = None, dim: int = DEFAULT_DIM) -> StaticEmbedder:
    return StaticEmbedder(cache_dir=cache_dir, dim=dim)
