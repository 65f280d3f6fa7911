"""Admission: the rules every post meets before it is stored, whatever its source.

Sources parse; this module decides whether a parsed post may enter the store,
and in what shape. :class:`Limits` runs inside ``Ingestor.commit`` on every
batch of every source (files, Jetstream, Mastodon, feeds, messages from the
NATS bus, third-party sources), so no source can forget a rule:

- **Types and Unicode.** Every field has the type the stores bind (strings,
  an aware datetime) and holds valid Unicode. JSON can spell a lone
  surrogate (``"\\ud800"``); Python keeps it, but neither SQLite nor
  PostgreSQL can encode it, and before this one such post rolled back its
  whole batch. Such a post is quarantined with the field named.
- **Too old.** ``created_at`` before ``min_post_date`` (1990 by default) is a
  bug upstream (epoch zero, year 1, seconds read as milliseconds), not a
  post: quarantined with the reason.
- **In the future.** ``created_at`` later than now plus ``max_future_skew``
  (5 minutes by default) is clamped to now, as Bluesky's AppView sorts by
  ``min(createdAt, indexedAt)``: clients set ``createdAt``, and a post dated
  2099 would otherwise rank as "just now" forever. The claimed time stays in
  ``raw`` (the source record states it; a record that is an object also
  gets ``claimed_created_at``). Skew below the bound is normal clock drift.
- **Size.** Text is clipped to ``max_post_chars`` (a word boundary and an
  ellipsis), hashtag and mention lists to ``MAX_TAGS``, and the ``raw``
  record, serialized here once, to ``RAW_FACTOR`` times the text limit: a
  50 MB post is otherwise stored twice and embedded and indexed whole.
  Identifiers and names longer than ``MAX_FIELD_CHARS`` are quarantined
  (they are B-tree keys in PostgreSQL, whose entries must fit a third of a
  page).

The checks are a few attribute reads per post in the common case; ingest
throughput (``benchmarks/bench_ingest.py``) stays within noise of without.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from townsquare.model import Event, Post, Upsert, iso, quarantine
from townsquare.sources._text import clip
from townsquare.timeutil import parse_duration, parse_time, utcnow

if TYPE_CHECKING:
    from townsquare.config import Settings

DEFAULT_MAX_POST_CHARS = 10_000
DEFAULT_MAX_FUTURE_SKEW = timedelta(minutes=5)
DEFAULT_MIN_POST_DATE = datetime(1990, 1, 1, tzinfo=UTC)
#: ``raw`` is kept whole up to this many times ``max_post_chars``.
RAW_FACTOR = 8
#: Hashtags or mentions kept per post.
MAX_TAGS = 100
#: Identifiers, handles, names, language codes (characters); URLs get ``MAX_URL_CHARS``.
MAX_FIELD_CHARS = 512
MAX_URL_CHARS = 4096

_REQUIRED = ("id", "source", "author")
_OPTIONAL = ("author_id", "author_name", "lang", "reply_to", "quote_of")


@dataclass(frozen=True, slots=True)
class Limits:
    """What a post must satisfy to be stored (see the module docstring)."""

    max_post_chars: int = DEFAULT_MAX_POST_CHARS
    max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW
    min_post_date: datetime = DEFAULT_MIN_POST_DATE

    def __post_init__(self) -> None:
        if self.max_post_chars < 100:
            raise ValueError(f"max_post_chars must be at least 100, not {self.max_post_chars}")
        if self.max_future_skew < timedelta(0):
            raise ValueError("max_future_skew must not be negative")

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits the operator configured (``max_post_chars``, ``max_future_skew``,
        ``min_post_date``); a bad value is a ValueError naming the setting."""
        try:
            skew = parse_duration(settings.max_future_skew)
        except ValueError as exc:
            raise ValueError(f"max_future_skew: {exc}") from None
        try:
            oldest = parse_time(settings.min_post_date)
        except ValueError as exc:
            raise ValueError(f"min_post_date: {exc}") from None
        return cls(max_post_chars=settings.max_post_chars, max_future_skew=skew,
                   min_post_date=oldest)

    @property
    def max_raw_chars(self) -> int:
        return self.max_post_chars * RAW_FACTOR

    def admit(self, events: Sequence[Event], now: datetime | None = None) -> list[Event]:
        """The events to store: posts checked, clamped and clipped, the unfit ones
        replaced by quarantine records saying why. Other events pass unchanged."""
        latest = (now or utcnow()) + self.max_future_skew
        out: list[Event] = []
        for ev in events:
            if type(ev) is Upsert:
                try:
                    problem = self._fit(ev.post, latest)
                except Exception as exc:  # a field no rule foresaw: still one record
                    problem = f"unreadable post: {type(exc).__name__}: {exc}"
                if problem is not None:
                    out.append(_refused(ev.post, problem))
                    continue
            out.append(ev)
        return out

    def _fit(self, p: Post, latest: datetime) -> str | None:
        """Make ``p`` storable in place, or say why it cannot be."""
        try:
            if self._fits(p, latest):
                return None
        except Exception:  # the detailed checks below say what is wrong
            pass
        return self._fix(p, latest)

    def _fits(self, p: Post, latest: datetime) -> bool:
        """Whether ``p`` needs nothing at all: the common case, in one expression.

        Every string field is joined once (a non-string raises, and the slow
        path names it): one ``isascii`` (constant time) answers for all of
        them, and their total length bounds each one's.
        """
        text, raw, created = p.text, p.raw, p.created_at
        a, b, u, lg, r, q = p.author_id, p.author_name, p.url, p.lang, p.reply_to, p.quote_of
        joined = "\0".join((
            text, p.id, p.source, p.author, "" if a is None else a, "" if b is None else b,
            "" if u is None else u, "" if lg is None else lg, "" if r is None else r,
            "" if q is None else q, *p.hashtags, *p.mentions,
        ))
        return bool(
            p.id and p.source and p.author
            and len(text) <= self.max_post_chars
            and len(joined) - len(text) <= MAX_FIELD_CHARS
            and (joined.isascii() or _bad_unicode(joined) is None)
            and type(created) is datetime
            and self.min_post_date <= created <= latest
            and (raw is None or (type(raw) is str and len(raw) <= self.max_post_chars * RAW_FACTOR
                                 and (raw.isascii() or _bad_unicode(raw) is None)))
        )

    def _fix(self, p: Post, latest: datetime) -> str | None:
        """The detailed checks: clamp, clip and serialize what can be, name what cannot."""
        text = p.text
        if type(text) is not str:
            return f"field 'text' must be a string, not {_kind(text)}"
        if not text.isascii() and (bad := _bad_unicode(text)):
            return f"field 'text' {bad}"
        for name in _REQUIRED:
            value = getattr(p, name)
            if type(value) is not str:
                return f"field {name!r} must be a string, not {_kind(value)}"
            if not value:
                return f"field {name!r} is empty"
            if problem := _check_str(name, value, MAX_FIELD_CHARS):
                return problem
        for name in _OPTIONAL:
            value = getattr(p, name)
            if value is not None and (problem := _check_str(name, value, MAX_FIELD_CHARS)):
                return problem
        if p.url is not None and (problem := _check_str("url", p.url, MAX_URL_CHARS)):
            return problem
        created = p.created_at
        if type(created) is not datetime or created.tzinfo is None:
            return f"field 'created_at' must be an aware datetime, not {_kind(created)}"
        if created < self.min_post_date:
            return (f"created_at {iso(created)} is before {iso(self.min_post_date)} "
                    "(min_post_date): not a real post time")
        if created > latest:
            now = latest - self.max_future_skew
            p.raw = _with_claim(p.raw, created)
            p.created_at = now
        if len(text) > self.max_post_chars:
            p.text = clip(text, self.max_post_chars)
        if len(p.hashtags) > MAX_TAGS or len(p.mentions) > MAX_TAGS:
            p.hashtags, p.mentions = p.hashtags[:MAX_TAGS], p.mentions[:MAX_TAGS]
        for name in ("hashtags", "mentions"):
            tags = getattr(p, name)
            if tags and not all((type(t) is str and t.isascii()) or _ok_tag(t) for t in tags):
                return f"field {name!r} must be a list of short strings"
        if p.raw is not None:
            p.raw = self._raw(p.raw)
        return None

    def _raw(self, raw: Any) -> str:
        """The source record as text, once, within ``max_raw_chars``."""
        if type(raw) is not str:
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", "replace")
            else:
                raw = json.dumps(raw, ensure_ascii=False, separators=(",", ":"), default=str)
        if not raw.isascii() and _bad_unicode(raw):  # audit text: keep it, escaped
            raw = raw.encode("utf-8", "backslashreplace").decode("utf-8")
        cap = self.max_raw_chars
        if len(raw) > cap:
            raw = f"{raw[:cap]}…[{len(raw) - cap} more characters dropped at ingest]"
        return raw


