"""The answer engine: question + conversation -> fresh posts -> cited answer.

Every surface (``townsquare ask``/``chat``, the HTTP API, the web page) goes
through :class:`AnswerEngine`; nothing else talks to the LLM for answers.

API
---

Build one per process (it is stateless between requests and safe to share)::

    engine = runtime.engine                          # built by the composition root
                                                     # (townsquare.runtime), or AnswerEngine(
                                                     #   retriever, llm, store, personas, policy)
    answer = await engine.answer(AnswerRequest("what are people saying about the strike?"))

    async for event in engine.stream(AnswerRequest(question, conversation_id=cid,
                                                   owner=key_id, mode="fun")):
        if isinstance(event, Delta):
            send(event.text)                         # verified sentences, renumbered
        else:                                        # Final: always last, exactly once
            send_json(event.answer.to_dict())

:class:`AnswerRequest` fields: ``question``; ``conversation_id`` (None starts a
new conversation; the id comes back on the answer); ``owner`` (the API key id,
None for the CLI: a conversation is only visible to its owner); ``mode`` (a
persona name; default: the conversation's, else ``regular``); ``filters``
(:class:`~townsquare.store.base.SearchFilters`: since/until/authors/
exclude_authors/sources/langs/hashtags; explicit filters win over ones read
from the question); ``max_search_results`` (posts given to the model, default
8); ``search`` (``auto``: search unless the message is small talk, ``on``,
``off``, as xAI's ``search_parameters.mode``); ``model`` (an LLM backend name
from ``LLMS``, resolved through ``llms``; None: the engine's LLM);
``max_tokens``, ``temperature``; ``persist`` (False: answer without saving
the turn); ``history`` (earlier turns as ``ChatMessage``s, for stateless
callers like ``/v1/chat/completions`` that send the transcript each time;
system messages in it are ignored, the engine's rules always apply).

:class:`Answer` (``to_dict()`` is the JSON shape of ``ask --json`` and the API):
``answer`` text whose ``[n]`` markers all exist in ``citations``
(``{n, id, author, url, created_at, text, cited}``, every one a stored post),
``as_of`` (the time the model was told), ``posts_span`` (oldest and newest
post time among the citations), ``mode``, ``model``, ``usage``,
``conversation_id``, ``degraded`` (search-only, see below), ``declined``
(the policy category, or None), ``query`` (the search that ran),
``timings`` (retrieval, time to first token, total), ``verification``
(``{"sentences", "kept", "recited", "dropped"}``: what the gate did) and
``language`` (the asker's, which the answer and its fixed texts are in).

How the text is written (``style``, the ``answer_style`` setting): ``grounded``
composes it from the posts' own words (:mod:`townsquare.answer.compose`);
``generative`` has the LLM write it; ``auto`` is grounded for the bundled
135M model and generative for every other. Either way every sentence passes
the verification :class:`~townsquare.answer.verify.Gate` before it is
yielded, so the stream shows only what the final answer keeps; when the gate
keeps nothing of a generated answer, the answer is composed instead.

Errors raised before any event: :class:`ConversationNotFound`,
:class:`~townsquare.answer.personas.UnknownPersona`, :class:`UnknownModel`,
``ValueError`` for an empty question. During streaming only
:class:`~townsquare.llm.base.LLMError` when the model breaks off mid-answer.

Degraded answers: when the LLM raises
:class:`~townsquare.llm.base.LLMUnavailable` before producing text, the
engine still answers, search-only: no generated text, the posts composed
(quoted without links or markup, cited), ``degraded=True`` and
``retry_after`` set, so a saturated or crashed model server never turns into
an error page.

Pipeline: language -> policy check -> query understanding (time phrases, @/#,
follow-up rewriting) -> hybrid retrieval (relevance x recency) -> prompt
(budgeted, posts newest first as quoted untrusted data, "Answer in French.")
-> generation or composition -> verification gate (sentence by sentence) ->
citations -> persist.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from townsquare.answer import language
from townsquare.answer.citations import Citation, finalize
from townsquare.answer.compose import compose
from townsquare.answer.contract import (
    DEFAULT_MAX_RESULTS,
    Answer,
    AnswerEvent,
    AnswerRequest,
    ConversationNotFound,
    Delta,
    Final,
    UnknownModel,
)
from townsquare.answer.personas import Persona, Personas
from townsquare.answer.policy import Policy
from townsquare.answer.prompt import build_prompt
from townsquare.answer.query import QueryPlan, split_handles, understand
from townsquare.answer.sanitize import clean_text
from townsquare.answer.verify import Gate
from townsquare.llm.base import LLM, GenerationOptions, LLMUnavailable, Usage
from townsquare.model import Post, iso
from townsquare.retrieval import Retriever, SearchRequest
from townsquare.retrieval.threads import find_post, gather
from townsquare.store.base import Conversation, Store, StoredMessage
from townsquare.timeutil import utcnow

SEARCH_ONLY_PREFIX = language.text("search_only", "en")
#: Backends ``answer_style = "auto"`` answers with grounded composition (too small to
#: write reliable prose); every other backend writes, through the gate.
GROUNDED_BACKENDS = frozenset({"local"})
ANSWER_STYLES = ("auto", "grounded", "generative")




class AnswerEngine:
    def __init__(
        self,
        retriever: Retriever,
        llm: LLM,
        store: Store,
        personas: Personas,
        policy: Policy,
        clock: Callable[[], datetime] = utcnow,
        llms: Callable[[str], LLM] | None = None,
        trending: Callable[[], list[Post]] | None = None,
        style: str = "auto",
    ) -> None:
        if style not in ANSWER_STYLES:
            raise ValueError(f"answer_style must be one of {', '.join(ANSWER_STYLES)}, "
                             f"not {style!r}")
        #: ``auto``, ``grounded`` (compose from the posts) or ``generative`` (the LLM
        #: writes, the gate checks); see :meth:`style_for`.
        self.style = style
        #: Sample posts of the current top trends, given to the model when a question
        #: asks what is trending (the service wires it to its trend engine).
        self.trending = trending
        self.retriever = retriever
        self.llm = llm
        self.store = store
        self.personas = personas
        self.policy = policy
        self.clock = clock
        self._llms = llms

    def llm_for(self, model: str | None) -> LLM:
        """The engine's LLM, or the backend a request names."""
        if not model or model in (self.llm.name, self.llm.model_id):
            return self.llm
        from townsquare.llm import LLMS

        if self._llms is not None and model in LLMS.names():
            return self._llms(model)
        raise UnknownModel(
            f"unknown model {model!r}; available: {self.llm.name} ({self.llm.model_id})"
            + (f", backends: {', '.join(LLMS.names())}" if self._llms else "")
        )

    async def answer(self, request: AnswerRequest) -> Answer:
        """The whole answer at once (the stream, consumed)."""
        async for event in self.stream(request):
            if isinstance(event, Final):
                return event.answer
        raise RuntimeError("answer stream ended without a final event")  # pragma: no cover

    def style_for(self, llm: LLM) -> str:
        """``grounded`` or ``generative`` for ``llm`` under the engine's ``style`` setting."""
        if self.style in ("grounded", "generative"):
            return self.style
        small = llm.name in GROUNDED_BACKENDS and llm.bundled
        return "grounded" if small else "generative"

    async def stream(self, request: AnswerRequest) -> AsyncIterator[AnswerEvent]:
        """Verified sentences as they are ready, then one :class:`Final`."""
        started = time.perf_counter()
        question = request.question.strip()
        if not question:
            raise ValueError("the question is empty")
        now = self.clock()
        conv, history = await asyncio.to_thread(self._conversation, request)
        persona = self.personas.get(request.mode or conv.mode)
        llm = self.llm_for(request.model)
        earlier = [m.content for m in history if m.role == "user"]
        lang = await asyncio.to_thread(language.detect, question, earlier)
        turn = _Turn(self, request, question, now, conv, persona, llm, started)
        turn.lang = lang

        # Policy, query understanding and prompt building are CPU-bound regexes and
        # tokenizing: in a thread, so a long question never stalls the event loop.
        decision = await asyncio.to_thread(self.policy.check, question)
        if not decision.allowed:
            text = clean_text(language.text("self_harm", lang)
                              if decision.category == "self_harm" else persona.declined_text(lang))
            yield Delta(text)
            yield Final(await turn.finish(text, [], declined=decision.category))
            return

        plan = await asyncio.to_thread(functools.partial(
            understand, question, now, request.filters, history, request.search,
            directory=self.store,
        ))
        turn.plan = plan
        posts: list[Post] = []
        if plan.thread_of is not None:  # "explain this post": its thread is the context
            posts = await asyncio.to_thread(thread_context, self.store, plan.thread_of)
        if plan.retrieve and not (posts and not plan.search_text):
            search = SearchRequest(
                plan.search_text, plan.filters, limit=max(1, request.max_search_results),
                sort=request.sort, boost_authors=plan.boost_authors,
            )
            hits = await asyncio.to_thread(self.retriever.search, search, now)
            found = [h.post for h in hits]
            limit = len(posts) + max(1, request.max_search_results)
            posts = _merge(posts, found, limit) if posts else found
        if self.trending is not None and asks_trending(question):
            trend_posts = await asyncio.to_thread(self.trending)
            if trend_posts:
                posts = _merge(trend_posts, posts, max(1, request.max_search_results))
        notice = ""
        named = _named_handles(question, plan, request)
        if plan.retrieve and not posts and named:
            # "what does @x say about y?" and @x said nothing: say so, then show what
            # others said to or about @x, each quote under its own author.
            who = ", ".join("@" + h for h in named)
            notice = language.text("none_by_author", lang).format(
                who=who, window=language.window_label(plan.window, lang))
            posts = await asyncio.to_thread(
                self._mentioning, named, plan, request, now)
            if posts:
                notice += " " + language.text("mentioning", lang).format(who=who)
            else:
                notice = clean_text(notice)
                yield Delta(notice)
                yield Final(await turn.finish(notice, []))
                return
        turn.timings["retrieval_s"] = time.perf_counter() - started
        if plan.retrieve and not posts:
            text = clean_text(persona.no_results_text(plan.window, lang))  # a user persona's
            yield Delta(text)
            yield Final(await turn.finish(text, []))
            return

        prompt = await asyncio.to_thread(functools.partial(
            build_prompt, llm, persona, question, posts, now, history,
            max_tokens=request.max_tokens, searched=plan.retrieve, lang=lang,
        ))
        turn.timings["prompt_s"] = time.perf_counter() - started - turn.timings["retrieval_s"]
        gate = Gate(prompt.posts, now)
        turn.gate = gate
        # Posts of others, after the named account said nothing: quoted under their own
        # authors (composed), never handed to a model asked what the account says.
        style = "grounded" if notice else self.style_for(llm)
        if style == "grounded" or not plan.retrieve:
            if plan.retrieve:
                text = compose(question, prompt.posts, now, lang, persona.framing)
                out = gate.feed(text) + gate.finish()
            else:
                out = ""
            if not out:
                out = language.text("no_search" if not plan.retrieve else "nothing_supported",
                                    lang)
            if notice:
                out = clean_text(notice) + "\n" + out
            turn.timings["ttft_s"] = time.perf_counter() - started
            yield Delta(out)
            yield Final(await turn.finish(out, finalize(gate, prompt.posts)))
            return

        options = GenerationOptions(max_tokens=request.max_tokens)
        if request.temperature is not None:
            options.temperature = request.temperature
        if request.top_p is not None:
            options.top_p = request.top_p
        options.stop, options.seed = list(request.stop), request.seed
        generation = llm.generate(prompt.messages, options)
        pieces = generation.__aiter__()
        shown = False
        first_at = last_at = 0.0
        try:
            async for piece in pieces:
                out = gate.feed(piece)
                if out:
                    last_at = time.perf_counter()
                    if not shown:
                        first_at = last_at
                        turn.timings["ttft_s"] = first_at - started
                        shown = True
                    yield Delta(out)
        except LLMUnavailable as exc:
            if shown:
                raise
            # Search-only: no generated text, the posts composed (quoted, cited, cleaned).
            gate = Gate(prompt.posts, now)
            turn.gate = gate
            body = gate.feed(compose(question, prompt.posts, now, lang, persona.framing))
            body += gate.finish()
            text = language.text("search_only", lang) + ("\n" + body if body else "")
            yield Delta(text)
            yield Final(await turn.finish(text, finalize(gate, prompt.posts), degraded=True,
                                          retry_after=exc.retry_after))
            return
        finally:
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                await aclose()
        tail = gate.finish()
        if tail:
            if not shown:
                turn.timings["ttft_s"] = time.perf_counter() - started
            shown = True
            yield Delta(tail)
        if gate.stats.kept + gate.stats.recited == 0:
            # The gate left nothing: answer from the posts themselves.
            composed = gate.feed(compose(question, prompt.posts, now, lang, persona.framing))
            composed += gate.finish()
            if not composed:
                composed = language.text("nothing_supported", lang)
            yield Delta(("\n" if shown else "") + composed)
            if not shown:
                turn.timings["ttft_s"] = time.perf_counter() - started
        text = gate.text.strip() or language.text("nothing_supported", lang)
        usage = generation.usage
        if not usage.prompt_tokens:
            usage.prompt_tokens = prompt.prompt_tokens
        if usage.completion_tokens > 1 and last_at > first_at:
            turn.timings["decode_tokens_per_s"] = (usage.completion_tokens - 1) / (
                last_at - first_at
            )
        yield Final(await turn.finish(text, finalize(gate, prompt.posts), usage=usage))

    def _mentioning(self, handles: list[str], plan: QueryPlan, request: AnswerRequest,
                    now: datetime) -> list[Post]:
        """Posts on the question's topic that mention one of ``handles`` (by others)."""
        limit = max(1, request.max_search_results)
        query = " ".join([plan.search_text, *handles]).strip()
        filters = replace(plan.filters, authors=[])
        hits = self.retriever.search(
            SearchRequest(query, filters, limit=limit * 5, sort=request.sort), now)
        wanted = set(handles)
        return [h.post for h in hits
                if wanted & {m.lower() for m in h.post.mentions}][:limit]

    def _conversation(self, request: AnswerRequest) -> tuple[Conversation, list[StoredMessage]]:
        if request.conversation_id:
            conv = self.store.get_conversation(request.conversation_id, request.owner)
            if conv is None:
                raise ConversationNotFound(f"no conversation {request.conversation_id!r}")
            return conv, list(conv.messages)
        mode = request.mode or "regular"
        self.personas.get(mode)  # fail before creating anything
        now = self.clock()
        given = [
            StoredMessage(m.role, m.content, now, {})
            for m in request.history
            if m.role in ("user", "assistant") and m.content.strip()
        ]
        if not request.persist:
            return Conversation("", request.owner, mode, now), given
        return self.store.create_conversation(request.owner, mode), given


