"""What goes into the answer engine and what comes out of it.

:class:`AnswerRequest` in; :class:`Delta` events (verified text to show) and
one :class:`Final` (the :class:`Answer`) out; :class:`ConversationNotFound`
and :class:`UnknownModel` when a request names what does not exist. The
engine (:mod:`townsquare.answer.engine`) documents every field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from townsquare.answer import language
from townsquare.answer.citations import Citation
from townsquare.answer.query import QueryPlan, SearchMode
from townsquare.answer.verify import Verification
from townsquare.errors import NotFound
from townsquare.llm.base import ChatMessage, Usage
from townsquare.model import iso
from townsquare.retrieval import Sort
from townsquare.store.base import SearchFilters

#: Posts given to the model unless the request says otherwise.
DEFAULT_MAX_RESULTS = 8


class ConversationNotFound(NotFound, LookupError):
    """No such conversation for this owner (someone else's looks the same: absent)."""

    code = "conversation_not_found"
    param = "conversation_id"

    def public_message(self) -> str:
        return "No such conversation for this key"


class UnknownModel(NotFound, ValueError):
    """A model override that names no LLM backend."""

    code = "model_not_found"
    param = "model"


@dataclass(slots=True)
class AnswerRequest:
    question: str
    conversation_id: str | None = None
    owner: str | None = None
    mode: str | None = None
    filters: SearchFilters = field(default_factory=SearchFilters)
    max_search_results: int = DEFAULT_MAX_RESULTS
    search: SearchMode = "auto"
    model: str | None = None
    max_tokens: int = 320
    temperature: float | None = None
    #: Sampling options passed to the LLM as given (None: the backend's default).
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    #: Retrieval order: relevance (with recency), latest, top (engagement).
    sort: Sort = "relevance"
    persist: bool = True
    #: Earlier turns supplied by the caller instead of a stored conversation (stateless
    #: APIs such as /v1/chat/completions). Only user/assistant turns are used: a
    #: client's system message never replaces the engine's rules.
    history: list[ChatMessage] = field(default_factory=list)


@dataclass(slots=True)
class Answer:
    answer: str
    citations: list[Citation]
    as_of: datetime
    mode: str
    model: str
    usage: Usage
    conversation_id: str | None = None
    degraded: bool = False
    retry_after: float | None = None
    declined: str | None = None
    plan: QueryPlan | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: What the verification gate did (None for fixed texts: declined, no results).
    verification: Verification | None = None
    #: The asker's language (ISO 639-1), which the answer is written in.
    language: str = language.DEFAULT

    @property
    def posts_span(self) -> tuple[str, str] | None:
        if not self.citations:
            return None
        times = sorted(c.created_at for c in self.citations)  # ISO-Z strings sort as times
        return times[0], times[-1]

    def to_dict(self) -> dict[str, Any]:
        span = self.posts_span
        return {
            "answer": self.answer,
            "citations": [c.to_dict() for c in self.citations],
            "as_of": iso(self.as_of),
            "posts_span": {"from": span[0], "to": span[1]} if span else None,
            "mode": self.mode,
            "model": self.model,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "total_tokens": self.usage.total_tokens,
            },
            "conversation_id": self.conversation_id,
            "degraded": self.degraded,
            "retry_after": self.retry_after,
            "declined": self.declined,
            "query": self.plan.to_meta() if self.plan else None,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "verification": (self.verification or Verification()).to_dict(),
            "language": self.language,
        }


@dataclass(slots=True)
class Delta:
    """Answer text to show now (markers already renumbered)."""

    text: str


@dataclass(slots=True)
class Final:
    """The finished answer; always the last event."""

    answer: Answer


AnswerEvent = Delta | Final
