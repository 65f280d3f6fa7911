"""The Store interface: the only thing above storage that knows storage exists.

Two implementations are registered: ``sqlite`` (embedded default: one file,
WAL mode, a single writer and read-only readers) and ``postgresql`` (for
several replicas). Everything above (ingest, retrieval, answers, service,
trends) talks to this interface and never to SQL.

Posts carry an integer ``key`` inside the store (SQLite rowid, PostgreSQL
identity) that the dense index uses to align vectors with rows; the public
identifier remains the string ``Post.id``.

The contract is a few narrow interfaces, each with one job, and ``Store``
is all of them: :class:`PostsStore` (ingest, reads, vectors),
:class:`PeopleStore` (the author directory), :class:`AccountsStore` (API
keys, usage, conversations), :class:`WatchesStore` (standing queries) and
:class:`Retention`. A caller that needs one part names that part. What not
every engine can do is declared here too, as a method with a default and a
flag saying whether it works (``Retention.drops_partitions``): nothing above
the store asks an object what attributes it happens to have.

Writes are idempotent: ``apply`` upserts by post id, so replaying any prefix
of a stream leaves the store unchanged, and it saves the stream's cursor in
the same transaction as the events that cursor follows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

import numpy as np

from townsquare.model import Event, Post
from townsquare.store.people import Author
from townsquare.store.records import (
    ApiKeyRecord,
    ApplyResult,
    Candidate,
    Conversation,
    ConversationSummary,
    QuarantineRecord,
    Related,
    RetentionResult,
    SearchFilters,
    StoredMessage,
    StoredVectors,
    StoredWatch,
    UsageRow,
    domain_matches,
    normalize_domain,
    url_host,
)


class PostsStore(ABC):
    """Posts in, posts out: the ingest transaction, reads, full text and vectors."""

    @abstractmethod
    def apply(
        self,
        stream_key: str,
        events: Sequence[Event],
        cursor: str | None,
        vectors: Mapping[str, np.ndarray] | None = None,
        staged: Callable[[], None] | None = None,
    ) -> ApplyResult:
        """Apply events and save ``cursor`` for ``stream_key`` in one transaction.

        ``vectors`` maps post id -> unit float32 vector for posts in ``events``
        (the embedder ran before the write, outside the transaction).

        ``staged``, if given, is called at most once from the writing thread
        when what is left of the write no longer needs the interpreter (native
        index building, the commit). The ingest pipeline parses the next batch
        from then on: parsing holds the GIL, so overlapping it with a store's
        per-row Python work only makes each wait on the other. A store that
        never calls it is still correct; the pipeline then waits for the end.
        """

    def refused_record(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised by :meth:`apply`, came from a value in the events
        (a record this engine can never store: the pipeline isolates and
        quarantines it) rather than from the engine itself (locked, down, full:
        the batch must be retried whole, later). Engines add their own data
        errors; anything not listed is an engine failure."""
        return isinstance(exc, UnicodeError | ValueError | TypeError | OverflowError
                          | RecursionError)

    @abstractmethod
    def get_cursor(self, stream_key: str) -> str | None: ...

    @abstractmethod
    def cursors(self) -> dict[str, str]:
        """Every saved cursor by stream key (for status pages)."""

    @abstractmethod
    def set_embedder_name(self, name: str, dim: int) -> None:
        """Record which embedder writes vectors; refuse (``ValueError``) to mix two."""

    @abstractmethod
    def get_post(self, post_id: str) -> Post | None: ...

    @abstractmethod
    def posts_by_keys(
        self, keys: Sequence[int], filters: SearchFilters | None = None
    ) -> dict[int, Post]:
        """Hydrate keys; those deleted or not passing ``filters`` are absent."""

    @abstractmethod
    def lexical(self, query: str, filters: SearchFilters, limit: int) -> list[Candidate]:
        """Full-text candidates, best first. ``query`` is user text: the store escapes it."""

    @abstractmethod
    def recent(self, filters: SearchFilters, limit: int) -> list[Candidate]:
        """Newest posts passing ``filters``, newest first (score = created epoch seconds)."""

    @abstractmethod
    def last_key(self) -> int:
        """The highest post key stored (0 when empty): where a follower of new rows starts."""

    @abstractmethod
    def iter_posts(
        self, since: datetime | None = None, after_key: int = 0, batch: int = 1000
    ) -> Iterator[tuple[int, Post]]:
        """Every stored post with key > ``after_key`` in key order (rebuilds, trends)."""

    @abstractmethod
    def vectors_since(self, seq: int, limit: int = 100_000) -> StoredVectors:
        """Vectors written with a sequence number above ``seq``, in seq order."""

    @abstractmethod
    def embedder_name(self) -> str | None:
        """The embedder whose vectors this store holds (None until the first vector)."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counts per source, newest post time per source, quarantine size, index sizes."""

    @abstractmethod
    def quarantined(self, limit: int = 50) -> list[QuarantineRecord]: ...

    @abstractmethod
    def related_posts(self, post_id: str, kind: Related, limit: int = 50) -> list[Post]:
        """Stored replies to, or quotes of, a post; oldest first."""



class PeopleStore(ABC):
    """The author directory, kept in the ingest transaction, read by name resolution."""

    @abstractmethod
    def get_author(self, key: str) -> Author | None:
        """An account by its id, or by handle (case-insensitive, ``@`` optional)."""

    @abstractmethod
    def find_authors(self, words: Sequence[str], limit: int = 20) -> list[tuple[Author, int]]:
        """Accounts with any of ``words`` (folded) in their handle or display name, and how
        many of them matched; most matched first, then most posts."""

    @abstractmethod
    def authors_to_look_up(self, source: str, limit: int, retry_before: datetime) -> list[str]:
        """Account ids of ``source`` known only by id, not looked up since ``retry_before``
        (most recently active first): work for the identity lookup."""

    @abstractmethod
    def mark_looked_up(self, ids: Sequence[str], at: datetime) -> None:
        """The lookup tried these (found or not): wait before trying again."""


