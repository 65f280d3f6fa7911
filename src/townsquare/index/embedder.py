"""The Embedder interface: texts in, L2-normalized float32 vectors out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np


class Embedder(ABC):
    """Maps texts to unit vectors so that a dot product is cosine similarity.

    ``name`` is the registry name; ``dim`` the vector width. Vectors computed
    by two embedders are not comparable, so the store remembers which one
    wrote its vectors and refuses to mix them.
    """

    name: str
    dim: int
    #: Cosine below which a dense neighbour is not considered relevant at all
    #: (dense search always returns *something*; this keeps noise out of answers).
    min_similarity: float = 0.2

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape ``(len(texts), dim)``, dtype float32, rows unit-norm."""

    def embed_query(self, text: str) -> np.ndarray:
        """One query vector; embedders with asymmetric query encoding override this."""
        return self.embed([text])[0]
