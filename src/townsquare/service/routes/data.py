"""Data routes: search, one post, the live status of the sources, the caller's usage.

Posts are shared public data (they were public where they came from): any
valid key may read any post. Usage and conversations belong to the key that
made them: no route returns another key's.

Blocking work (SQLite reads, the dense index) runs in worker threads; the
event loop only parses, authorizes and serializes.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from townsquare.model import iso
from townsquare.retrieval import SearchRequest, Sort
from townsquare.retrieval.threads import find_post, gather
from townsquare.service.deps import Services, get_principal, get_services
from townsquare.service.errors import ApiError
from townsquare.service.gate.auth import Principal
from townsquare.service.gate.limits import month_start, tier_summary
from townsquare.service.wire.fields import Text
from townsquare.store.base import SearchFilters, normalize_domain
from townsquare.store.people import search_authors
from townsquare.timeutil import parse_since

router = APIRouter(prefix="/v1")



class SearchBody(BaseModel):
    """``POST /v1/search``: the retrieval filters of ``townsquare search``, as JSON."""

    model_config = ConfigDict(extra="forbid")

    query: Text = Field("", max_length=2000, description="Keywords or a question; empty: newest")
    since: Text | None = Field(None, max_length=64, description="2h, 3d, or ISO 8601")
    until: Text | None = Field(None, max_length=64, description="2h (ago), or ISO 8601")
    authors: list[Text] = Field(default_factory=list, max_length=100)
    exclude_authors: list[Text] = Field(default_factory=list, max_length=100)
    sources: list[Text] = Field(default_factory=list, max_length=20,
                                description="bluesky, mastodon, rss, jsonl, demo")
    langs: list[Text] = Field(default_factory=list, max_length=20)
    hashtags: list[Text] = Field(default_factory=list, max_length=20)
    domains: list[Text] = Field(default_factory=list, max_length=50,
                                description="only posts whose URL is on these sites")
    exclude_domains: list[Text] = Field(default_factory=list, max_length=50)
    min_likes: int | None = Field(None, ge=0, description="at least this many likes (where "
                                  "the source counts them)")
    limit: int = Field(10, ge=1, le=100)
    mode: Literal["hybrid", "lexical", "dense", "recent"] = "hybrid"
    sort: Sort = Field("relevance", description="relevance (with recency), latest, top "
                       "(engagement)")


def parse_bound(value: str | None, param: str) -> datetime | None:
    try:
        return parse_since(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise ApiError(400, f"{param}: {exc}", code="invalid_value", param=param) from None


def filters_of(body: SearchBody) -> SearchFilters:
    return SearchFilters(
        since=parse_bound(body.since, "since"),
        until=parse_bound(body.until, "until"),
        authors=list(body.authors),
        exclude_authors=list(body.exclude_authors),
        sources=list(body.sources),
        langs=list(body.langs),
        hashtags=[h.lower().lstrip("#") for h in body.hashtags],
        domains=[normalize_domain(d) for d in body.domains],
        exclude_domains=[normalize_domain(d) for d in body.exclude_domains],
        min_likes=body.min_likes,
    )


class PostOut(BaseModel):
    id: str
    source: str
    author: str
    author_name: str | None
    author_id: str | None
    text: str
    created_at: str
    indexed_at: str | None
    url: str | None
    lang: str | None
    hashtags: list[str]
    mentions: list[str]
    reply_to: str | None
    quote_of: str | None
    likes: int | None
    reposts: int | None
    replies: int | None
    quotes: int | None


class SearchHitOut(PostOut):
    score: float


class SearchResult(BaseModel):
    object: Literal["list"]
    data: list[SearchHitOut]
    as_of: str = Field(description="When the results were computed (they may come from a "
                       "cache that no write has made stale since)")


@router.post(
    "/search",
    summary="Search posts (hybrid lexical + dense + recency)",
    response_class=Response,
    responses={200: {"model": SearchResult, "content": {"application/json": {}}}},
)
async def search(
    body: SearchBody,
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> Response:
    req = SearchRequest(query=body.query, filters=filters_of(body), limit=body.limit,
                        mode=body.mode, sort=body.sort)
    retriever = services.runtime.retriever

    async def compute() -> bytes:
        hits = await asyncio.to_thread(retriever.search, req)
        payload = {
            "object": "list",
            "data": [{**h.post.public_dict(), "score": round(h.score, 6)} for h in hits],
            "as_of": iso(datetime.now(UTC)),
        }
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    body_bytes = await services.search_cache.get(body.model_dump_json(), compute)
    services.meter(who, "search", 0, 0, "/v1/search")
    return Response(body_bytes, media_type="application/json")


@router.get("/posts/{post_id:path}/thread",
            summary="A post with its parent chain, the post it quotes, its replies and quotes")
async def get_thread(
    post_id: str,
    replies: int = Query(30, ge=0, le=200, description="at most this many replies"),
    quotes: int = Query(20, ge=0, le=200, description="at most this many quotes"),
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    store = services.runtime.store

    def read() -> dict[str, Any] | None:
        post = find_post(post_id, store)
        return gather(store, post, replies, quotes).to_dict() if post is not None else None

    thread = await asyncio.to_thread(read)
    services.meter(who, "posts", 0, 0, "/v1/posts/thread")
    if thread is None:
        raise ApiError(404, f"No post with id or URL {post_id!r}", code="post_not_found",
                       param="id")
    return thread


@router.get("/authors", summary="The author directory: accounts by name or handle")
async def list_authors(
    q: str = Query(..., min_length=1, max_length=200,
                   description="a handle (with or without @), a display name, or part of one"),
    limit: int = Query(20, ge=1, le=100),
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    found = await asyncio.to_thread(search_authors, services.runtime.store, q, limit)
    services.meter(who, "authors", 0, 0, "/v1/authors")
    return {"object": "list", "data": [a.public_dict() for a in found]}


@router.get("/authors/{author:path}", summary="One account by id or handle, with its recent "
            "posts")
async def get_author(
    author: str,
    posts: int = Query(5, ge=0, le=50, description="how many of its newest posts"),
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    store = services.runtime.store

    def read() -> dict[str, Any] | None:
        found = store.get_author(author)
        if found is None:
            return None
        newest = services.runtime.retriever.search(SearchRequest(
            "", SearchFilters(authors=[found.id]), limit=posts)) if posts else []
        return {**found.public_dict(), "recent_posts": [h.post.public_dict() for h in newest]}

    out = await asyncio.to_thread(read)
    services.meter(who, "authors", 0, 0, "/v1/authors")
    if out is None:
        raise ApiError(404, f"No author {author!r} in the directory", code="author_not_found",
                       param="author")
    return out


@router.get("/posts/{post_id:path}", summary="One post by id (posts are shared public data)")
async def get_post(
    post_id: str,
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    post = await asyncio.to_thread(services.runtime.store.get_post, post_id)
    services.meter(who, "posts", 0, 0, "/v1/posts")
    if post is None:
        raise ApiError(404, f"No post with id {post_id!r}", code="post_not_found", param="id")
    return {"object": "post", **post.public_dict()}


def redact_source(status: dict[str, Any]) -> dict[str, Any]:
    """A source as a non-admin key sees it: no credentials in its spec, no raw error.

    A spec may carry a token in a URL's user-info or query string
    (``mastodon:https://host/api/v1/streaming?access_token=...``), and an
    exception's text may carry a URL, a path or a credential; only admin keys
    (``townsquare keys create --admin``) see either.
    """
    out = dict(status)
    out["name"] = strip_credentials(str(status.get("name") or status.get("kind") or "source"))
    if out.get("last_error"):
        out["last_error"] = f"{status.get('status', 'failed')} (details for admin keys)"
    return out


_URL_IN_SPEC = re.compile(r"[a-z][a-z0-9+.-]*://[^\s]+", re.IGNORECASE)


def strip_credentials(spec: str) -> str:
    """``rss:https://u:p@host/feed?token=x`` -> ``rss:https://host/feed``."""

    def clean(m: re.Match[str]) -> str:
        try:
            parts = urlsplit(m.group(0))
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            return "<url>"
        host = f"[{host}]" if ":" in host else host
        return urlunsplit((parts.scheme, host + port, parts.path, "", ""))

    return _URL_IN_SPEC.sub(clean, spec)


@router.get("/live", summary="What the sources are doing now (specs and errors: admin keys)")
async def live(
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    stats = await asyncio.to_thread(services.stats.get)
    supervisor = services.live.supervisor
    statuses = supervisor.statuses() if supervisor is not None else []
    sources = [s.public() if who.admin else redact_source(s.public()) for s in statuses]
    return {
        "sources": sources,
        "posts_total": int(stats.get("posts", 0)),
        "as_of": iso(datetime.now(UTC)),
    }


@router.get("/usage", summary="This key's metered usage (per model), and its quota")
async def usage(
    month: str | None = Query(None, pattern=r"^(19[7-9]\d|2\d{3})-(0[1-9]|1[0-2])$",
                              description="YYYY-MM (default: this month, UTC)"),
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    month = month or f"{datetime.now(UTC):%Y-%m}"
    await services.ledger.flush()
    rows = await asyncio.to_thread(services.runtime.store.usage_report, who.key_id, month)
    used = await services.quota.used(who.key_id)
    return {
        "object": "list",
        "key": {"name": who.name, "prefix": who.prefix, "tier": who.tier_name},
        "month": month,
        "data": [
            {
                "model": r.model,
                "requests": r.requests,
                "prompt_tokens": r.prompt_tokens or 0,
                "completion_tokens": r.completion_tokens or 0,
                "total_tokens": (r.prompt_tokens or 0) + (r.completion_tokens or 0),
            }
            for r in rows
        ],
        "limits": tier_summary(who.tier),
        "quota": {
            "monthly_tokens": who.tier.monthly_tokens,
            "used_this_month": used,
            "month_start": iso(month_start(datetime.now(UTC))),
        },
    }
