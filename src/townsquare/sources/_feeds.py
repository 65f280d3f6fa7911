"""Feed documents (RSS 0.9x/1.0/2.0, Atom, JSON Feed) -> posts. Pure functions.

feedparser reads every XML dialect; it does not read JSON Feed, which is
plain JSON and parsed here by hand (versions 1.0 and 1.1).

Post ids: ``rss:<guid>`` when the guid is a URI (it has a scheme, so it is
global by construction: ``https://…``, ``urn:uuid:…``, ``tag:…``); a bare guid
(``4956764``, ``t3_glvkc5``) is only unique within its feed, so it becomes
``rss:<feed host>/<guid>``. Without a guid: ``rss:<sha1 of link + title>``.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.sax import SAXException

import feedparser

from townsquare.errors import DataError
from townsquare.model import Post
from townsquare.sources._text import html_to_text, normalize_space, primary_lang
from townsquare.timeutil import parse_time, utcnow

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_EMAIL_NAME = re.compile(r"^\s*[^\s@()]+@[^\s@()]+\s*\((.+)\)\s*$")


class FeedError(DataError, ValueError):
    """The document is not a feed at all (or is too broken to yield anything)."""


def parse_feed(
    data: bytes, url: str, *, now: datetime | None = None, problems: list[str] | None = None
) -> list[Post]:
    """Every item of a feed document as a Post.

    ``url`` is where the document came from: relative links resolve against
    it (after any ``xml:base``) and its host stands in for a missing author.
    Items without a date get ``now``; their ``raw["dated"]`` is False so a
    poller can keep the time it first saw them instead. Items too broken to
    use are skipped and described in ``problems`` when a list is given.
    Raises :class:`FeedError` when the document yields nothing usable.
    """
    now = now or utcnow()
    problems = problems if problems is not None else []
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        return _json_feed(head, url, now, problems)
    return _xml_feed(data, url, now, problems)


# --- XML dialects, through feedparser ----------------------------------------


def _xml_feed(data: bytes, url: str, now: datetime, problems: list[str]) -> list[Post]:
    doc = feedparser.parse(data, response_headers={"content-location": url})
    error = doc.get("bozo_exception")
    if not doc.entries and (not doc.get("version") or isinstance(error, SAXException)):
        # Nothing usable: no feed structure, or XML broken before the first item.
        reason = error or "no RSS, Atom or JSON Feed structure found"
        raise FeedError(f"not a feed: {reason}")
    feed = doc.feed
    meta = _FeedMeta(
        url=url,
        title=_opt(feed.get("title")),
        author=_person(feed.get("author_detail"), feed.get("author")),
        lang=feed.get("language"),
    )
    version = str(doc.get("version") or "")
    posts = []
    for n, entry in enumerate(doc.entries):
        try:
            posts.append(_xml_entry(entry, meta, version, now))
        except Exception as exc:  # one broken item never costs the feed its others
            problems.append(f"feed item {n} is unreadable: {type(exc).__name__}: {exc}")
    return posts


def _xml_entry(entry: Mapping[str, Any], meta: _FeedMeta, version: str, now: datetime) -> Post:
    title = _opt(entry.get("title"))
    if title and _is_html(entry.get("title_detail")):
        title = html_to_text(title) or None
    summary_html = entry.get("summary")
    detail = entry.get("summary_detail")
    if not summary_html and entry.get("content"):
        summary_html = entry["content"][0].get("value")
        detail = entry["content"][0]
    summary = ""
    if summary_html:
        summary = html_to_text(summary_html) if _is_html(detail) else normalize_space(summary_html)
    created = _entry_time(entry, "published") or _entry_time(entry, "updated")
    return meta.post(
        guid=_opt(entry.get("id")),
        title=title,
        summary=summary,
        link=_xml_link(entry, version),
        created=created,
        now=now,
        author=_person(entry.get("author_detail"), entry.get("author")),
        lang=entry.get("language"),
    )


def _entry_time(entry: Mapping[str, Any], key: str) -> datetime | None:
    """ISO 8601 text read directly (feedparser's struct_time drops fractions of a
    second), anything else (RFC 822 and its many variants) as feedparser parsed it."""
    # dict.get: feedparser's own get() maps a missing "updated" to "published", with a warning.
    text = dict.get(entry, key)  # type: ignore[call-overload]
    if isinstance(text, str) and "T" in text:
        try:
            when = datetime.fromisoformat(text.strip().replace("z", "Z"))
        except ValueError:
            pass
        else:
            return when if when.tzinfo else when.replace(tzinfo=UTC)
    stamp = dict.get(entry, f"{key}_parsed")  # type: ignore[call-overload]
    if stamp:
        return datetime.fromtimestamp(calendar.timegm(stamp), UTC)
    return _localized_rfc822(text) if isinstance(text, str) else None


# Month names in the languages whose feeds most often localize RFC 822 dates
# ("mer, 16 nov 2022 00:38:15 +0100"): it, es, pt, fr, de, nl.
_MONTHS = {
    "jan": "Jan", "gen": "Jan", "ene": "Jan", "janv": "Jan",
    "feb": "Feb", "fev": "Feb", "fév": "Feb", "févr": "Feb",
    "mar": "Mar", "mär": "Mar", "mrz": "Mar", "mrt": "Mar",
    "apr": "Apr", "abr": "Apr", "avr": "Apr",
    "may": "May", "mag": "May", "mai": "May", "mei": "May",
    "jun": "Jun", "giu": "Jun", "juin": "Jun",
    "jul": "Jul", "lug": "Jul", "juil": "Jul",
    "aug": "Aug", "ago": "Aug", "aoû": "Aug", "aou": "Aug",
    "sep": "Sep", "set": "Sep", "sept": "Sep",
    "oct": "Oct", "ott": "Oct", "okt": "Oct", "out": "Oct",
    "nov": "Nov",
    "dec": "Dec", "dic": "Dec", "dez": "Dec", "déc": "Dec",
}
_WORD = re.compile(r"[^\W\d_]+")
_WEEKDAY = re.compile(r"^\s*[^\W\d_]+\.?,\s*")


def _localized_rfc822(text: str) -> datetime | None:
    """An RFC 822 date with localized day and month names, or None."""

    def month(m: re.Match[str]) -> str:
        word = m.group(0).lower()
        english = _MONTHS.get(word) or _MONTHS.get(word[:4]) or _MONTHS.get(word[:3])
        return english or m.group(0)

    candidate = _WORD.sub(month, _WEEKDAY.sub("", text), count=1)
    try:
        when = parsedate_to_datetime(candidate)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _xml_link(entry: Mapping[str, Any], version: str) -> str | None:
    """The item's page: its alternate link, else any non-enclosure link.

    RSS 2.0 says a ``<guid>`` is a permalink unless ``isPermaLink="false"``;
    feedparser flags that (``guidislink``) and we honour it for http(s)
    guids. Atom ids are never links, whatever they look like.
    """
    links = entry.get("links") or []
    for wanted in ("alternate", None):
        for link in links:
            href, rel = link.get("href"), link.get("rel", "alternate")
            if href and (rel == wanted or (wanted is None and rel != "enclosure")):
                return str(href)
    guid = entry.get("id")
    if (
        version.startswith("rss")
        and entry.get("guidislink")
        and isinstance(guid, str)
        and guid.startswith(("http://", "https://"))
    ):
        return guid
    return None


def _is_html(detail: Any) -> bool:
    return not detail or "html" in str(detail.get("type") or "html")


# --- JSON Feed 1.0 / 1.1 -------------------------------------------------------


def _json_feed(data: bytes, url: str, now: datetime, problems: list[str]) -> list[Post]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise FeedError(f"invalid JSON: {type(exc).__name__}: {exc}") from None
    if not isinstance(doc, dict) or "jsonfeed.org/version" not in str(doc.get("version", "")):
        raise FeedError("JSON document is not a JSON Feed (no jsonfeed.org version)")
    items = doc.get("items")
    if not isinstance(items, list):
        raise FeedError("JSON Feed has no items list")
    meta = _FeedMeta(
        url=url,
        title=_opt(doc.get("title")),
        author=_json_author(doc),
        lang=doc.get("language"),
    )
    posts = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(f"JSON Feed item {n} is not an object")
            continue
        try:
            posts.append(_json_item(item, meta, now))
        except Exception as exc:  # one broken item never costs the feed its others
            problems.append(f"JSON Feed item {n} is unreadable: {type(exc).__name__}: {exc}")
    return posts


def _json_item(item: dict[str, Any], meta: _FeedMeta, now: datetime) -> Post:
    summary = _opt(item.get("summary")) or _opt(item.get("content_text"))
    if summary:
        summary = normalize_space(summary)
    elif isinstance(item.get("content_html"), str):
        summary = html_to_text(item["content_html"])
    link = _opt(item.get("url")) or _opt(item.get("external_url"))
    return meta.post(
        guid=str(item["id"]) if item.get("id") not in (None, "") else None,
        title=_opt(item.get("title")),
        summary=summary or "",
        link=link,
        created=_json_date(item.get("date_published")) or _json_date(item.get("date_modified")),
        now=now,
        author=_json_author(item),
        lang=item.get("language"),
    )


def _json_author(obj: Mapping[str, Any]) -> str | None:
    """JSON Feed 1.1 ``authors`` (a list), else 1.0 ``author`` (an object)."""
    authors = obj.get("authors")
    candidates = authors if isinstance(authors, list) else [obj.get("author")]
    for person in candidates:
        if isinstance(person, dict) and _opt(person.get("name")):
            return str(person["name"]).strip()
    return None


def _json_date(value: Any) -> datetime | None:
    """RFC 3339 per the spec; RFC 822 too, because real feeds use it."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return parse_time(value)
    except ValueError:
        pass
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- shared ---------------------------------------------------------------------