_TRENDING_RE = re.compile(
    r"\b(trending|trends|tendances?|what'?s happening|what is happening"
    r"|qu'?est-ce qui se passe|que se passe-t-il|quoi de neuf)\b",
    re.IGNORECASE,
)


def _named_handles(question: str, plan: QueryPlan, request: AnswerRequest) -> list[str]:
    """@handles the question names as speakers, when they (not the caller) set the filter."""
    if request.filters.authors or not plan.filters.authors:
        return []
    asked = set(split_handles(question)[1])
    return [a for a in plan.filters.authors if a in asked]


def asks_trending(question: str) -> bool:
    """Whether the question asks what is trending or happening now (en, fr)."""
    return _TRENDING_RE.search(question.replace("\u2019", "'")) is not None


def thread_context(store: Store, ref: str) -> list[Post]:
    """The posts of the thread a question names (none when the post is unknown)."""
    post = find_post(ref, store)
    return gather(store, post, replies=12, quotes=6).posts() if post is not None else []


def _merge(first: list[Post], rest: list[Post], limit: int) -> list[Post]:
    """``first`` then ``rest``, without repeats, at most ``limit``."""
    seen: set[str] = set()
    out: list[Post] = []
    for post in [*first, *rest]:
        if post.id not in seen:
            seen.add(post.id)
            out.append(post)
    return out[:limit]


