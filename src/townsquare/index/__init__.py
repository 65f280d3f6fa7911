"""Embedders (registered by name) and the in-process dense vector index."""

from __future__ import annotations

from townsquare.index.embedder import Embedder
from townsquare.quantize import dequantize, quantize
from townsquare.registry import Registry

EMBEDDERS: Registry[Embedder] = Registry(
    "embedder",
    "townsquare.embedders",
    {
        "minilm-static": "townsquare.index.static_embedder",
        "minilm": "townsquare.index.minilm",
        "hash": "townsquare.index.hash_embedder",
        "use-multilingual": "townsquare.index.use_embedder",
        "use-static": "townsquare.index.use_embedder",
    },
)

__all__ = ["EMBEDDERS", "Embedder", "dequantize", "quantize"]
