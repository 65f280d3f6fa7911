"""Shared pieces of the answer tests: a real SQLite store, posts, and an engine on a fake LLM."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import factories
from townsquare.answer import AnswerEngine, Personas, Policy
from townsquare.answer.engine import Answer
from townsquare.llm.base import LLM
from townsquare.llm.fake import FakeLLM
from townsquare.model import Post, Upsert
from townsquare.retrieval import Retriever
from townsquare.store.sqlite import SQLiteStore

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
MARKER_RE = re.compile(r"\[(\d+)\]")


#: Posts dated before the engine's pinned clock (``make_post(pid, author, text, age)``).
make_post = partial(factories.make_post, now=NOW)



def open_store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "answers.db")


def add_posts(store: SQLiteStore, posts: list[Post]) -> None:
    store.apply("test", [Upsert(p) for p in posts], None)


def make_engine(
    store: SQLiteStore,
    llm: LLM | None = None,
    clock: Callable[[], datetime] = lambda: NOW,
    personas_dir: Path | None = None,
) -> tuple[AnswerEngine, FakeLLM | LLM]:
    llm = llm or FakeLLM()
    engine = AnswerEngine(
        Retriever(store), llm, store, Personas.load(personas_dir), Policy(), clock=clock
    )
    return engine, llm


def check_answer(answer: Answer, store: SQLiteStore) -> None:
    """The acceptance invariants: every marker is a citation, every citation a stored post."""
    numbers = {c.n for c in answer.citations}
    for n in MARKER_RE.findall(answer.answer):
        assert int(n) in numbers, f"[{n}] in {answer.answer!r} is not a citation"
    for c in answer.citations:
        post = store.get_post(c.id)
        assert post is not None, f"citation {c.id} is not a stored post"
        assert post.text == c.text and post.author == c.author
    assert [c.n for c in answer.citations] == list(range(1, len(answer.citations) + 1))