class _Turn:
    """One question's bookkeeping: builds the Answer and saves both messages."""

    def __init__(
        self,
        engine: AnswerEngine,
        request: AnswerRequest,
        question: str,
        now: datetime,
        conv: Conversation,
        persona: Persona,
        llm: LLM,
        started: float,
    ) -> None:
        self.engine = engine
        self.request = request
        self.question = question
        self.now = now
        self.conv = conv
        self.persona = persona
        self.llm = llm
        self.started = started
        self.plan: QueryPlan | None = None
        self.timings: dict[str, float] = {}
        self.lang = language.DEFAULT
        self.gate: Gate | None = None

    async def finish(
        self,
        text: str,
        citations: list[Citation],
        usage: Usage | None = None,
        degraded: bool = False,
        retry_after: float | None = None,
        declined: str | None = None,
    ) -> Answer:
        self.timings["total_s"] = time.perf_counter() - self.started
        answer = Answer(
            answer=text,
            citations=citations,
            as_of=self.now,
            mode=self.persona.name,
            model=self.llm.model_id,
            usage=usage or Usage(),
            conversation_id=self.conv.id or None,
            degraded=degraded,
            retry_after=retry_after,
            declined=declined,
            plan=self.plan,
            timings=dict(self.timings),
            verification=self.gate.stats if self.gate is not None else None,
            language=self.lang,
        )
        if self.request.persist and self.conv.id:
            await asyncio.to_thread(self._save, answer)
        return answer

    def _save(self, answer: Answer) -> None:
        store, conv_id = self.engine.store, self.conv.id
        user_meta: dict[str, Any] = {"mode": answer.mode}
        if self.plan is not None:
            user_meta["plan"] = self.plan.to_meta()
        store.add_message(conv_id, "user", self.question, user_meta)
        store.add_message(
            conv_id,
            "assistant",
            answer.answer,
            {
                "citations": [c.id for c in answer.citations],
                "as_of": iso(answer.as_of),
                "model": answer.model,
                "mode": answer.mode,
                "degraded": answer.degraded,
                "declined": answer.declined,
                "usage": answer.to_dict()["usage"],
                "language": answer.language,
            },
        )


__all__ = [
    "ANSWER_STYLES", "DEFAULT_MAX_RESULTS", "GROUNDED_BACKENDS", "SEARCH_ONLY_PREFIX", "Answer",
    "AnswerEngine", "AnswerEvent", "AnswerRequest", "ConversationNotFound", "Delta", "Final",
    "UnknownModel", "asks_trending", "thread_context",
]
