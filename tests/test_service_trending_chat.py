"""'What's trending?' in chat: the answer path adds the current top trends' posts as context."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from factories import make_post
from service_helpers import Api, serve_app
from townsquare.answer.engine import asks_trending
from townsquare.model import Post
from trends_helpers import background

FIRE = "Huge fire at the Grand Hotel downtown, smoke everywhere"


@pytest.mark.parametrize("question,expected", [
    ("What's trending right now?", True),
    ("what’s happening in Lyon", True),
    ("Quelles sont les tendances du jour ?", True),
    ("Qu'est-ce qui se passe à Paris ?", True),
    ("what about the storm?", False),
])
def test_trending_questions_are_recognised(question: str, expected: bool) -> None:
    assert asks_trending(question) is expected


def _traffic(now: datetime) -> list[Post]:
    posts = background(now - timedelta(hours=6), hours=6, prefix="jsonl:bg")
    for i in range(24):  # a burst 10 to 35 minutes ago, many authors
        posts.append(make_post(f"fire{i}", f"local{i}", f"{FIRE} #{i}", 10 + i, now=now,
                               url=None))
    # then busy chatter: the newest posts, which a plain recency search would pick
    posts += background(now - timedelta(minutes=9), hours=0.15, per_minute=20, seed=2,
                        prefix="jsonl:new")
    return posts


async def test_trending_question_gets_the_trends_in_its_context(home: Path) -> None:
    async with serve_app(_traffic(datetime.now(UTC))) as api:
        for _ in range(1000):
            if api.services.live.trends is not None:
                break
            await asyncio.sleep(0.01)
        assert api.services.live.trends is not None
        labels = [t.label.casefold() for t in api.services.live.trends.trends("1h", 5)]
        assert any(w in " ".join(labels) for w in ("fire", "grand hotel")), labels
        h = Api.auth(api.key("a"))
        resp = await api.client.post("/v1/chat/completions", headers=h, json={
            "model": "townsquare",
            "messages": [{"role": "user", "content": "What's trending right now?"}]})
        assert resp.status_code == 200, resp.text
        prompt = "\n".join(m.content for m in api.llm.last_messages)
        samples = api.services.live.trend_samples()
        assert any(p.text.startswith(FIRE) for p in samples)
        for sample in samples:  # every top trend's sample post is in the model's context
            assert sample.text in prompt