class _FeedMeta:
    """Feed-level facts every item inherits."""

    def __init__(self, url: str, title: str | None, author: str | None, lang: Any) -> None:
        self.url = url
        self.host = urlsplit(url).hostname or url
        self.title = title
        self.author = author
        self.lang = primary_lang(lang)

    def post(
        self,
        *,
        guid: str | None,
        title: str | None,
        summary: str,
        link: str | None,
        created: datetime | None,
        now: datetime,
        author: str | None,
        lang: Any,
    ) -> Post:
        if link:
            try:
                link = urljoin(self.url, link)
            except ValueError:  # "http://[": a broken link, not a broken item
                link = None
        return Post(
            id=self._post_id(guid, link, title, summary),
            source="rss",
            author=self.author or author or self.host,
            author_name=author or self.author or self.title,
            author_id=self.url,
            text=_item_text(title, summary),
            created_at=created or now,
            url=link,
            lang=primary_lang(lang) or self.lang,
            raw={
                "feed": self.url,
                "guid": guid,
                "title": title,
                "link": link,
                "dated": created is not None,
            },
        )

    def _post_id(self, guid: str | None, link: str | None, title: str | None, text: str) -> str:
        if guid:
            guid = guid.strip()
            return f"rss:{guid}" if _SCHEME.match(guid) else f"rss:{self.host}/{guid}"
        basis = f"{link or ''}\n{title or ''}"
        if not link and not title:  # nothing identifying: the text is all there is
            basis = f"{self.url}\n{text}"
        return "rss:" + hashlib.sha1(basis.encode("utf-8")).hexdigest()


def _item_text(title: str | None, summary: str) -> str:
    """``Title. Summary``: the summary alone when it already starts with the title.

    Not clipped here: every source's text is clipped at admission to the one
    configured ``max_post_chars``."""
    title = normalize_space(title or "")
    if not title:
        return summary
    if not summary or summary.startswith(title):
        return summary or title
    sep = " " if title[-1] in ".!?…:;" else ". "
    return f"{title}{sep}{summary}"


def _person(detail: Any, text: Any) -> str | None:
    """A display name: RSS's ``email (Name)`` is read here, as feedparser
    mangles it when the name is not ASCII."""
    if isinstance(text, str) and (m := _EMAIL_NAME.match(text)):
        return m.group(1).strip()
    name = detail.get("name") if isinstance(detail, Mapping) else None
    return _opt(name) or _opt(text)


def _opt(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


__all__ = ["FeedError", "parse_feed"]
