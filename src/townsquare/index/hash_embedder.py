"""The ``hash`` embedder: feature hashing, no model at all.

Words, word bigrams and character trigrams are hashed (CRC-32, stable across
processes and platforms, unlike ``hash()``) into a signed, L2-normalized
vector. It knows no synonyms, so it is a weak semantic retriever; it exists
because it needs nothing: the fast tests use it, and it is an honest fallback
where no model can be installed. A text with no word characters embeds to the
zero vector, which is similar to nothing.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from townsquare.index import EMBEDDERS
from townsquare.index.embedder import Embedder

_WORD_RE = re.compile(r"\w+", re.UNICODE)

#: Relative weights of the three feature kinds: whole words carry most of the
#: meaning, bigrams add a little order, trigrams catch inflections and typos.
_W_WORD = 1.0
_W_BIGRAM = 0.5
_W_TRIGRAM = 0.25


class HashEmbedder(Embedder):
    """Signed feature hashing into ``dim`` buckets (a power of two)."""

    name = "hash"

    def __init__(self, dim: int = 256) -> None:
        if dim <= 0 or dim & (dim - 1):
            raise ValueError(f"hash embedder dim must be a power of two, not {dim}")
        self.dim = dim
        self._mask = dim - 1

    def _features(self, text: str) -> list[tuple[str, float]]:
        words = _WORD_RE.findall(text.lower())
        feats: list[tuple[str, float]] = [("w" + w, _W_WORD) for w in words]
        feats.extend(("b" + a + " " + b, _W_BIGRAM) for a, b in itertools.pairwise(words))
        for w in words:
            padded = f"<{w}>"
            if len(padded) > 4:  # a 1-2 letter word's trigrams are the word itself
                feats.extend(("c" + padded[i : i + 3], _W_TRIGRAM) for i in range(len(padded) - 2))
        return feats

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        n = len(texts)
        flat: list[int] = []
        weights: list[float] = []
        for row, text in enumerate(texts):
            base = row * self.dim
            for feat, w in self._features(text):
                h = zlib.crc32(feat.encode("utf-8"))
                flat.append(base + (h & self._mask))
                weights.append(-w if h & 0x80000000 else w)
        out = np.bincount(
            np.asarray(flat, dtype=np.int64),
            weights=np.asarray(weights, dtype=np.float64),
            minlength=n * self.dim,
        ).reshape(n, self.dim).astype(np.float64, copy=False)  # int64 when no features
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out.astype(np.float32)


@EMBEDDERS.register("hash")
def create(cache_dir: Path | None = None, dim: int = 256) -> HashEmbedder:
    """``cache_dir`` is accepted (and unused) so every embedder is created alike."""
    return HashEmbedder(dim=dim)
