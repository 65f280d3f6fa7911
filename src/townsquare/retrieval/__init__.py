"""Retrieval: hybrid lexical + dense + recency search over a store."""

from townsquare.retrieval.hybrid import Retriever, SearchHit, SearchRequest

__all__ = ["Retriever", "SearchHit", "SearchRequest"]
