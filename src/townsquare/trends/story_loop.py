"""The story loop: every ``story_refresh_s``, refresh stories, summarize, notify watches.

One background task of ``serve`` (started by :class:`townsquare.runtime.Live` once
the trend engine is warm):

1. builds the stories of the last hour, and of every window a ``stories``
   watch looks at;
2. keeps the top ``story_summaries`` stories of the last hour summarized in
   ``regular`` mode, so ``GET /v1/stories`` and the web page find them in the
   cache (a story is summarized again only when it doubles in size);
3. hands each window's stories to the watch hub; new matching stories are
   summarized too (cached) and pushed to their watches' SSE streams and
   webhooks.

A failing refresh is logged and retried at the next tick; it never stops
the loop. An unavailable LLM only means stories go out without summaries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from townsquare.trends.engine import TrendEngine
from townsquare.trends.stories import AsyncSummarizer, Story

log = logging.getLogger(__name__)

#: Stories built per window and refresh (what story watches can see).
STORIES_PER_WINDOW = 20
SUMMARY_WINDOW = "1h"


class StoryWatchers(Protocol):
    """What the loop tells of new stories: the standing queries of kind ``stories``."""

    def story_windows(self) -> set[str]: ...

    def new_stories(self, window: str, stories: list[Story],
                    text_of: Callable[[Story], str]) -> list[tuple[Any, Story]]: ...

    def push_stories(self, found: list[tuple[Any, dict[str, Any]]]) -> None: ...


def story_text(engine: TrendEngine, story: Story, posts: int = 5) -> str:
    """What a story watch's query is matched against: title, features, first posts."""
    parts = [story.title, *story.labels]
    for pid in story.post_ids[:posts]:
        post = engine.post(pid)
        if post is not None:
            parts.append(post.text)
    return "\n".join(parts)


class StoryLoop:
    """Refreshes ``engine``'s stories every ``every_s``; summarizes; tells ``watchers``.

    ``summarizer`` is awaited for the summarizer on first need (building it
    may load an LLM).
    """

    def __init__(self, engine: TrendEngine,
                 summarizer: Callable[[], Awaitable[AsyncSummarizer]],
                 watchers: StoryWatchers | None, every_s: float, summaries: int) -> None:
        self.engine = engine
        self.summarizer = summarizer
        self.hub = watchers
        self.every_s = every_s
        self.summaries = summaries
        self.refreshes = 0

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("story refresh failed; retrying in %.0fs", self.every_s)
            await asyncio.sleep(self.every_s)

    async def refresh(self) -> None:
        engine = self.engine
        watched = await asyncio.to_thread(self.hub.story_windows) if self.hub else set()
        windows = {SUMMARY_WINDOW} | watched  # the watches live in the store: read off the loop
        for window in sorted(windows):
            stories = await asyncio.to_thread(engine.stories, window, STORIES_PER_WINDOW)
            if window == SUMMARY_WINDOW and self.summaries > 0:
                top = stories[: self.summaries]
                await engine.asummarize(top, await self.summarizer(), "regular")
            if self.hub is not None:
                await self._notify(engine, window, stories)
        self.refreshes += 1

    async def _notify(self, engine: TrendEngine, window: str, stories: list[Story]) -> None:
        assert self.hub is not None
        found = await asyncio.to_thread(
            self.hub.new_stories, window, stories, lambda s: story_text(engine, s)
        )
        if not found:
            return
        fresh = list({s.id: s for _, s in found}.values())
        try:
            await engine.asummarize(fresh, await self.summarizer(), "regular")
        except Exception:  # pushed without summaries rather than not at all
            log.warning("could not summarize new stories for watches", exc_info=True)
        payloads = {s.id: engine.story_dict(s) for s in fresh}
        await asyncio.to_thread(
            self.hub.push_stories, [(w, payloads[s.id]) for w, s in found]
        )
