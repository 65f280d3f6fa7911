"""Dense ids for feature keys, and the per-window arrays indexed by them.

The detector's per-window running counts and baselines live in NumPy arrays
so that a whole bucket entering or leaving a window is a handful of
vectorized operations rather than a Python loop per feature per window, and
so that a query scores every feature of a window at C speed. Ids of
features that left every window and whose baselines decayed away are
recycled, which keeps the arrays as small as the live vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class FeatureTable:
    """``key -> id`` with ``counts[window, id]`` (int64) and ``base[window, id]`` (float64)."""

    def __init__(self, n_windows: int, capacity: int = 4096) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str | None] = []
        self._free: list[int] = []
        self.counts = np.zeros((n_windows, capacity), dtype=np.int64)
        self.base = np.zeros((n_windows, capacity), dtype=np.float64)

    @property
    def size(self) -> int:
        """Ids handed out so far (live or free): arrays are meaningful up to here."""
        return len(self.names)

    def __len__(self) -> int:
        return len(self.ids)

    def id_of(self, key: str) -> int:
        """The id of ``key``, assigning one (and growing the arrays) if it has none."""
        i = self.ids.get(key)
        if i is not None:
            return i
        if self._free:
            i = self._free.pop()
            self.names[i] = key
        else:
            i = len(self.names)
            if i >= self.counts.shape[1]:
                self._grow()
            self.names.append(key)
        self.ids[key] = i
        return i

    def ids_of(self, keys: Iterable[str]) -> np.ndarray:
        """Ids of distinct ``keys`` in order, assigning the missing ones in bulk."""
        keys = list(keys)
        found = list(map(self.ids.get, keys))
        if None in found:
            missing = [k for k, i in zip(keys, found, strict=True) if i is None]
            self._assign(missing)
            found = list(map(self.ids.__getitem__, keys))
        return np.array(found, dtype=np.intp)

    def _assign(self, keys: list[str]) -> None:
        """Give new distinct keys ids: recycled ones first, then fresh ones at the end."""
        reused = min(len(keys), len(self._free))
        for k in keys[:reused]:
            i = self._free.pop()
            self.names[i] = k
            self.ids[k] = i
        rest = keys[reused:]
        if rest:
            start = len(self.names)
            while start + len(rest) > self.counts.shape[1]:
                self._grow()
            self.names.extend(rest)
            self.ids.update(zip(rest, range(start, start + len(rest)), strict=True))

    def _grow(self) -> None:
        n_windows, cap = self.counts.shape
        counts = np.zeros((n_windows, cap * 2), dtype=np.int64)
        counts[:, :cap] = self.counts
        base = np.zeros((n_windows, cap * 2), dtype=np.float64)
        base[:, :cap] = self.base
        self.counts, self.base = counts, base

    def release(self, ids: np.ndarray) -> list[str]:
        """Forget these ids (their rows are zeroed for reuse); returns their keys."""
        gone: list[str] = []
        for i in ids.tolist():
            key = self.names[i]
            if key is None:
                continue
            del self.ids[key]
            self.names[i] = None
            self._free.append(i)
            gone.append(key)
        self.counts[:, ids] = 0
        self.base[:, ids] = 0.0
        return gone
