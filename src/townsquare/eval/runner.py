"""Runs question sets through the answer engine, as a user would, and scores each answer.

Each set gets a fresh SQLite store in a temporary directory (never the user's
data): its posts go in through the ``jsonl`` parser and the ingest pipeline
(embedded like any ingest), then every question is asked through
:meth:`AnswerEngine.stream` with the configured LLM backend, follow-ups in the
conversation of the question they follow. The clock is the wall clock, so
post times (set relative to the start of the run) read as fresh.

Times are measured here, outside the engine: time to first token is the wait
from asking to the first non-empty streamed text, total is until the final
answer. An in-process model (``local``) is loaded before the first question,
so its load time is not counted as that question's. Scoring
(:mod:`townsquare.eval.score`) reads only the answer's public JSON,
``Answer.to_dict()``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from townsquare.answer import AnswerEngine, AnswerRequest, Delta, Final
from townsquare.config import Settings
from townsquare.eval.score import AnswerScore, score_answer
from townsquare.eval.sets import QuestionSet
from townsquare.ingest import Ingestor, IngestStats
from townsquare.llm.base import LLM
from townsquare.model import Batch, Upsert
from townsquare.runtime import Runtime
from townsquare.sources.jsonl import parse_line

Progress = Callable[[str], None]


@dataclass(slots=True)
class Result:
    set_name: str
    question_id: str
    question: str
    answer: dict[str, Any]
    score: AnswerScore
    #: Set when asking failed (the answer is then empty and scores zero).
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "set": self.set_name, "id": self.question_id, "question": self.question,
            "answer": self.answer.get("answer", ""),
            "citations": [{k: c.get(k) for k in ("n", "id", "author", "cited")}
                          for c in self.answer.get("citations") or []],
            "declined": self.answer.get("declined"), "degraded": self.answer.get("degraded"),
            "model": self.answer.get("model"),
            "conversation_id": self.answer.get("conversation_id"), "error": self.error,
            "score": self.score.to_dict(),
            #: The engine's whole answer (``Answer.to_dict()``), so a run can be re-scored.
            "response": self.answer,
        }


@dataclass(slots=True)
class EvalRun:
    backend: str
    model: str
    results: list[Result] = field(default_factory=list)
    #: Sets left out, with why (e.g. Tweets.csv not found).
    notes: list[str] = field(default_factory=list)


def run_eval(
    settings: Settings,
    sets: list[QuestionSet],
    mode: str | None = None,
    max_results: int = 8,
    progress: Progress | None = None,
) -> EvalRun:
    """Ingest and ask every set with ``settings``' LLM backend, in fresh temporary stores."""
    return asyncio.run(_run(settings, sets, mode, max_results, progress or (lambda _: None)))


async def _run(
    settings: Settings, sets: list[QuestionSet], mode: str | None, max_results: int,
    progress: Progress,
) -> EvalRun:
    llm: LLM | None = None
    run = EvalRun(backend=settings.llm, model="")
    with tempfile.TemporaryDirectory(prefix="townsquare-eval-") as tmp:
        try:
            for qset in sets:
                store_path = Path(tmp) / f"{qset.name}.db"
                runtime = Runtime(settings.model_copy(update={"store": str(store_path)}))
                try:
                    if llm is None:
                        llm = runtime.llm()
                        run.model = llm.model_id
                        # In-process models load first, so the first question's time is
                        # not the load's (a no-op for a server).
                        progress(f"loading {llm.model_id}")
                        await asyncio.to_thread(llm.load)
                    progress(f"{qset.name}: ingesting {len(qset.records):,} posts")
                    await asyncio.to_thread(ingest, runtime, qset)
                    engine = runtime.new_engine(llm=llm)
                    await _ask_all(engine, qset, mode, max_results, run, progress)
                finally:
                    runtime.close()
        finally:
            if llm is not None:
                await llm.aclose()
    return run


def ingest(runtime: Runtime, qset: QuestionSet, batch_size: int = 2000) -> int:
    """The set's records through the jsonl parser and the ingest pipeline; posts stored."""
    events = [parse_line(json.dumps(rec, ensure_ascii=False)) for rec in qset.records]
    bad = [ev for ev in events if not isinstance(ev, Upsert)]
    if bad:
        raise ValueError(f"question set {qset.name!r} has malformed posts: {bad[0]!r}")
    ingestor = Ingestor(runtime.store, runtime.embedder)
    stats = IngestStats(stream_key=f"eval:{qset.name}")
    for i in range(0, len(events), batch_size):
        ingestor.commit(stats.stream_key, Batch(list(events[i:i + batch_size]), None), stats)
    return stats.posts


async def _ask_all(
    engine: AnswerEngine, qset: QuestionSet, mode: str | None, max_results: int,
    run: EvalRun, progress: Progress,
) -> None:
    conversations: dict[str, str | None] = {}
    for q in qset.questions:
        request = AnswerRequest(
            q.text, conversation_id=conversations.get(q.follows) if q.follows else None,
            mode=mode, max_search_results=max_results,
        )
        started = time.perf_counter()
        ttft: float | None = None
        answer: dict[str, Any] = {"answer": "", "citations": []}
        error = None
        try:
            async for event in engine.stream(request):
                if isinstance(event, Delta):
                    if ttft is None and event.text.strip():
                        ttft = time.perf_counter() - started
                elif isinstance(event, Final):
                    answer = event.answer.to_dict()
        except Exception as exc:  # one failed question must not lose the others' scores
            error = f"{type(exc).__name__}: {exc}"
        total = time.perf_counter() - started
        conversations[q.id] = answer.get("conversation_id")
        score = score_answer(answer, q.expect, qset.names, ttft_s=ttft, total_s=total)
        run.results.append(Result(qset.name, q.id, q.text, answer, score, error))
        progress(f"{qset.name}/{q.id}: {total:.1f}s")


def rescore(saved: dict[str, Any], sets: list[QuestionSet]) -> EvalRun:
    """Score the answers of an earlier ``--json`` run again (a changed scorer, no model).

    Each saved result is matched to its question by set name and id; answers
    whose question is no longer in ``sets`` are left out with a note.
    """
    questions = {(qset.name, q.id): (qset, q) for qset in sets for q in qset.questions}
    run = EvalRun(backend=str(saved.get("backend", "")), model=str(saved.get("model", "")))
    for item in saved.get("results") or []:
        key = (str(item.get("set")), str(item.get("id")))
        if key not in questions or not isinstance(item.get("response"), dict):
            run.notes.append(f"{key[0]}/{key[1]}: no such question or no saved answer, left out")
            continue
        qset, q = questions[key]
        old = item.get("score") or {}
        score = score_answer(item["response"], q.expect, qset.names,
                             ttft_s=old.get("ttft_s"), total_s=old.get("total_s"))
        run.results.append(Result(qset.name, q.id, q.text, item["response"], score,
                                  item.get("error")))
    return run

