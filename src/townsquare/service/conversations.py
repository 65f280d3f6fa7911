"""``GET /v1/conversations/{id}``: a conversation of the calling key.

Another key's conversation answers 404, exactly like one that does not
exist: conversations are private to the key that made them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends

from townsquare.model import iso
from townsquare.service.auth import Principal
from townsquare.service.deps import Services, get_principal, get_services
from townsquare.service.errors import ApiError
from townsquare.service.models import model_id

router = APIRouter(prefix="/v1")


@router.get("/conversations/{conversation_id}",
            summary="A conversation of the calling key (others' are not found)")
async def get_conversation(
    conversation_id: str,
    who: Principal = Depends(get_principal),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    conv = await asyncio.to_thread(
        services.runtime.store.get_conversation, conversation_id, who.owner
    )
    if conv is None:
        raise ApiError(404, f"No conversation {conversation_id!r} for this key",
                       code="conversation_not_found", param="conversation_id")
    return {
        "id": conv.id,
        "object": "conversation",
        "mode": conv.mode,
        "model": model_id(conv.mode),
        "created_at": iso(conv.created_at),
        "messages": [
            {"role": m.role, "content": m.content, "created_at": iso(m.created_at),
             "meta": m.meta}
            for m in conv.messages
        ],
    }
