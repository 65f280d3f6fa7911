"""``/v1/conversations``: the calling key's conversations, to list, read, rename, delete, export.

Another key's conversation answers 404, exactly like one that does not
exist: conversations are private to the key that made them, and nothing
here tells a caller whether an id exists for someone else.

The Markdown export is the transcript as a reader would cite it: each
answer followed by its sources, numbered as the answer numbers them, each a
link to the post (plain text where the post has no http(s) address).
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from townsquare.model import iso
from townsquare.service.deps import Services, get_principal, get_services
from townsquare.service.errors import ApiError
from townsquare.service.gate.auth import Principal
from townsquare.service.routes.models import model_id
from townsquare.store.base import Conversation, ConversationSummary, Store

router = APIRouter(prefix="/v1")

#: How much of the first question stands in for a title never set.
TITLE_FROM_QUESTION = 80


def _not_found(conversation_id: str) -> ApiError:
    return ApiError(404, f"No conversation {conversation_id!r} for this key",
                    code="conversation_not_found", param="conversation_id")


def _title(title: str | None, first_question: str | None) -> str:
    if title:
        return title
    text = " ".join((first_question or "").split())
    if not text:
        return "New conversation"
    return text if len(text) <= TITLE_FROM_QUESTION else text[: TITLE_FROM_QUESTION - 1] + "…"


def _first_question(conv: Conversation) -> str | None:
    return next((m.content for m in conv.messages if m.role == "user"), None)


def _summary(c: ConversationSummary) -> dict[str, Any]:
    return {
        "id": c.id,
        "object": "conversation",
        "title": _title(c.title, c.first_question),
        "renamed": c.title is not None,
        "mode": c.mode,
        "model": model_id(c.mode),
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
        "messages": c.messages,
    }


@router.get("/conversations", summary="The calling key's conversations, most recent first")
async def list_conversations(
    limit: int = Query(50, ge=1, le=200),
    before: datetime | None = Query(
        None, description="Only conversations last active before this time (the previous "
        "page's last updated_at)"),
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    rows = await asyncio.to_thread(
        services.runtime.store.list_conversations, who.owner, limit, before
    )
    return {"object": "list", "data": [_summary(c) for c in rows],
            "has_more": len(rows) == limit}


async def _owned(services: Services, conversation_id: str, who: Principal) -> Conversation:
    conv = await asyncio.to_thread(
        services.runtime.store.get_conversation, conversation_id, who.owner
    )
    if conv is None:
        raise _not_found(conversation_id)
    return conv


def cited_posts(store: Store, conv: Conversation) -> dict[int, list[dict[str, Any]]]:
    """Each answer's citations (stored as post ids, in ``[n]`` order), read back as posts.

    Keyed by message index. A post deleted since is left out; the others keep
    their numbers, so the answer's markers still point at the right posts.
    """
    out: dict[int, list[dict[str, Any]]] = {}
    for i, m in enumerate(conv.messages):
        ids = m.meta.get("citations") if m.role == "assistant" else None
        if not isinstance(ids, list):
            continue
        cites = []
        for n, pid in enumerate(ids, start=1):
            post = store.get_post(pid) if isinstance(pid, str) else None
            if post is not None:
                cites.append({"n": n, **post.public_dict()})
        out[i] = cites
    return out


@router.get("/conversations/{conversation_id}",
            summary="A conversation of the calling key (others' are not found); each answer "
            "with its cited posts")
async def get_conversation(
    conversation_id: str,
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    conv = await _owned(services, conversation_id, who)
    cites = await asyncio.to_thread(cited_posts, services.runtime.store, conv)
    return {
        "id": conv.id,
        "object": "conversation",
        "title": _title(conv.title, _first_question(conv)),
        "renamed": conv.title is not None,
        "mode": conv.mode,
        "model": model_id(conv.mode),
        "created_at": iso(conv.created_at),
        "messages": [
            {"role": m.role, "content": m.content, "created_at": iso(m.created_at),
             "meta": m.meta, **({"citations": cites[i]} if i in cites else {})}
            for i, m in enumerate(conv.messages)
        ],
    }


class RenameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(
        ..., max_length=200,
        description="The new title; null or blank goes back to the first question")


@router.patch("/conversations/{conversation_id}", summary="Rename a conversation of this key")
async def rename_conversation(
    conversation_id: str,
    body: RenameBody,
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    title = " ".join((body.title or "").split()) or None
    store = services.runtime.store
    if not await asyncio.to_thread(store.rename_conversation, conversation_id, who.owner, title):
        raise _not_found(conversation_id)
    conv = await _owned(services, conversation_id, who)
    return {"id": conv.id, "object": "conversation",
            "title": _title(conv.title, _first_question(conv)), "renamed": title is not None}


@router.delete("/conversations/{conversation_id}",
               summary="Delete a conversation of this key, with its messages")
async def delete_conversation(
    conversation_id: str,
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    store = services.runtime.store
    if not await asyncio.to_thread(store.delete_conversation, conversation_id, who.owner):
        raise _not_found(conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.get("/conversations/{conversation_id}/export",
            summary="A conversation as Markdown, its citations as links")
async def export_conversation(
    conversation_id: str,
    format: Literal["markdown"] = Query("markdown", description="Only markdown for now"),
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> Response:
    conv = await _owned(services, conversation_id, who)
    cites = await asyncio.to_thread(cited_posts, services.runtime.store, conv)
    slug = re.sub(r"[^a-z0-9]+", "-", _title(conv.title, _first_question(conv)).lower())
    name = (slug.strip("-")[:60] or "conversation") + ".md"
    return Response(
        to_markdown(conv, cites), media_type="text/markdown; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _md_escape(text: str) -> str:
    """Text that Markdown shows as written (no links, images or emphasis from a post)."""
    return re.sub(r"([\\`*_{}\[\]()<>#!|])", r"\\\1", text)


def _link_target(url: Any) -> str | None:
    if isinstance(url, str) and re.match(r"^https?://[^\s<>]+$", url):
        return url.replace("(", "%28").replace(")", "%29")
    return None


def _citation_line(c: dict[str, Any]) -> str:
    who = str(c.get("author") or "unknown")
    name = c.get("author_name")
    label = f"{name} (@{who})" if name else f"@{who}"
    text = " ".join(str(c.get("text") or "").split())
    if len(text) > 280:
        text = text[:279] + "…"
    when = c.get("created_at")
    head = f"[{_md_escape(label)}]({url})" if (url := _link_target(c.get("url"))) \
        else _md_escape(label)
    tail = f" ({when})" if isinstance(when, str) else ""
    return f"{int(c.get('n') or 0)}. {head}{tail}: {_md_escape(text)}"


def to_markdown(conv: Conversation, cites: dict[int, list[dict[str, Any]]]) -> str:
    """The conversation as Markdown: questions, answers, and each answer's numbered sources.

    ``cites`` is :func:`cited_posts` of the conversation.
    """
    title = _title(conv.title, _first_question(conv))
    lines = [f"# {_md_escape(title)}", "",
             f"*townsquare conversation `{conv.id}`, {conv.mode} mode, started "
             f"{iso(conv.created_at)}*", ""]
    for i, m in enumerate(conv.messages):
        if m.role == "user":
            lines += [f"## Q: {_md_escape(' '.join(m.content.split()))}", ""]
            continue
        lines += [m.content.strip(), ""]
        citations = cites.get(i, [])
        if citations:
            lines += ["**Sources**", ""]
            lines += [_citation_line(c) for c in citations]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
