"""xAI's and Perplexity's search options, each turned into :class:`SearchFilters`.

- xAI's ``search_parameters`` (``mode``, ``from_date``, ``to_date``,
  ``max_search_results``, ``return_citations``, ``sources`` with per-source
  ``x_handles``/``included_x_handles``/``excluded_x_handles``,
  ``allowed_websites``/``excluded_websites`` (the host of a post's URL) and
  ``post_favorite_count`` (likes, where a source counts them); each source
  entry is a scope: a post must match one of them) and xAI's ``x_search`` /
  ``web_search`` tools in ``tools``.
- Perplexity's date filters are parsed by :func:`us_date` (``%m/%d/%Y``);
  its recency windows are :data:`RECENCY`.

The chat request (:mod:`townsquare.service.wire.openai_compat`) combines them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from townsquare.service.wire.fields import Strict, Text, neutral
from townsquare.store.base import SearchFilters, normalize_domain
from townsquare.timeutil import parse_since

#: xAI's source types, mapped to the ``source`` field of our posts.
SOURCE_TYPES: dict[str, list[str]] = {
    "x": ["bluesky", "mastodon"],
    "social": ["bluesky", "mastodon"],
    "bluesky": ["bluesky"],
    "mastodon": ["mastodon"],
    "news": ["rss"],
    "web": ["rss"],
    "rss": ["rss"],
    "jsonl": ["jsonl"],
    "demo": ["demo"],
}
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
Handles = list[Text] | None
Domains = Annotated[list[Text] | None, Field(None, max_length=100)]
SortOrder = Literal["relevance", "latest", "top"]
#: Perplexity's ``search_recency_filter``.
RECENCY: dict[str, timedelta] = {
    "hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1),
    "month": timedelta(days=31), "year": timedelta(days=366),
}

_NO_VIEWS = "no source townsquare reads publishes view counts"


class SearchSource(Strict):
    """One entry of ``search_parameters.sources``, xAI style: ``{"type": "x", ...}``.

    An entry is a scope: its type's sources, narrowed by its own options.
    """

    type: Literal["x", "social", "bluesky", "mastodon", "news", "web", "rss", "jsonl", "demo"]
    included_x_handles: Handles = Field(None, max_length=100)
    excluded_x_handles: Handles = Field(None, max_length=100)
    x_handles: Handles = Field(None, max_length=100)
    allowed_websites: Domains = None
    excluded_websites: Domains = None
    post_favorite_count: int | None = Field(None, ge=0, description="at least this many likes")
    post_view_count: Annotated[int | None, neutral(None, why=_NO_VIEWS)] = None
    country: Annotated[str | None, neutral(
        None, why="posts carry no country (use langs for the language)")] = None
    safe_search: Annotated[bool | None, neutral(
        None, why="posts carry no safety rating to filter on")] = None
    links: Annotated[list[str] | None, neutral(
        None, [], why="posts do not record which feed URL they came from; use "
        "allowed_websites for the sites of posts' URLs")] = None

    def scope(self) -> SearchFilters:
        return SearchFilters(
            sources=list(SOURCE_TYPES[self.type]),
            authors=[*(self.included_x_handles or []), *(self.x_handles or [])],
            exclude_authors=list(self.excluded_x_handles or []),
            domains=[normalize_domain(d) for d in self.allowed_websites or []],
            exclude_domains=[normalize_domain(d) for d in self.excluded_websites or []],
            min_likes=self.post_favorite_count,
        )


class SearchParameters(Strict):
    """xAI's live-search parameters (``mode``: auto, on, off), plus ``langs`` and ``sort``."""

    mode: Literal["auto", "on", "off"] = "auto"
    from_date: Text | None = Field(None, max_length=64,
                                   description="YYYY-MM-DD, ISO 8601, or relative (2h, 3d)")
    to_date: Text | None = Field(None, max_length=64,
                                 description="YYYY-MM-DD (whole day), ISO 8601, or relative")
    sources: list[SearchSource | Text] | None = Field(None, max_length=20)
    included_handles: Handles = Field(None, max_length=100)
    excluded_handles: Handles = Field(None, max_length=100)
    included_x_handles: Handles = Field(None, max_length=100)
    excluded_x_handles: Handles = Field(None, max_length=100)
    langs: list[Text] | None = Field(None, max_length=20)
    max_search_results: int | None = Field(None, ge=1, le=50)
    return_citations: bool = True
    sort: SortOrder = Field("relevance", description="relevance (with recency), latest, or "
                            "top (most engagement)")

    @field_validator("sources")
    @classmethod
    def _known_types(cls, v: list[SearchSource | str] | None) -> list[SearchSource | str] | None:
        for src in v or []:
            if isinstance(src, str) and src not in SOURCE_TYPES:
                raise ValueError(f"unknown source type {src!r}; one of {', '.join(SOURCE_TYPES)}")
        return v

    def filters(self) -> SearchFilters:
        """The store filters these parameters mean; ValueError names a bad field."""
        since = _bound(self.from_date, "from_date", end_of_day=False)
        until = _bound(self.to_date, "to_date", end_of_day=True)
        included = [*(self.included_handles or []), *(self.included_x_handles or [])]
        excluded = [*(self.excluded_handles or []), *(self.excluded_x_handles or [])]
        scopes = [
            src.scope() if isinstance(src, SearchSource)
            else SearchFilters(sources=list(SOURCE_TYPES[src]))
            for src in self.sources or []
        ]
        return SearchFilters(
            since=since,
            until=until,
            authors=list(dict.fromkeys(included)),
            exclude_authors=list(dict.fromkeys(excluded)),
            langs=list(self.langs or []),
            scopes=scopes,
        )


