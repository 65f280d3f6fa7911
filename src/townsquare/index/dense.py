"""The in-process dense index: exact (brute-force) search over int8 rows.

Rows are the store's quantized vectors (:mod:`townsquare.quantize`),
appended in arrival order into preallocated arrays that double when full.
Posts arrive roughly in time order, so rows are grouped in blocks of
``BLOCK`` and each block remembers its min/max ``created_ms``: a time-filtered
query scans only the blocks that overlap its window, and a narrow window over
a large index costs what the window holds. The dot products run in int8 with
int32 accumulation (SimSIMD), reading a quarter of the bytes a float32 scan
would; numpy's int8 -> float32 conversion was the bottleneck (measured in
``benchmarks/bench_dense.py``).

Concurrency: one writer at a time (a lock); readers take no lock. A row is
never modified after it is written: an upsert appends a new row and marks the
old one dead *at a version*. Every search reads one immutable ``_Snapshot``
(row count, arrays, version) and treats a row as live iff it was written
before the snapshot and died after it, so a search sees each mutation wholly
or not at all, whatever the writer does meanwhile. Growth and compaction
build new arrays; older snapshots keep the old ones alive until they finish.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import simsimd

from townsquare.quantize import quantize
from townsquare.store.base import Candidate, Store

BLOCK = 4096
ALIVE = np.iinfo(np.int64).max
_NO_TIME_MIN = np.iinfo(np.int64).min
#: Compact when more than this fraction of the rows are dead.
COMPACT_FRACTION = 0.25
COMPACT_MIN_DEAD = 4096


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class _Snapshot:
    n: int  # rows [0, n) are visible to this snapshot
    version: int  # rows with dead[i] <= version are deleted for it
    vectors: np.ndarray  # (capacity, dim) int8
    scales: np.ndarray  # (capacity,) float32
    created: np.ndarray  # (capacity,) int64 ms
    keys: np.ndarray  # (capacity,) int64
    dead: np.ndarray  # (capacity,) int64: version the row died at, ALIVE if live
    block_min: np.ndarray  # (capacity // BLOCK + 1,) int64
    block_max: np.ndarray


def _empty(dim: int, capacity: int) -> _Snapshot:
    blocks = capacity // BLOCK + 1
    return _Snapshot(
        n=0,
        version=0,
        vectors=np.empty((capacity, dim), dtype=np.int8),
        scales=np.empty(capacity, dtype=np.float32),
        created=np.empty(capacity, dtype=np.int64),
        keys=np.empty(capacity, dtype=np.int64),
        dead=np.full(capacity, ALIVE, dtype=np.int64),
        block_min=np.full(blocks, np.iinfo(np.int64).max, dtype=np.int64),
        block_max=np.full(blocks, _NO_TIME_MIN, dtype=np.int64),
    )


class DenseIndex:
    """Exact top-k cosine search over quantized unit vectors, with a time window."""

    def __init__(self, dim: int, threads: int | None = None) -> None:
        self.dim = dim
        #: The highest store sequence number applied (``sync`` resumes after it).
        self.seq = 0
        #: Threads one scan uses; all cores by default (one query's latency
        #: halves on 2 cores; concurrent queries simply share them).
        self.threads = threads or _cores()
        self._write = threading.Lock()
        self._slot: dict[int, int] = {}
        self._dead = 0
        self._snap = _empty(dim, 0)

    def __len__(self) -> int:
        return len(self._slot)

    # -- writes ---------------------------------------------------------------

    def add(
        self,
        keys: np.ndarray,
        created_ms: np.ndarray,
        vectors: np.ndarray,
        scales: np.ndarray,
        seqs: np.ndarray | None = None,
    ) -> None:
        """Insert or replace rows by key (the last one wins within a batch)."""
        keys = np.asarray(keys, dtype=np.int64).ravel()
        m = len(keys)
        if m:
            vectors = np.asarray(vectors)
            if vectors.dtype != np.int8 or vectors.shape != (m, self.dim):
                raise ValueError(
                    f"expected int8 vectors of shape ({m}, {self.dim}), got "
                    f"{vectors.dtype} {vectors.shape}: was the embedder changed?"
                )
            created_ms = np.asarray(created_ms, dtype=np.int64).ravel()
            scales = np.asarray(scales, dtype=np.float32).ravel()
            if len(created_ms) != m or len(scales) != m:
                raise ValueError("keys, created_ms and scales must have the same length")
            # Keep only each key's last row.
            _, first_in_reversed = np.unique(keys[::-1], return_index=True)
            keep = np.sort(m - 1 - first_in_reversed)
            if len(keep) < m:
                keys, created_ms, vectors, scales = (
                    keys[keep], created_ms[keep], vectors[keep], scales[keep]
                )
        with self._write:
            if len(keys):
                self._append(keys, created_ms, vectors, scales)
            if seqs is not None and len(seqs):
                self.seq = max(self.seq, int(np.max(seqs)))

    def _append(
        self, keys: np.ndarray, created: np.ndarray, vectors: np.ndarray, scales: np.ndarray
    ) -> None:
        s = self._grown(self._snap, self._snap.n + len(keys))
        n, m, version = s.n, len(keys), s.version + 1
        end = n + m
        s.vectors[n:end] = vectors
        s.scales[n:end] = scales
        s.created[n:end] = created
        s.keys[n:end] = keys
        s.dead[n:end] = ALIVE
        for b in range(n // BLOCK, (end - 1) // BLOCK + 1):
            lo, hi = max(b * BLOCK, n), min((b + 1) * BLOCK, end)
            part = s.created[lo:hi]
            s.block_min[b] = min(s.block_min[b], part.min())
            s.block_max[b] = max(s.block_max[b], part.max())
        slot = self._slot
        for i, key in enumerate(keys.tolist()):
            old = slot.get(key)
            if old is not None:
                s.dead[old] = version  # older snapshots still see it live
                self._dead += 1
            slot[key] = n + i
        self._publish(s, end, version)

    def remove(self, keys: Iterable[int]) -> None:
        """Delete rows by key; unknown keys are ignored."""
        with self._write:
            s = self._snap
            version = s.version + 1
            for key in keys:
                old = self._slot.pop(int(key), None)
                if old is not None:
                    s.dead[old] = version
                    self._dead += 1
            self._publish(s, s.n, version)

    def _grown(self, s: _Snapshot, need: int) -> _Snapshot:
        """``s`` itself if it has room for ``need`` rows, else a copy with doubled capacity."""
        capacity = len(s.keys)
        if need <= capacity:
            return s
        new = _empty(self.dim, max(need, 2 * capacity, 1024))
        n = s.n
        new.vectors[:n] = s.vectors[:n]
        new.scales[:n] = s.scales[:n]
        new.created[:n] = s.created[:n]
        new.keys[:n] = s.keys[:n]
        new.dead[:n] = s.dead[:n]
        blocks = len(s.block_min)
        new.block_min[:blocks] = s.block_min
        new.block_max[:blocks] = s.block_max
        return _Snapshot(n, s.version, new.vectors, new.scales, new.created, new.keys,
                         new.dead, new.block_min, new.block_max)

    def _publish(self, s: _Snapshot, n: int, version: int) -> None:
        self._snap = _Snapshot(n, version, s.vectors, s.scales, s.created, s.keys, s.dead,
                               s.block_min, s.block_max)
        if self._dead >= COMPACT_MIN_DEAD and self._dead > COMPACT_FRACTION * n:
            self._compact()

    def _compact(self) -> None:
        """Rewrite the live rows into fresh arrays (readers keep the old ones)."""
        s = self._snap
        live = np.flatnonzero(s.dead[: s.n] == ALIVE)
        new = _empty(self.dim, len(live) + len(live) // 4 + 1024)
        m = len(live)
        new.vectors[:m] = s.vectors[live]
        new.scales[:m] = s.scales[live]
        new.created[:m] = s.created[live]
        new.keys[:m] = s.keys[live]
        for b in range(0, (m + BLOCK - 1) // BLOCK):
            part = new.created[b * BLOCK : min((b + 1) * BLOCK, m)]
            new.block_min[b], new.block_max[b] = part.min(), part.max()
        self._slot = dict(zip(new.keys[:m].tolist(), range(m), strict=True))
        self._dead = 0
        self._snap = _Snapshot(m, s.version + 1, new.vectors, new.scales, new.created,
                               new.keys, new.dead, new.block_min, new.block_max)

    def sync(self, store: Store) -> int:
        """Apply every vector the store wrote after ``self.seq``; return how many."""
        total = 0
        while True:
            batch = store.vectors_since(self.seq)
            if not len(batch.keys) or int(batch.seqs.max()) <= self.seq:
                return total
            self.add(batch.keys, batch.created_ms, batch.vectors, batch.scales, batch.seqs)
            total += len(batch.keys)

    # -- reads ----------------------------------------------------------------

    def search(
        self,
        query: np.ndarray,
        k: int,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> list[Candidate]:
        """The ``k`` live rows most similar to ``query``, best first (score ~ cosine).

        ``since_ms`` and ``until_ms`` are inclusive bounds on ``created_ms``.
        """
        s = self._snap
        if k <= 0 or s.n == 0:
            return []
        q8, qscale = quantize(np.asarray(query, dtype=np.float32).reshape(1, -1))
        if q8.shape[1] != self.dim:
            raise ValueError(f"query has {q8.shape[1]} dims, the index {self.dim}")
        windowed = since_ms is not None or until_ms is not None
        lo_ms = _NO_TIME_MIN if since_ms is None else int(since_ms)
        hi_ms = ALIVE if until_ms is None else int(until_ms)
        best_scores: list[np.ndarray] = []
        best_slots: list[np.ndarray] = []
        for lo, hi in self._ranges(s, lo_ms, hi_ms) if windowed else [(0, s.n)]:
            dots = np.asarray(
                simsimd.cdist(q8, s.vectors[lo:hi], metric="dot", threads=self.threads)
            )[0]
            scores = (dots * s.scales[lo:hi]).astype(np.float32) * np.float32(qscale[0])
            ok = s.dead[lo:hi] > s.version
            if windowed:
                created = s.created[lo:hi]
                ok &= (created >= lo_ms) & (created <= hi_ms)
            idx = np.flatnonzero(ok)
            if len(idx) > k:
                idx = idx[np.argpartition(-scores[idx], k - 1)[:k]]
            best_scores.append(scores[idx])
            best_slots.append(idx + lo)
        if not best_scores:
            return []
        scores = np.concatenate(best_scores)
        slots = np.concatenate(best_slots)
        order = np.argsort(-scores, kind="stable")[:k]
        return [
            Candidate(key=int(key), score=float(score))
            for key, score in zip(s.keys[slots[order]].tolist(), scores[order].tolist(),
                                  strict=True)
        ]

    @staticmethod
    def _ranges(s: _Snapshot, lo_ms: int, hi_ms: int) -> list[tuple[int, int]]:
        """Row ranges of the consecutive blocks whose time span meets the window."""
        blocks = (s.n + BLOCK - 1) // BLOCK
        hit = (s.block_max[:blocks] >= lo_ms) & (s.block_min[:blocks] <= hi_ms)
        if not hit.any():
            return []
        edges = np.flatnonzero(np.diff(np.concatenate(([0], hit.view(np.int8), [0]))))
        return [
            (int(a) * BLOCK, min(int(b) * BLOCK, s.n))
            for a, b in zip(edges[::2], edges[1::2], strict=True)
        ]

    def memory_bytes(self) -> int:
        """Bytes held: the arrays (allocated capacity) plus an estimate for the key map."""
        s = self._snap
        arrays = sum(
            a.nbytes
            for a in (s.vectors, s.scales, s.created, s.keys, s.dead, s.block_min, s.block_max)
        )
        # Each entry owns two int objects (~32 bytes each) beyond the table itself.
        return arrays + sys.getsizeof(self._slot) + 64 * len(self._slot)
