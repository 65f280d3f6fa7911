"""DenseIndex: exact top-k against a float reference, upserts, deletes, time windows, sync."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from factories import make_post
from townsquare.index import dense as dense_module
from townsquare.index.dense import BLOCK, DenseIndex
from townsquare.index.quantize import dequantize, quantize
from townsquare.model import Upsert
from townsquare.store.sqlite import SQLiteStore

DIM = 32
T0 = 1_700_000_000_000


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def exact_query(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    """A unit query whose int8 quantization is lossless, so index scores are exact."""
    q = rng.integers(-127, 128, dim).astype(np.float32)
    q[0] = 127
    return q / np.linalg.norm(q)


def filled(rng: np.random.Generator, n: int, shuffled: bool = False) -> tuple[DenseIndex, dict]:
    """An index of n rows (keys 1..n) and the float reference it should agree with."""
    index = DenseIndex(DIM)
    keys = np.arange(1, n + 1, dtype=np.int64)
    created = T0 + np.arange(n, dtype=np.int64) * 1000
    if shuffled:
        rng.shuffle(created)
    q, s = quantize(unit(rng, n))
    index.add(keys, created, q, s)
    ref = {"keys": keys, "created": created, "vecs": dequantize(q, s)}
    return index, ref


def reference(ref: dict, query: np.ndarray, k: int, lo: int | None = None, hi: int | None = None):
    mask = np.ones(len(ref["keys"]), bool)
    if lo is not None:
        mask &= ref["created"] >= lo
    if hi is not None:
        mask &= ref["created"] <= hi
    scores = ref["vecs"][mask] @ query
    order = np.argsort(-scores)[:k]
    return ref["keys"][mask][order].tolist(), scores[order]


def test_topk_matches_float_reference_across_blocks() -> None:
    rng = np.random.default_rng(1)
    index, ref = filled(rng, 3 * BLOCK + 17)
    for _ in range(5):
        query = exact_query(rng)
        got = index.search(query, 10)
        keys, scores = reference(ref, query, 10)
        assert [c.key for c in got] == keys
        np.testing.assert_allclose([c.score for c in got], scores, rtol=1e-4, atol=1e-5)


def test_scores_approximate_float_cosine_for_any_query() -> None:
    rng = np.random.default_rng(2)
    vecs = unit(rng, 500)
    index = DenseIndex(DIM)
    index.add(np.arange(500), np.zeros(500, np.int64), *quantize(vecs))
    query = unit(rng, 1)[0]
    got = index.search(query, 20)
    true = {int(i): float(vecs[i] @ query) for i in range(500)}
    for c in got:
        assert abs(c.score - true[c.key]) < 0.02
    best = sorted(true.values(), reverse=True)
    assert got[0].score > best[19] - 0.02


@pytest.mark.parametrize("shuffled", [False, True])
def test_time_window_is_inclusive_and_exact(shuffled: bool) -> None:
    rng = np.random.default_rng(3)
    index, ref = filled(rng, 4 * BLOCK + 5, shuffled=shuffled)
    lo, hi = T0 + 5000 * 1000, T0 + 7000 * 1000  # spans block boundaries
    for _ in range(3):
        query = exact_query(rng)
        got = index.search(query, 25, since_ms=lo, until_ms=hi)
        keys, _ = reference(ref, query, 25, lo, hi)
        assert [c.key for c in got] == keys
    # Inclusive bounds: a one-millisecond window holds exactly one row.
    only = index.search(exact_query(rng), 5, since_ms=T0 + 1000, until_ms=T0 + 1000)
    assert [c.key for c in only] == [int(ref["keys"][ref["created"] == T0 + 1000][0])]
    # Open-ended windows and an empty one.
    since = index.search(exact_query(rng), 10_000, since_ms=T0 + 16_000 * 1000)
    assert {c.key for c in since} == set(ref["keys"][ref["created"] >= T0 + 16_000 * 1000].tolist())
    until = index.search(exact_query(rng), 10_000, until_ms=T0 + 9000)
    assert {c.key for c in until} == set(ref["keys"][ref["created"] <= T0 + 9000].tolist())
    assert index.search(exact_query(rng), 5, since_ms=T0 - 10, until_ms=T0 - 1) == []


def test_upsert_replaces_and_remove_deletes() -> None:
    rng = np.random.default_rng(4)
    index, _ = filled(rng, 100)
    assert len(index) == 100
    target = unit(rng, 1)
    index.add(np.array([7]), np.array([T0]), *quantize(target))
    assert len(index) == 100
    hits = index.search(target[0], 3)
    assert hits[0].key == 7 and hits[0].score > 0.99
    assert [c.key for c in index.search(target[0], 1000)].count(7) == 1

    index.remove([7, 8, 12345])  # an unknown key is ignored
    assert len(index) == 98
    keys = {c.key for c in index.search(target[0], 1000)}
    assert 7 not in keys and 8 not in keys and len(keys) == 98


def test_last_row_wins_within_a_batch() -> None:
    rng = np.random.default_rng(5)
    a, b = unit(rng, 2)
    q, s = quantize(np.stack([a, b]))
    index = DenseIndex(DIM)
    index.add(np.array([1, 1]), np.array([T0, T0 + 1]), q, s)
    assert len(index) == 1
    (hit,) = index.search(b, 5)
    assert hit.key == 1 and hit.score > 0.99
    assert index.search(b, 5, since_ms=T0 + 1)[0].key == 1


def test_small_edge_cases() -> None:
    rng = np.random.default_rng(6)
    index = DenseIndex(DIM)
    assert index.search(unit(rng, 1)[0], 5) == []
    index.add(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.int8),
              np.zeros(0, np.float32))
    assert len(index) == 0
    index.add(np.array([1, 2]), np.array([T0, T0]), *quantize(unit(rng, 2)))
    assert index.search(unit(rng, 1)[0], 0) == []
    assert len(index.search(unit(rng, 1)[0], 50)) == 2
    with pytest.raises(ValueError, match="embedder"):
        index.add(np.array([3]), np.array([T0]), *quantize(unit(rng, 1, DIM + 1)))
    with pytest.raises(ValueError):
        index.search(unit(rng, 1, DIM + 1)[0], 5)


def test_compaction_keeps_results_and_frees_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dense_module, "COMPACT_MIN_DEAD", 10)
    rng = np.random.default_rng(7)
    index, ref = filled(rng, 2 * BLOCK)
    before = index.memory_bytes()
    gone = ref["keys"][: BLOCK + 100]
    index.remove(gone.tolist())
    assert index._snap.n == len(index) == 2 * BLOCK - len(gone)  # compacted
    assert index.memory_bytes() < before
    keep = ~np.isin(ref["keys"], gone)
    kept = {"keys": ref["keys"][keep], "created": ref["created"][keep], "vecs": ref["vecs"][keep]}
    query = exact_query(rng)
    assert [c.key for c in index.search(query, 10)] == reference(kept, query, 10)[0]
    lo = int(kept["created"][50])
    got = index.search(query, 10, since_ms=lo, until_ms=lo + 500_000)
    assert [c.key for c in got] == reference(kept, query, 10, lo, lo + 500_000)[0]


def test_searches_during_writes_see_whole_rows() -> None:
    """Readers run while a writer upserts and deletes; every answer is well-formed."""
    rng = np.random.default_rng(8)
    index, _ = filled(rng, 2000)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        local = np.random.default_rng(9)
        try:
            while not stop.is_set():
                hits = index.search(unit(local, 1)[0], 20, since_ms=T0)
                keys = [c.key for c in hits]
                assert len(keys) == len(set(keys)) and all(-1.01 < c.score < 1.01 for c in hits)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(60):
            keys = rng.integers(1, 5000, 300)
            index.add(keys, T0 + rng.integers(0, 10**7, 300), *quantize(unit(rng, 300)))
            index.remove(rng.integers(1, 5000, 50).tolist())
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors


_post = partial(make_post, author="a", url=None)


def test_sync_pulls_new_vectors_from_the_sqlite_store(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    store = SQLiteStore(tmp_path / "t.db")
    try:
        at = datetime(2025, 1, 1, tzinfo=UTC)
        posts = [_post(i, text=f"post {i}", when=at + timedelta(minutes=i)) for i in range(30)]
        vecs = {p.id: v for p, v in zip(posts, unit(rng, 30), strict=True)}
        store.apply("s", [Upsert(p) for p in posts], "c1", vectors=vecs)

        index = DenseIndex(DIM)
        assert index.sync(store) == 30
        assert len(index) == 30 and index.seq > 0
        assert index.sync(store) == 0  # nothing new

        # An edit re-embeds the post: same key, new vector, one more sequence number.
        new_vec = unit(rng, 1)[0]
        edited = _post(3, text="post 3, edited", when=at + timedelta(minutes=3))
        store.apply("s", [Upsert(edited)], "c2", vectors={edited.id: new_vec})
        seq = index.seq
        assert index.sync(store) == 1
        assert len(index) == 30 and index.seq > seq
        top = index.search(new_vec, 1)[0]
        assert top.score > 0.99
        assert store.posts_by_keys([top.key])[top.key].text == "post 3, edited"

        # Time window in store milliseconds.
        since = int((at + timedelta(minutes=25)).timestamp() * 1000)
        hits = index.search(new_vec, 100, since_ms=since)
        assert len(hits) == 5
    finally:
        store.close()
