"""Stores, registered by name, opened from a URL.

``open_store("")`` or ``open_store("sqlite:///path/to.db")`` gives the embedded
SQLite store; ``open_store("postgresql://…")`` the PostgreSQL one.
"""

from __future__ import annotations

from pathlib import Path

from townsquare.registry import Registry
from townsquare.store.base import (
    AccountsStore,
    ApiKeyRecord,
    ApplyResult,
    Candidate,
    Conversation,
    PeopleStore,
    PostsStore,
    QuarantineRecord,
    Retention,
    RetentionResult,
    SearchFilters,
    Store,
    StoredMessage,
    StoredVectors,
    StoredWatch,
    UsageRow,
    WatchesStore,
)

STORES: Registry[Store] = Registry(
    "store",
    "townsquare.stores",
    {
        "sqlite": "townsquare.store.sqlite",
        "postgresql": "townsquare.store.postgres",
    },
)


def open_store(url: str | None, home: Path, read_only: bool = False) -> Store:
    """Open the store a URL names; empty means ``<home>/townsquare.db``."""
    if not url:
        return STORES.create("sqlite", home / "townsquare.db", read_only=read_only)
    scheme, sep, rest = url.partition("://")
    if not sep:
        # A bare path is a SQLite file.
        return STORES.create("sqlite", Path(url), read_only=read_only)
    if scheme in ("postgres", "postgresql"):
        return STORES.create("postgresql", url, read_only=read_only)
    if scheme == "sqlite":
        return STORES.create("sqlite", Path(rest), read_only=read_only)
    return STORES.create(scheme, url, read_only=read_only)


__all__ = [
    "STORES",
    "AccountsStore",
    "ApiKeyRecord",
    "ApplyResult",
    "Candidate",
    "Conversation",
    "PeopleStore",
    "PostsStore",
    "QuarantineRecord",
    "Retention",
    "RetentionResult",
    "SearchFilters",
    "Store",
    "StoredMessage",
    "StoredVectors",
    "StoredWatch",
    "UsageRow",
    "WatchesStore",
    "open_store",
]