class AccountsStore(ABC):
    """The service's accounts: API keys, the usage ledger, conversations."""

    @abstractmethod
    def create_api_key(self, name: str, tier: str, prefix: str, key_hash: str) -> ApiKeyRecord: ...

    @abstractmethod
    def api_keys_by_prefix(self, prefix: str) -> list[ApiKeyRecord]: ...

    @abstractmethod
    def list_api_keys(self) -> list[ApiKeyRecord]: ...

    @abstractmethod
    def revoke_api_key(self, name_or_prefix: str) -> bool: ...

    @abstractmethod
    def record_usage(
        self,
        key_id: int | None,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        route: str,
        at: datetime | None = None,
    ) -> None: ...

    @abstractmethod
    def usage_report(self, key_id: int | None = None, month: str | None = None) -> list[UsageRow]:
        """Usage grouped by key and model; ``month`` is ``YYYY-MM``."""

    @abstractmethod
    def tokens_used(self, key_id: int, since: datetime) -> int:
        """Prompt + completion tokens a key used since a time (monthly quota)."""

    @abstractmethod
    def create_conversation(self, owner: str | None, mode: str) -> Conversation: ...

    @abstractmethod
    def get_conversation(self, conv_id: str, owner: str | None) -> Conversation | None:
        """The conversation with its messages, or None if missing *or owned by someone else*."""

    @abstractmethod
    def add_message(
        self, conv_id: str, role: str, content: str, meta: dict[str, Any] | None = None
    ) -> None: ...

    @abstractmethod
    def list_conversations(
        self, owner: str | None, limit: int = 50, before: datetime | None = None
    ) -> list[ConversationSummary]:
        """``owner``'s conversations, most recently active first (``before``: older pages)."""

    @abstractmethod
    def rename_conversation(self, conv_id: str, owner: str | None, title: str | None) -> bool:
        """Set (None: clear) the title; False if missing *or owned by someone else*."""

    @abstractmethod
    def delete_conversation(self, conv_id: str, owner: str | None) -> bool:
        """Delete it and its messages; False if missing *or owned by someone else*."""


class WatchesStore(ABC):
    """Standing queries, shared by every process on the store (replicas see the same).

    The store keeps each watch's definition as an opaque ``spec``; what a
    watch means (matching, delivery) is :mod:`townsquare.watches`'s. Items
    (a post, a story) reported for a watch are *claimed*: the first claim of
    an item wins, so a webhook goes out once even when several replicas match.
    """

    @abstractmethod
    def add_watch(self, watch: StoredWatch) -> bool:
        """Save a new watch; False (and nothing changed) if its id is taken."""

    @abstractmethod
    def watches(self, owner: int | None = None) -> list[StoredWatch]:
        """Every watch (or ``owner``'s), oldest first."""

    @abstractmethod
    def get_watch(self, watch_id: str, owner: int) -> StoredWatch | None:
        """The watch, or None if missing *or owned by someone else*."""

    @abstractmethod
    def delete_watch(self, watch_id: str, owner: int) -> bool:
        """Delete it and its claims; False if missing *or owned by someone else*."""

    @abstractmethod
    def set_watch_secret(self, watch_id: str, owner: int, secret: str) -> bool:
        """Replace its signing secret; False if missing *or owned by someone else*."""

    @abstractmethod
    def claim_watch_items(
        self, claims: Sequence[tuple[str, str]], at: datetime | None = None
    ) -> list[tuple[str, str]]:
        """Record (watch id, item) pairs as reported; return those not claimed before."""

    @abstractmethod
    def watch_claims(self, watch_ids: Sequence[str], prefix: str = "") -> set[tuple[str, str]]:
        """The (watch id, item) pairs claimed for these watches, items starting with ``prefix``."""

    @abstractmethod
    def forget_watch_claims(self, before: datetime) -> int:
        """Drop claims older than ``before`` (their items cannot come back); how many."""


class Retention:
    """Dropping old posts whole. Only some engines can: ``drops_partitions`` says."""

    #: Whether :meth:`drop_partitions_before` works on this store.
    drops_partitions: ClassVar[bool] = False

    def drop_partitions_before(self, cutoff: datetime, dry_run: bool = False) -> RetentionResult:
        """Drop whole day partitions older than ``cutoff`` and forget their posts."""
        raise NotImplementedError(f"{type(self).__name__} keeps no day partitions")


class Store(PostsStore, PeopleStore, AccountsStore, WatchesStore, Retention):
    """Posts, their index, cursors, quarantine, people, accounts and watches.

    Implementations must be safe to call from several threads: one writer at
    a time (they serialize writes themselves), any number of readers.
    """

    #: Registry name, e.g. ``"sqlite"``.
    kind: str = ""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "AccountsStore", "ApiKeyRecord", "ApplyResult", "Author", "Candidate", "Conversation",
    "ConversationSummary", "PeopleStore", "PostsStore", "QuarantineRecord", "Related",
    "Retention", "RetentionResult", "SearchFilters", "Store", "StoredMessage", "StoredVectors",
    "StoredWatch", "UsageRow", "WatchesStore", "domain_matches", "normalize_domain", "url_host",
]
