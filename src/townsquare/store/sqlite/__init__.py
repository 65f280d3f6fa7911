"""The embedded SQLite store (registered as ``sqlite``)."""

from townsquare.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
