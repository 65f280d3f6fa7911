"""BM25 for the lexical candidates, from cached statistics (no doclist scan per search).

FTS5's own ``bm25()`` counts, on the first row of every query, how many
rows in the whole index contain each query word: a scan of the word's
entire doclist. At a million posts that is milliseconds per common word and
per query, most of a search's time, even though the query itself only
reads the newest ``limit`` matches. So the store asks FTS5 for candidate
rowids alone and scores them here with the same formula,

    score = sum over query words w the post holds of
            idf(w) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg_length))

where

- ``tf`` is the word's column-weighted frequency in the post (text 1.0,
  author 0.5, hashtags 0.8, as the store always weighted them), counted
  from ``highlight()`` markers on the rows a query returns (1 for a word
  known only from the all-words query);
- ``idf(w) = ln((N - df + 0.5) / (df + 0.5))`` as in FTS5 (floored just
  above 0), with ``N`` and ``df`` counted over the newest ``IDF_WINDOW`` rows:
  a bounded count (FTS5 seeks to the rowid bound), and rarity measured in
  the current conversation, which is what a live search wants. Cached per
  word for ``IDF_TTL_S``;
- ``length`` is the post's token count from FTS5's ``<table>_docsize``
  shadow table and ``avg_length`` comes from the index's own averages
  record (``<table>_data`` row 1): both are read, never recomputed.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

K1 = 1.2
B = 0.75
#: Column weights of posts_fts (text, author, hashtags).
WEIGHTS = (1.0, 0.5, 0.8)
MARK = "\x01"
IDF_WINDOW = 100_000
IDF_TTL_S = 30.0
_MAX_CACHED = 50_000


def varints(blob: bytes) -> list[int]:
    """SQLite's big-endian varints, as FTS5 stores sizes and averages."""
    out: list[int] = []
    value, i, n = 0, 0, len(blob)
    length = 0
    while i < n:
        byte = blob[i]
        i += 1
        length += 1
        if length == 9:  # the ninth byte carries 8 bits
            out.append((value << 8) | byte)
            value, length = 0, 0
            continue
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            out.append(value)
            value, length = 0, 0
    return out


class TermStats:
    """Cached word rarity and document lengths for one FTS5 table."""

    def __init__(self, table: str = "posts_fts") -> None:
        self.table = table
        self._idf: dict[str, tuple[float, float]] = {}
        self._avg: tuple[float, float] | None = None  # (average length, expires)
        self._lock = threading.Lock()

    def idf(self, conn: Any, words: Sequence[str], max_key: int) -> list[float]:
        """IDF of each (already quoted) FTS5 word, over the newest ``IDF_WINDOW`` rows."""
        now = time.monotonic()
        out: list[float] = []
        for word in words:
            hit = self._idf.get(word)
            if hit is not None and hit[1] > now:
                out.append(hit[0])
                continue
            low = max(0, max_key - IDF_WINDOW)
            df = conn.execute(
                f"SELECT count(*) FROM {self.table} WHERE {self.table} MATCH ? AND rowid > ?",
                (word, low),
            ).fetchone()[0]
            n = max(1, max_key - low)
            value = max(1e-6, math.log((n - df + 0.5) / (df + 0.5)))
            with self._lock:
                if len(self._idf) >= _MAX_CACHED:
                    self._idf.clear()
                self._idf[word] = (value, now + IDF_TTL_S)
            out.append(value)
        return out

    def average_length(self, conn: Any) -> float:
        """Tokens per row over all columns, from the index's averages record."""
        now = time.monotonic()
        cached = self._avg
        if cached is not None and cached[1] > now:
            return cached[0]
        row = conn.execute(f"SELECT block FROM {self.table}_data WHERE id = 1").fetchone()
        avg = 1.0
        if row is not None and row[0]:
            nums = varints(bytes(row[0]))
            if nums and nums[0] > 0:
                avg = max(1.0, sum(nums[1:]) / nums[0])
        self._avg = (avg, now + IDF_TTL_S)
        return avg

    def lengths(self, conn: Any, keys: Iterable[int]) -> dict[int, int]:
        """Token count (all columns) of each row."""
        keys = list(keys)
        out: dict[int, int] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for key, size in conn.execute(
                f"SELECT id, sz FROM {self.table}_docsize WHERE id IN ({marks})", chunk
            ):
                out[key] = sum(varints(bytes(size))) if size else 0
        return out


def weighted_tf(highlighted: Sequence[str | None]) -> float:
    """A word's weighted frequency from ``highlight()`` of each column (markers counted)."""
    tf = sum(w * (col or "").count(MARK) for w, col in zip(WEIGHTS, highlighted, strict=False))
    return tf or 1.0


def score(idfs: Sequence[float], tfs: dict[int, float], length: float, avg_length: float) -> float:
    """BM25 of a post holding query words ``i`` with weighted frequency ``tfs[i]``."""
    norm = K1 * (1 - B + B * length / avg_length)
    return sum(idfs[i] * tf * (K1 + 1) / (tf + norm) for i, tf in tfs.items())
