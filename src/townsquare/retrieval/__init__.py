"""Retrieval: hybrid lexical + dense + recency search over a store."""

from townsquare.retrieval.hybrid import SORTS, Retriever, SearchHit, SearchRequest, Sort

__all__ = ["SORTS", "Retriever", "SearchHit", "SearchRequest", "Sort"]
