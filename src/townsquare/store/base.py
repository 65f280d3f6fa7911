"""The Store interface: the only thing above storage that knows storage exists.

Two implementations are registered: ``sqlite`` (embedded default: one file,
WAL mode, a single writer and read-only readers) and ``postgresql`` (for
several replicas). Everything above (ingest, retrieval, answers, service,
trends) talks to this interface and never to SQL.

Posts carry an integer ``key`` inside the store (SQLite rowid, PostgreSQL
identity) that the dense index uses to align vectors with rows; the public
identifier remains the string ``Post.id``.

Writes are idempotent: ``apply`` upserts by post id, so replaying any prefix
of a stream leaves the store unchanged, and it saves the stream's cursor in
the same transaction as the events that cursor follows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np

from townsquare.model import Event, Post
from townsquare.store.people import Author

Related = Literal["replies", "quotes"]


def url_host(url: str | None) -> str:
    """The lower-cased host of a URL ("" when there is none): what domain filters match."""
    if not url:
        return ""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def domain_matches(host: str, domain: str) -> bool:
    """``example.org`` matches ``example.org`` and ``news.example.org``, not ``myexample.org``."""
    domain = normalize_domain(domain)
    return bool(host) and (host == domain or host.endswith("." + domain))


def normalize_domain(value: str) -> str:
    """``https://www.Example.org/x`` or ``Example.org`` -> ``example.org`` (``www.`` dropped)."""
    value = value.strip().lower()
    if "://" in value:
        value = url_host(value)
    value = value.split("/", 1)[0].strip(".")
    return value[4:] if value.startswith("www.") else value


@dataclass(slots=True)
class SearchFilters:
    """The filters Grok's live-search API offers, in one place.

    ``authors``: only these handles (or account ids); ``exclude_authors``: never
    these; ``sources``: e.g. ``["bluesky", "rss"]``; ``langs``: e.g. ``["fr"]``;
    ``domains`` / ``exclude_domains``: the host of the post's URL (a domain
    matches its subdomains); ``min_likes``: at least this many likes (where a
    source gives counts; posts without counts never pass). ``scopes``: a post
    must also match at least one of these (xAI's per-source options: "x posts
    by @a, or news from lemonde.fr"); empty means no such condition.
    """

    since: datetime | None = None
    until: datetime | None = None
    authors: list[str] = field(default_factory=list)
    exclude_authors: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    langs: list[str] = field(default_factory=list)
    hashtags: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    exclude_domains: list[str] = field(default_factory=list)
    min_likes: int | None = None
    scopes: list[SearchFilters] = field(default_factory=list)

    def matches(self, post: Post) -> bool:
        """The same predicate the store applies in SQL, for in-memory candidates."""
        if self.since and post.created_at < self.since:
            return False
        if self.until and post.created_at > self.until:
            return False
        who = {post.author.lower(), (post.author_id or "").lower()}
        if self.authors and not who & {a.lower().lstrip("@") for a in self.authors}:
            return False
        if self.exclude_authors and who & {a.lower().lstrip("@") for a in self.exclude_authors}:
            return False
        if self.sources and post.source not in self.sources:
            return False
        if self.langs and (post.lang or "") not in self.langs:
            return False
        if self.hashtags and not set(self.hashtags) & set(post.hashtags):
            return False
        if self.domains or self.exclude_domains:
            host = url_host(post.url)
            if self.domains and not any(domain_matches(host, d) for d in self.domains):
                return False
            if any(domain_matches(host, d) for d in self.exclude_domains):
                return False
        if self.min_likes is not None and (post.likes or 0) < self.min_likes:
            return False
        return not self.scopes or any(s.matches(post) for s in self.scopes)

    def both(self, other: SearchFilters) -> SearchFilters:
        """Posts passing this and ``other`` (``other`` nests as a scope)."""
        if not self.scopes:
            return replace(self, scopes=[other])
        return replace(self, scopes=[s.both(other) for s in self.scopes])

    def is_empty(self) -> bool:
        return self == SearchFilters()


@dataclass(slots=True)
class Candidate:
    """A post key with one retriever's score (higher is better)."""

    key: int
    score: float


@dataclass(slots=True)
class ApplyResult:
    upserted: int = 0
    deleted: int = 0
    quarantined: int = 0
    identities: int = 0

    def add(self, other: ApplyResult) -> None:
        self.upserted += other.upserted
        self.deleted += other.deleted
        self.quarantined += other.quarantined
        self.identities += other.identities


@dataclass(slots=True)
class StoredVectors:
    """Vectors changed since a sequence number (for the in-process dense index)."""

    seqs: np.ndarray  # int64
    keys: np.ndarray  # int64 post keys
    created_ms: np.ndarray  # int64
    vectors: np.ndarray  # (n, dim) int8, see townsquare.index.quantize
    scales: np.ndarray  # float32 per-row dequantization scale


@dataclass(slots=True)
class QuarantineRecord:
    id: int
    source: str
    raw: bytes
    reason: str
    at: datetime


@dataclass(slots=True)
class ApiKeyRecord:
    id: int
    name: str
    tier: str
    prefix: str
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(slots=True)
class UsageRow:
    key_id: int | None
    key_name: str | None
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(slots=True)
class StoredMessage:
    role: str
    content: str
    created_at: datetime
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Conversation:
    id: str
    owner: str | None
    mode: str
    created_at: datetime
    messages: list[StoredMessage] = field(default_factory=list)
    #: Set by a rename; None: the page shows the first question instead.
    title: str | None = None


@dataclass(slots=True)
class ConversationSummary:
    """One row of a key's conversation list (no messages: the list stays cheap)."""

    id: str
    mode: str
    title: str | None
    #: The first user message, for conversations never renamed.
    first_question: str | None
    created_at: datetime
    updated_at: datetime
    messages: int


class Store(ABC):
    """Posts, their index, cursors, quarantine, and the service's accounts.

    Implementations must be safe to call from several threads: one writer at
    a time (they serialize writes themselves), any number of readers.
    """

    #: Registry name, e.g. ``"sqlite"``.
    kind: str = ""

    # -- ingest -------------------------------------------------------------

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

    # -- reads --------------------------------------------------------------

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

    # -- people and threads ---------------------------------------------------

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

    @abstractmethod
    def related_posts(self, post_id: str, kind: Related, limit: int = 50) -> list[Post]:
        """Stored replies to, or quotes of, a post; oldest first."""

    # -- accounts, usage, conversations (the service) -------------------------

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

    # -- lifecycle ----------------------------------------------------------

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
