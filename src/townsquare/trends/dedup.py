"""Folding reposts and near-duplicates, so a story counts what was said, not echoes.

Two passes. Texts equal after normalization (``RT @x:`` prefixes, URLs,
mentions, case, accents and punctuation removed) fold at once. The rest go
through MinHash over word 3-shingles with banded locality-sensitive hashing;
pairs that share a band are confirmed with their exact Jaccard similarity.
Hashes are CRC32, not Python's salted ``hash()``, so groups are the same in
every process.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

from townsquare.trends.features import fold

_RT_RE = re.compile(r"^\s*(?:RT|rt)\s+@[\w.\-]+:?\s*")
_STRIP_RE = re.compile(r"https?://\S+|www\.\S+|@[\w.\-]+|[^\w\s]|_", re.UNICODE)

_PRIME = (1 << 31) - 1
_HASHES = 32
_BANDS = 8
_ROWS = _HASHES // _BANDS
_rng = np.random.default_rng(20150224)
_A = _rng.integers(1, _PRIME, _HASHES, dtype=np.int64)
_B = _rng.integers(0, _PRIME, _HASHES, dtype=np.int64)


def normalize(text: str) -> str:
    """The text with what reposting changes removed (``RT @x:``, links, mentions, case)."""
    text = _RT_RE.sub("", text)
    return " ".join(fold(_STRIP_RE.sub(" ", text)).split())


def shingles(norm: str) -> frozenset[int]:
    """CRC32 hashes of word 3-grams (single words for very short texts)."""
    words = norm.split()
    if len(words) < 3:
        grams = words
    else:
        grams = [" ".join(words[i : i + 3]) for i in range(len(words) - 2)]
    return frozenset(zlib.crc32(g.encode()) for g in grams)


def minhash(sh: frozenset[int]) -> np.ndarray:
    """A 32-value MinHash signature; equal values estimate Jaccard similarity."""
    if not sh:
        return np.full(_HASHES, _PRIME, dtype=np.int64)
    x = np.fromiter(sh, dtype=np.int64, count=len(sh)) % _PRIME
    return np.asarray(((_A[:, None] * x[None, :] + _B[:, None]) % _PRIME).min(axis=1))


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller index (earlier post) stays the root: the original, not the echo.
            if rb < ra:
                ra, rb = rb, ra
            self.parent[rb] = ra


def duplicate_groups(
    norms: Sequence[str],
    shingle_sets: Sequence[frozenset[int]],
    signatures: Sequence[np.ndarray],
    threshold: float = 0.7,
) -> list[int]:
    """For each text, the index of the first text of its near-duplicate group.

    Inputs are parallel sequences (see :func:`normalize`, :func:`shingles`,
    :func:`minhash`), ideally in time order so the root is the earliest post.
    """
    n = len(norms)
    uf = _UnionFind(n)
    first: dict[str, int] = {}
    for i, norm in enumerate(norms):
        j = first.setdefault(norm, i)
        if j != i:
            uf.union(j, i)
    roots = list(first.values())  # one text per exact group goes through LSH
    if len(roots) > 1:
        sig = np.stack([signatures[i] for i in roots])
        for band in range(_BANDS):
            block = sig[:, band * _ROWS : (band + 1) * _ROWS]
            seen: dict[bytes, int] = {}
            for row, i in enumerate(roots):
                key = block[row].tobytes()
                j = seen.setdefault(key, i)
                if (
                    j != i
                    and uf.find(i) != uf.find(j)
                    and jaccard(shingle_sets[i], shingle_sets[j]) >= threshold
                ):
                    uf.union(i, j)
    return [uf.find(i) for i in range(n)]
