"""Story summaries: the answer engine's prompt and citations, applied to a story.

A story (:mod:`townsquare.trends.stories`) is a cluster of trending posts. Its
summary is written by the same LLM, under the same rules, persona and
untrusted-post quoting as a chat answer, and its ``[n]`` markers go through
the same :class:`~townsquare.answer.citations.CitationStream`, so a marker
can only point at a post the model was shown. :class:`StorySummarizer` is the
``AsyncSummarizer`` the story builder calls (it caches what comes back)::

    summarizer = StorySummarizer(engine)
    stories = await trend_engine.astories(summarizer, "1h", mode="fun")
    story.summary      # "Fans are losing it over the tour dates [1][2]…"
    story.citations    # post ids: marker [n] is citations[n - 1]

An unavailable model raises (the builder logs it and leaves the story
unsummarized until a later refresh): a story never gets a made-up summary.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from townsquare.answer.citations import Attributor, CitationStream, finalize
from townsquare.answer.prompt import build_prompt
from townsquare.llm.base import GenerationOptions
from townsquare.model import Post

if TYPE_CHECKING:
    from townsquare.answer.engine import AnswerEngine
    from townsquare.trends.stories import Story

SUMMARY_MAX_TOKENS = 160


def summary_question(story: Story) -> str:
    """The instruction standing in for a user's question."""
    title = " ".join(story.title.split())[:120].replace('"', "'")
    return (
        f'These posts are a trending story ("{title}", {story.size} posts by '
        f"{story.authors} people). Summarize in two or three sentences what happened "
        "and what people are saying, citing the posts."
    )


class StorySummarizer:
    """Writes a story's cited summary with an :class:`AnswerEngine`'s LLM and personas."""

    def __init__(self, engine: AnswerEngine, max_tokens: int = SUMMARY_MAX_TOKENS) -> None:
        self.engine = engine
        self.max_tokens = max_tokens
        #: Summaries written and their total wall time (for /metrics and benchmarks).
        self.calls = 0
        self.seconds = 0.0

    async def __call__(self, story: Story, posts: list[Post], mode: str) -> tuple[str, list[str]]:
        if not posts:
            raise ValueError(f"story {story.id} has no posts left to summarize")
        started = time.perf_counter()
        engine = self.engine
        persona = engine.personas.get(mode)
        prompt = build_prompt(
            engine.llm, persona, summary_question(story), posts, engine.clock(),
            max_tokens=self.max_tokens,
        )
        stream = CitationStream([p.n for p in prompt.posts], Attributor(prompt.posts))
        async for piece in engine.llm.generate(
            prompt.messages, GenerationOptions(max_tokens=self.max_tokens)
        ):
            stream.feed(piece)
        stream.finish()
        text = stream.text.strip()
        if not text:
            raise ValueError(f"the model wrote nothing for story {story.id}")
        citations = finalize(stream, prompt.posts)
        self.calls += 1
        self.seconds += time.perf_counter() - started
        return text, [c.id for c in citations]
