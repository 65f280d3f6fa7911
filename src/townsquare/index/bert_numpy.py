"""A BERT encoder forward pass in numpy: no deep-learning framework needed.

The default embedder's token table is distilled by running every vocabulary
token through all-MiniLM-L6-v2 once (see ``distill.py``). That needs only a
forward pass over short, unpadded inputs, so instead of making torch a
dependency of every install, this module implements exactly what
``transformers``' ``BertModel`` computes at inference (post-LN encoder layers:
self-attention, residual + LayerNorm, GELU feed-forward, residual + LayerNorm)
followed by the sentence model's mean pooling, reading the same safetensors
file. ``tests/test_embedders.py`` compares it against the torch path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

# float32 erf as a rational function on [-4, 4] (the approximation Eigen and
# XLA use; max abs error ~4e-7), so GELU is the exact erf form BERT uses.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)
#: Rows per elementwise pass: keeps the GELU temporaries in the CPU cache.
_ROWS = 256


def erf(x: np.ndarray) -> np.ndarray:
    z = np.clip(x, -4.0, 4.0)
    z2 = z * z
    p = np.full_like(z, _ERF_P[0])
    for a in _ERF_P[1:]:
        p *= z2
        p += a
    p *= z
    q = np.full_like(z, _ERF_Q[0])
    for b in _ERF_Q[1:]:
        q *= z2
        q += b
    p /= q
    return p


def gelu_(x: np.ndarray) -> np.ndarray:
    """In place: ``x * (1 + erf(x / sqrt 2)) / 2``, a cache-sized block of rows at a time."""
    for lo in range(0, len(x), _ROWS):
        block = x[lo : lo + _ROWS]
        e = erf(block * np.float32(1 / np.sqrt(2)))
        e += 1.0
        e *= 0.5
        block *= e
    return x


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    centred /= np.sqrt(var + eps)
    centred *= weight
    centred += bias
    return centred


@dataclass(frozen=True)
class _Layer:
    qkv_w: np.ndarray  # (hidden, 3 * hidden), transposed for x @ w
    qkv_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    ln1_w: np.ndarray
    ln1_b: np.ndarray
    up_w: np.ndarray
    up_b: np.ndarray
    down_w: np.ndarray
    down_b: np.ndarray
    ln2_w: np.ndarray
    ln2_b: np.ndarray


class NumpyBert:
    """``BertModel`` inference (absolute positions, no padding) plus mean pooling."""

    def __init__(self, model_dir: Path) -> None:
        config = json.loads((model_dir / "config.json").read_text())
        if config.get("hidden_act", "gelu") != "gelu" or config.get(
            "position_embedding_type", "absolute"
        ) != "absolute":
            raise ValueError(f"unsupported BERT variant in {model_dir}")
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        weights = load_file(str(model_dir / "model.safetensors"))
        # Some exports prefix every name with "bert.".
        w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in weights.items()}
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            att = p + "attention."
            self.layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(np.concatenate(
                        [w[att + f"self.{n}.weight"] for n in ("query", "key", "value")]
                    ).T),
                    qkv_b=np.concatenate(
                        [w[att + f"self.{n}.bias"] for n in ("query", "key", "value")]
                    ),
                    out_w=np.ascontiguousarray(w[att + "output.dense.weight"].T),
                    out_b=w[att + "output.dense.bias"],
                    ln1_w=w[att + "output.LayerNorm.weight"],
                    ln1_b=w[att + "output.LayerNorm.bias"],
                    up_w=np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
                    up_b=w[p + "intermediate.dense.bias"],
                    down_w=np.ascontiguousarray(w[p + "output.dense.weight"].T),
                    down_b=w[p + "output.dense.bias"],
                    ln2_w=w[p + "output.LayerNorm.weight"],
                    ln2_b=w[p + "output.LayerNorm.bias"],
                )
            )

    def hidden_states(self, input_ids: np.ndarray) -> np.ndarray:
        """Last hidden states ``(batch, seq, hidden)`` for unpadded ``(batch, seq)`` ids."""
        batch, seq = input_ids.shape
        x = self.word[input_ids] + self.position[:seq] + self.token_type[0]
        x = layer_norm(x.reshape(batch * seq, self.hidden), *self.emb_ln, self.eps)
        head_dim = self.hidden // self.heads
        scale = np.float32(1.0 / np.sqrt(head_dim))
        for layer in self.layers:
            qkv = x @ layer.qkv_w
            qkv += layer.qkv_b
            # (3, batch, heads, seq, head_dim)
            q, k, v = qkv.reshape(batch, seq, 3, self.heads, head_dim).transpose(2, 0, 3, 1, 4)
            scores = (q * scale) @ k.transpose(0, 1, 3, 2)
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * seq, self.hidden)
            att = ctx @ layer.out_w
            att += layer.out_b
            att += x
            x = layer_norm(att, layer.ln1_w, layer.ln1_b, self.eps)
            up = x @ layer.up_w
            up += layer.up_b
            down = gelu_(up) @ layer.down_w
            down += layer.down_b
            down += x
            x = layer_norm(down, layer.ln2_w, layer.ln2_b, self.eps)
        return x.reshape(batch, seq, self.hidden)

    def mean_pooled(self, input_ids: np.ndarray) -> np.ndarray:
        """The sentence model's output before its Normalize: the mean over all positions."""
        return self.hidden_states(input_ids).mean(axis=1)
