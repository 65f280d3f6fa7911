"""The post model and the events sources emit.

Every source normalizes what it reads into these few plain dataclasses, so
everything downstream (store, index, retrieval, answers, trends) speaks one
vocabulary. Dataclasses with slots, not pydantic models: ingest handles tens
of thousands of these a second and validation happens once, in the source.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# The marker comes first and the look-behind after it (the character before the
# marker must not be a word character, nor "&" before "#" or "@" before "@"): a
# pattern that starts with a literal is searched for that character alone,
# several times faster than trying the look-behind at every position.
HASHTAG_RE = re.compile(r"#(?<![\w&]#)(\w{1,100})", re.UNICODE)
MENTION_RE = re.compile(r"@(?<![\w@]@)([\w.\-]{1,100}(?:@[\w.\-]+)?)", re.UNICODE)


def extract_hashtags(text: str) -> list[str]:
    """Lower-cased hashtags in order of first appearance, without the '#'."""
    if "#" not in text:  # most posts: skip the regex (ingest runs this per post)
        return []
    seen: dict[str, None] = {}
    for m in HASHTAG_RE.finditer(text):
        tag = m.group(1).lower()
        if not tag.isdigit():
            seen.setdefault(tag, None)
    return list(seen)


def extract_mentions(text: str) -> list[str]:
    """Lower-cased @handles in order of first appearance, without the '@'."""
    if "@" not in text:
        return []
    seen: dict[str, None] = {}
    for m in MENTION_RE.finditer(text):
        seen.setdefault(m.group(1).rstrip(".-").lower(), None)
    return list(seen)


@dataclass(slots=True)
class Post:
    """One normalized post.

    ``id`` is source-scoped and stable (``bluesky:at://did/app.bsky.feed.post/rkey``,
    ``mastodon:<status uri>``, ``rss:<guid or hash>``, ``jsonl:<id>``) so that
    replaying a stream upserts rather than duplicates. Times are aware UTC
    datetimes. ``raw`` keeps the source record for audit and re-parsing.
    """

    id: str
    source: str
    author: str
    text: str
    created_at: datetime
    author_name: str | None = None
    #: The stable account id behind ``author`` (a Bluesky DID, a Mastodon
    #: account URI); handles change, this does not. Defaults to ``author``.
    author_id: str | None = None
    url: str | None = None
    lang: str | None = None
    hashtags: list[str] = field(default_factory=list)
    mentions: list[str] = field(default_factory=list)
    reply_to: str | None = None
    quote_of: str | None = None
    indexed_at: datetime | None = None
    raw: Any = None
    #: Engagement counts where the source gives them (None: unknown, not zero).
    #: Mastodon reports all four; Bluesky likes and reposts are counted from
    #: Jetstream's like/repost records (see :class:`Engage`).
    likes: int | None = None
    reposts: int | None = None
    replies: int | None = None
    quotes: int | None = None

    def __post_init__(self) -> None:
        if self.author_id is None:
            self.author_id = self.author
        if self.created_at.tzinfo is None:
            self.created_at = self.created_at.replace(tzinfo=UTC)
        elif self.created_at.utcoffset():
            self.created_at = self.created_at.astimezone(UTC)
        if not self.hashtags:
            self.hashtags = extract_hashtags(self.text)
        if not self.mentions:
            self.mentions = extract_mentions(self.text)

    def public_dict(self) -> dict[str, Any]:
        """The JSON shape surfaces return (no raw record)."""
        return {
            "id": self.id,
            "source": self.source,
            "author": self.author,
            "author_name": self.author_name,
            "author_id": self.author_id,
            "text": self.text,
            "created_at": iso(self.created_at),
            "indexed_at": iso(self.indexed_at) if self.indexed_at else None,
            "url": self.url,
            "lang": self.lang,
            "hashtags": list(self.hashtags),
            "mentions": list(self.mentions),
            "reply_to": self.reply_to,
            "quote_of": self.quote_of,
            "likes": self.likes,
            "reposts": self.reposts,
            "replies": self.replies,
            "quotes": self.quotes,
        }


def iso(dt: datetime) -> str:
    """ISO 8601 in UTC with a 'Z', the one time format every surface prints."""
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- events a source emits -------------------------------------------------


@dataclass(slots=True)
class Upsert:
    """Create or replace a post (an edit re-indexes it)."""

    post: Post


@dataclass(slots=True)
class Delete:
    """Remove a post by id; deleting an unknown id is not an error."""

    id: str


@dataclass(slots=True)
class Identity:
    """An author's handle changed (Bluesky identity events, the identity lookup):
    ``did`` -> ``handle``, and the display name when the event carries one."""

    did: str
    handle: str
    display_name: str | None = None


@dataclass(slots=True)
class Engage:
    """Engagement counted from the stream: add these to a post's counts.

    Jetstream's like and repost records name the post they are about; the
    source emits one per record (never for a record replayed after a
    reconnect), and the store adds them up per post in the batch.
    """

    post_id: str
    likes: int = 0
    reposts: int = 0
    #: The record that counted (``at://did/app.bsky.feed.like/rkey``): the bus's dedup key.
    record: str = ""


@dataclass(slots=True)
class Quarantine:
    """Input that could not be understood: kept, with why, never silently dropped."""

    source: str
    raw: bytes
    reason: str

    def digest(self) -> bytes:
        """What makes two quarantine records the same: source, reason and bytes.

        The stores keep one row per digest, so the same bad input read again
        (a file under another name, a Jetstream rewind, a replayed batch) is
        not listed twice."""
        h = hashlib.sha256(self.source.encode("utf-8", "backslashreplace"))
        h.update(b"\0" + self.reason.encode("utf-8", "backslashreplace") + b"\0")
        h.update(self.raw)
        return h.digest()[:16]


Event = Upsert | Delete | Identity | Engage | Quarantine


@dataclass(slots=True)
class Batch:
    """Events a source read, plus the cursor that resumes *after* them.

    The pipeline commits the events and the cursor in one transaction, so a
    crash either keeps both or neither: nothing acknowledged is lost and
    nothing is applied twice.
    """

    events: list[Event]
    cursor: str | None
    #: When the newest event in this batch was produced at the source, if known;
    #: used for the "lag behind the source" figure.
    source_time: datetime | None = None


QUARANTINE_RAW_CAP = 16 * 1024
QUARANTINE_REASON_CAP = 1000


def quarantine(source: str, raw: bytes | str, reason: str) -> Quarantine:
    """Build a quarantine event with the raw bytes and the reason capped.

    The reason often quotes the input; lone surrogates in it are escaped so
    that the record itself can always be stored.
    """
    data = raw.encode("utf-8", "backslashreplace") if isinstance(raw, str) else raw
    if not reason.isascii():
        reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(reason) > QUARANTINE_REASON_CAP:
        reason = reason[: QUARANTINE_REASON_CAP - 1] + "…"
    return Quarantine(source=source, raw=data[:QUARANTINE_RAW_CAP], reason=reason)