def _bound(value: str | None, name: str, end_of_day: bool,
           prefix: str = "search_parameters.") -> datetime | None:
    if not value:
        return None
    try:
        when = parse_since(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise ValueError(f"{prefix}{name}: {exc}") from None
    if when is not None and end_of_day and _DATE_ONLY.match(value.strip()):
        when += timedelta(days=1) - timedelta(milliseconds=1)
    return when


class XSearchTool(Strict):
    """xAI's server-side ``x_search`` tool: posts, by handle and date."""

    type: Literal["x_search"]
    allowed_x_handles: Handles = Field(None, max_length=100)
    excluded_x_handles: Handles = Field(None, max_length=100)
    from_date: Text | None = Field(None, max_length=64)
    to_date: Text | None = Field(None, max_length=64)
    enable_image_understanding: Annotated[bool | None, neutral(
        None, False, why="townsquare reads posts' text only")] = None
    enable_video_understanding: Annotated[bool | None, neutral(
        None, False, why="townsquare reads posts' text only")] = None

    @model_validator(mode="after")
    def _one_handle_list(self) -> XSearchTool:
        if self.allowed_x_handles and self.excluded_x_handles:
            raise ValueError("allowed_x_handles and excluded_x_handles cannot both be set")
        return self

    def scope(self) -> SearchFilters:
        return SearchFilters(
            sources=list(SOURCE_TYPES["x"]),
            authors=list(self.allowed_x_handles or []),
            exclude_authors=list(self.excluded_x_handles or []),
            since=_bound(self.from_date, "from_date", False, "tools.x_search."),
            until=_bound(self.to_date, "to_date", True, "tools.x_search."),
        )


class WebSearchTool(Strict):
    """xAI's ``web_search`` tool, over the news/web sources (RSS): by the site of the link."""

    type: Literal["web_search"]
    allowed_domains: Domains = None
    excluded_domains: Domains = None
    enable_image_understanding: Annotated[bool | None, neutral(
        None, False, why="townsquare reads posts' text only")] = None

    def scope(self) -> SearchFilters:
        return SearchFilters(
            sources=list(SOURCE_TYPES["web"]),
            domains=[normalize_domain(d) for d in self.allowed_domains or []],
            exclude_domains=[normalize_domain(d) for d in self.excluded_domains or []],
        )


def us_date(value: str, name: str) -> datetime:
    try:
        return datetime.strptime(value.strip(), "%m/%d/%Y").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a date like 3/1/2025 (%m/%d/%Y)") from None
