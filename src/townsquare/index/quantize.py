"""Re-export: the int8 helpers live in :mod:`townsquare.quantize` (the store needs them too)."""

from townsquare.quantize import dequantize, quantize

__all__ = ["dequantize", "quantize"]
