"""Story summaries: the answer engine's prompt, gate and composition, applied to a story.

A story (:mod:`townsquare.trends.stories`) is a cluster of trending posts. Its
summary is written the way a chat answer is: under the engine's
``answer_style`` either composed from the posts' own words
(:mod:`townsquare.answer.compose`: newest first, who says what, verbatim
quotes) or written by the LLM under the same rules, persona and
untrusted-post quoting; either way every sentence goes through the same
verification :class:`~townsquare.answer.verify.Gate`, so a summary says only
what the posts it cites say, and its markers can only point at a post the
summarizer was given. A generated summary the gate leaves empty falls back to
composition. :class:`StorySummarizer` is the ``AsyncSummarizer`` the story
builder calls (it caches what comes back); the web page, the API and story
watches' pushes all show these cached, gated texts::

    summarizer = StorySummarizer(engine)
    stories = await trend_engine.astories(summarizer, "1h", mode="fun")
    story.summary      # "The latest, from @rail (Rail Union) 3 minutes ago: “…” [1]. …"
    story.citations    # post ids: marker [n] is citations[n - 1]

An unavailable model raises (the builder logs it and leaves the story
unsummarized until a later refresh): a story never gets a made-up summary.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from townsquare.answer import language
from townsquare.answer.citations import finalize
from townsquare.answer.compose import compose
from townsquare.answer.prompt import build_prompt
from townsquare.answer.verify import Gate, Verification
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
        #: What the gate did to the last summary (tests, logs).
        self.last_verification: Verification | None = None

    async def __call__(self, story: Story, posts: list[Post], mode: str) -> tuple[str, list[str]]:
        if not posts:
            raise ValueError(f"story {story.id} has no posts left to summarize")
        started = time.perf_counter()
        engine = self.engine
        persona = engine.personas.get(mode)
        now = engine.clock()
        lang = language.detect(" ".join(p.text for p in posts[:8]))
        lang = lang if lang in language.TEXTS else language.DEFAULT
        prompt = build_prompt(
            engine.llm, persona, summary_question(story), posts, now,
            max_tokens=self.max_tokens, lang=lang,
        )
        gate = Gate(prompt.posts, now)
        topic = " ".join([story.title, *story.labels])
        if engine.style_for(engine.llm) == "generative":
            async for piece in engine.llm.generate(
                prompt.messages, GenerationOptions(max_tokens=self.max_tokens)
            ):
                gate.feed(piece)
            gate.finish()
        if not gate.mapping:
            gate.feed(compose(topic, prompt.posts, now, lang, persona.framing))
            gate.finish()
        text = gate.text.strip()
        if not text:
            raise ValueError(f"no verifiable summary for story {story.id}")
        self.last_verification = gate.stats
        citations = finalize(gate, prompt.posts)
        self.calls += 1
        self.seconds += time.perf_counter() - started
        return text, [c.id for c in citations]
