"""Mastodon streaming events -> townsquare events.

The streaming API sends ``(event, payload)`` pairs: over SSE as ``event:`` /
``data:`` lines, over the websocket as ``{"event": …, "payload": "<JSON
text>"}``, and in flodgatt's Redis form with the payload as an embedded
object. All three end up in :meth:`MastodonParser.parse`.

- ``update`` / ``status.update``: a Status -> Upsert (an edit re-indexes it).
- ``delete``: the payload is the *instance-local* status id, not the URI our
  post ids are built from, so the parser remembers local id -> post id for
  the statuses it has seen (bounded) and deletes those; an unseen id names
  nothing we stored and is ignored.
- ``in_reply_to_id`` is local too: it becomes ``reply_to`` when the parent
  was seen by this parser, and stays None otherwise. (A made-up id such as
  ``mastodon-id:<instance>/<id>`` would never match a stored post, so it
  would only be a dangling reference.)
- Authors are ``acct``, qualified with the account's home host (from its
  profile URL, else the instance we stream from) when it is a local account
  without one: ``trwnh`` on mastodon.social becomes ``trwnh@mastodon.social``.
- Only public and unlisted statuses are indexed; a reblog indexes the
  reblogged status. Other events (notification, conversation, announcement,
  filters_changed...) are ignored.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from townsquare.model import Delete, Event, Post, Upsert, quarantine
from townsquare.sources._net import Bounded
from townsquare.sources._text import html_to_text, primary_lang
from townsquare.timeutil import parse_time

SOURCE = "mastodon"
STATUS_EVENTS = frozenset({"update", "status.update"})
_INDEXED_VISIBILITY = frozenset({"public", "unlisted", None})


class MastodonParser:
    """Stateful only in what deletes and replies need: local id -> post id."""

    def __init__(self, instance_host: str, remember: int = 50_000) -> None:
        self.instance_host = instance_host
        self.local_ids: Bounded[str] = Bounded(remember)

    def parse(self, event: str, payload: Any, raw: str | bytes | None = None) -> Event | None:
        """One streaming event; ``raw`` is what gets quarantined if it is unusable.

        Never raises: a payload no rule foresaw (nested 100,000 deep, a field of
        an odd type) is quarantined with the error, and the stream goes on.
        """
        try:
            return self._parse(event, payload, raw)
        except Exception as exc:
            original = raw if raw is not None else _dump(payload)
            return quarantine(SOURCE, original,
                              f"{event}: unreadable event: {type(exc).__name__}: {exc}")

    def _parse(self, event: str, payload: Any, raw: str | bytes | None) -> Event | None:
        original = raw if raw is not None else _dump(payload)
        if event in STATUS_EVENTS:
            if isinstance(payload, str | bytes):
                try:
                    payload = json.loads(payload)
                except (ValueError, UnicodeDecodeError) as exc:
                    return quarantine(SOURCE, original, f"{event}: invalid JSON: {exc}")
            if not isinstance(payload, dict):
                return quarantine(SOURCE, original, f"{event}: payload is not a status object")
            return self.status(payload, original)
        if event == "delete":
            local_id = str(payload).strip().strip('"')
            post_id = self.local_ids.pop(local_id)
            return Delete(post_id) if post_id else None
        return None

    def parse_message(self, message: str | bytes) -> Event | None:
        """A websocket / flodgatt message ``{"event": …, "payload": …}``."""
        try:
            obj = json.loads(message)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return quarantine(SOURCE, message, f"invalid JSON: {type(exc).__name__}: {exc}")
        if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
            return quarantine(SOURCE, message, "message without an event name")
        return self.parse(obj["event"], obj.get("payload"), message)

    def status(self, status: dict[str, Any], raw: str | bytes) -> Event | None:
        """A Status entity -> Upsert (None for private statuses)."""
        wrapper_id = status.get("id")
        reblog = status.get("reblog")
        if isinstance(reblog, dict):
            status, wrapper_id = reblog, None  # index the original, never "delete" it by a boost
        if status.get("visibility") not in _INDEXED_VISIBILITY:
            return None
        uri, account = status.get("uri"), status.get("account")
        if not isinstance(uri, str) or not uri:
            return quarantine(SOURCE, raw, "status without a uri")
        if not isinstance(account, dict) or not isinstance(account.get("acct"), str):
            return quarantine(SOURCE, raw, "status without an account acct")
        content = status.get("content")
        if not isinstance(content, str):
            return quarantine(SOURCE, raw, "status without content")
        try:
            created = parse_time(status["created_at"])
        except (KeyError, ValueError) as exc:
            return quarantine(SOURCE, raw, f"status without a readable created_at: {exc}")
        post_id = f"{SOURCE}:{uri}"
        if wrapper_id is not None:
            self.local_ids[str(wrapper_id)] = post_id
        parent = status.get("in_reply_to_id")
        return Upsert(
            Post(
                id=post_id,
                source=SOURCE,
                author=self._author(account),
                author_name=_str(account.get("display_name")),
                author_id=_str(account.get("url")) or _str(account.get("uri")),
                text=_status_text(content, status.get("spoiler_text")),
                created_at=created,
                url=_str(status.get("url")) or uri,
                lang=primary_lang(status.get("language")),
                hashtags=_names(status.get("tags"), "name"),
                mentions=_names(status.get("mentions"), "acct"),
                reply_to=self.local_ids.get(str(parent)) if parent is not None else None,
                quote_of=_quote(status.get("quote")),
                raw=status,
                likes=_count(status.get("favourites_count")),
                reposts=_count(status.get("reblogs_count")),
                replies=_count(status.get("replies_count")),
                quotes=_count(status.get("quotes_count")),
            )
        )

    def _author(self, account: dict[str, Any]) -> str:
        acct = account["acct"].lstrip("@")
        if "@" in acct:
            return acct
        host = urlsplit(_str(account.get("url")) or "").hostname or self.instance_host
        return f"{acct}@{host}"


def _count(value: Any) -> int | None:
    """An engagement count as the server reports it (None when absent or not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _status_text(content: str, spoiler: Any) -> str:
    text = html_to_text(content)
    if isinstance(spoiler, str) and spoiler.strip():
        text = f"{spoiler.strip()}\n\n{text}" if text else spoiler.strip()
    return text  # clipped at admission (max_post_chars), like every source's


def _names(items: Any, key: str) -> list[str]:
    """Lower-cased, de-duplicated ``key`` values of a list of objects."""
    out: dict[str, None] = {}
    for item in items if isinstance(items, list) else []:
        value = item.get(key) if isinstance(item, dict) else None
        if isinstance(value, str) and value:
            out.setdefault(value.lower(), None)
    return list(out)


def _quote(quote: Any) -> str | None:
    """Mastodon 4.4+ quote posts: ``quote.quoted_status.uri`` when accepted."""
    if not isinstance(quote, dict):
        return None
    quoted = quote.get("quoted_status")
    uri = quoted.get("uri") if isinstance(quoted, dict) else None
    return f"{SOURCE}:{uri}" if isinstance(uri, str) and uri else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dump(payload: Any) -> str:
    if isinstance(payload, str | bytes):
        return payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
    try:
        return json.dumps(payload, ensure_ascii=False, default=str)
    except Exception:  # nested too deep to print: say what it was
        return f"<unprintable {type(payload).__name__}>"