def _check_str(name: str, value: Any, limit: int) -> str | None:
    if type(value) is not str:
        return f"field {name!r} must be a string, not {_kind(value)}"
    if len(value) > limit:
        return f"field {name!r} is longer than {limit} characters ({len(value)})"
    if not value.isascii() and (bad := _bad_unicode(value)):
        return f"field {name!r} {bad}"
    return None


def _ok_tag(tag: Any) -> bool:
    return type(tag) is str and len(tag) <= MAX_FIELD_CHARS and not _bad_unicode(tag)


def _bad_unicode(value: str) -> str | None:
    """None when ``value`` encodes as UTF-8; else where it does not."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode: lone surrogate {value[exc.start]!r} at {exc.start}"
    return None


def _with_claim(raw: Any, claimed: datetime) -> Any:
    """``raw`` that still says which time the source claimed."""
    if raw is None:
        return {"claimed_created_at": iso(claimed)}
    if isinstance(raw, dict):
        return {**raw, "claimed_created_at": iso(claimed)}
    return raw  # a record as text (a JSON line, a Jetstream message) states it itself


def _refused(p: Post, reason: str) -> Event:
    raw = p.raw
    if not isinstance(raw, str | bytes):
        try:
            raw = json.dumps(raw, ensure_ascii=False, default=str)
        except Exception:  # nested too deep to print: say what it was
            raw = f"<unprintable {type(raw).__name__}>"
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "backslashreplace")
    source = p.source if type(p.source) is str and p.source.isascii() and p.source else "unknown"
    return quarantine(source[:64], raw, reason)


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


__all__ = ["DEFAULT_MAX_POST_CHARS", "Limits"]
