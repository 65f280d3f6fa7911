"""Ingest: sources in, admission checks, one transaction per batch into the store."""

from townsquare.ingest.admission import Limits
from townsquare.ingest.pipeline import Ingestor, IngestStats

__all__ = ["IngestStats", "Ingestor", "Limits"]
