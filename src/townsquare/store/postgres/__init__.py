"""The PostgreSQL store (registered as ``postgresql``), for several writers and replicas."""

from townsquare.store.postgres.partitions import RetentionResult
from townsquare.store.postgres.store import PostgresStore

__all__ = ["PostgresStore", "RetentionResult"]
