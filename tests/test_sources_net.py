"""What the network sources share: batching, HTML to text, SSE, and never giving up."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import pytest

from replay_servers import open_stream, take_batches
from townsquare.sources import SOURCES
from townsquare.sources._net import Bounded, NetworkSource, batched
from townsquare.sources._text import clip, html_to_text, primary_lang


async def _items(
    n: int, fail: Exception | None = None, pause_after: int = -1
) -> AsyncIterator[int]:
    for i in range(n):
        if i == pause_after:
            await asyncio.sleep(0.05)
        yield i
    if fail is not None:
        raise fail


async def test_batched_fills_up_flushes_quiet_streams_and_raises_after_delivering() -> None:
    assert [b async for b in batched(_items(7), 3, 10.0)] == [[0, 1, 2], [3, 4, 5], [6]]
    # A pause longer than max_wait closes the batch that was filling.
    assert [b async for b in batched(_items(4, pause_after=2), 100, 0.01)] == [[0, 1], [2, 3]]
    got: list[list[int]] = []
    with pytest.raises(ConnectionError, match="line dropped"):
        async for batch in batched(_items(5, ConnectionError("line dropped")), 100, 10.0):
            got.append(batch)
    assert got == [[0, 1, 2, 3, 4]]


async def test_closing_batched_stops_its_reader() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
                await asyncio.sleep(0)
        finally:
            closed.set()

    gen = batched(endless(), 10, 0.01)
    assert len(await anext(gen)) == 10
    await gen.aclose()
    assert closed.is_set()


def test_bounded_forgets_the_oldest() -> None:
    b: Bounded[str] = Bounded(2)
    b["a"], b["b"], b["c"] = "1", "2", "3"
    assert ("a" in b, b.get("b"), b.pop("c"), len(b)) == (False, "2", "3", 1)


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>One</p><p>Two<br>three</p>", "One\n\nTwo\nthree"),
        ("<p>a &amp; b &lt;c&gt; &#8211; d&nbsp;e</p>", "a & b <c> – d e"),
        ("<div>x<script>alert(1)</script><style>p{}</style></div>y", "x\ny"),
        ('<a href="https://e.org/long"><span class="invisible">https://</span>'
         '<span class="ellipsis">e.org/lo</span><span class="invisible">ng</span></a>',
         "https://e.org/long"),
        ("plain\n  text   with\twhitespace", "plain text with whitespace"),
        ("<p>unclosed <b>bold", "unclosed bold"),
        ("<ul><li>one</li><li>two</li></ul>", "one\ntwo"),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_clip_and_languages() -> None:
    assert clip("short", 10) == "short"
    clipped = clip("word " * 100, 50)
    assert len(clipped) <= 50 and clipped.endswith("word…")
    assert [primary_lang(t) for t in ("en-US", "pt_br", "JA", "", None, "x-klingon!", 7)] == [
        "en", "pt", "ja", None, None, None, None]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "spec",
    ["jetstream:ws://127.0.0.1:{port}/subscribe", "mastodon:http://127.0.0.1:{port}",
     "rss:http://127.0.0.1:{port}/feed.xml"],
)
async def test_unreachable_upstream_is_logged_reported_and_retried(
    spec: str, caplog: pytest.LogCaptureFixture
) -> None:
    kind, _, target = spec.format(port=_dead_port()).partition(":")
    source = SOURCES.create(kind, target, reconnect_base=0.001, reconnect_cap=0.005)
    assert isinstance(source, NetworkSource)
    caplog.set_level(logging.WARNING, logger="townsquare.sources")

    def retries() -> int:
        return sum("will retry" in r.getMessage() for r in caplog.records)

    async with open_stream(source) as stream:
        consume = asyncio.ensure_future(take_batches(stream, lambda bs: True))

        async def three_failures() -> None:
            while retries() < 3:
                await asyncio.sleep(0.005)

        await asyncio.wait_for(three_failures(), 30)
        consume.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consume
    assert source.connected is False
    assert source.last_error  # e.g. "ConnectError: All connection attempts failed"
    assert source.status()["last_error"] == source.last_error
