"""The values that cross the Store contract: filters, candidates, records.

Plain dataclasses with no engine in them, so everything above the store
(retrieval, answers, the service) can build and read them without importing
an engine, and both engines map their rows onto the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np

from townsquare.model import Post

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
    vectors: np.ndarray  # (n, dim) int8, see townsquare.quantize
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


@dataclass(slots=True)
class RetentionResult:
    """What a retention run dropped (or, dry, would drop)."""

    cutoff: datetime
    partitions: list[str] = field(default_factory=list)
    posts_deleted: int = 0


@dataclass(slots=True)
class StoredWatch:
    """A standing query as the store keeps it (:mod:`townsquare.watches` gives it meaning).

    ``spec`` is the watch's definition (query, filters, kind, webhook) as JSON:
    the store keeps and returns it whole, so a new watch option needs no
    migration. ``secret`` signs its webhook deliveries.
    """

    id: str
    owner: int
    created_at: datetime
    secret: str
    spec: dict[str, Any] = field(default_factory=dict)
