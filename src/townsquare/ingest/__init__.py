"""Ingest: sources in, one transaction per batch into the store."""

from townsquare.ingest.pipeline import Ingestor, IngestStats

__all__ = ["IngestStats", "Ingestor"]
