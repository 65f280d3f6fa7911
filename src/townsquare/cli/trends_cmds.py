"""``townsquare trends``: what is bursting in the stored stream, and its stories."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import click

from townsquare.cli import CliContext, pass_ctx
from townsquare.model import iso
from townsquare.runtime import Runtime
from townsquare.timeutil import parse_duration, parse_time, utcnow
from townsquare.trends import DEFAULT_WINDOWS, Story, TrendEngine
from townsquare.trends.features import KINDS

_WINDOWS = [spec.name for spec in DEFAULT_WINDOWS]


@click.command()
@click.option("--window", "-w", type=click.Choice(_WINDOWS), default="1h", show_default=True)
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS),
              help="Only these feature kinds (repeatable).")
@click.option("--stories", "with_stories", is_flag=True, help="Also cluster posts into stories.")
@click.option("--summarize", is_flag=True,
              help="Have the LLM write each story a cited summary (implies --stories).")
@click.option("--mode", default="regular", show_default=True, metavar="PERSONA",
              help="The summaries' persona: regular, fun, or one of yours.")
@click.option("--at", "at", metavar="TIME",
              help="Evaluate at this time instead of now, e.g. to look back at a replayed "
              "day (ISO 8601 or epoch seconds).")
@click.option("--history", default="24h", show_default=True, metavar="DURATION",
              help="Posts read before the longest window to learn each term's baseline.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def trends(
    cli: CliContext,
    window: str,
    limit: int,
    kinds: tuple[str, ...],
    with_stories: bool,
    summarize: bool,
    mode: str,
    at: str | None,
    history: str,
    as_json: bool,
) -> None:
    """What is trending: bursts of hashtags, terms, phrases and names.

    A term trends when more distinct authors use it in the window than its
    own baseline predicts, not because it is common. Computed from the
    store's posts of the last day plus --history.
    """
    try:
        now = parse_time(at) if at else utcnow()
        warmup = parse_duration(history)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    runtime = Runtime(cli.settings, read_only=True)
    try:
        engine = runtime.build_trends(now, history=warmup)
    except Exception as exc:  # a missing or unreadable database
        raise click.ClickException(
            f"cannot open the store ({exc}); ingest some posts first (`townsquare ingest`)"
        ) from exc
    finally:
        runtime.close()
    found = engine.trends(window, limit, kinds=kinds or None)
    with_stories = with_stories or summarize
    if summarize:
        stories = _summarized(cli, engine, window, min(limit, 10), mode, now)
    else:
        stories = engine.stories(window, limit=min(limit, 10)) if with_stories else []
    if as_json:
        out: dict[str, Any] = {
            "window": window,
            "at": iso(now),
            "posts": engine.post_count(window),
            "trends": [t.to_dict() for t in found],
        }
        if with_stories:
            out["stories"] = [engine.story_dict(s) for s in stories]
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    posts = engine.post_count(window)
    click.echo(f"trending in the {window} before {_hm(now, full=True)} ({posts:,} posts)")
    if not found:
        click.echo("nothing is trending", err=True)
    for i, t in enumerate(found, 1):
        click.echo(
            f"{i:>3}. {click.style(t.label, bold=True)}  {t.kind}  score {t.score:.1f}  "
            f"{t.posts:,} posts by {t.authors:,} authors (expected {t.expected:.1f})  "
            f"{_hm(t.first_seen)}-{_hm(t.last_seen)}"
        )
    for s in stories:
        click.echo(
            f"\n{click.style(s.title, bold=True)}  [{s.id}]  {s.size:,} posts, "
            f"{s.unique_posts:,} unique, {s.authors:,} authors, "
            f"{_hm(s.first_seen)}-{_hm(s.last_seen)}"
        )
        if s.summary:
            click.echo(f"    {s.summary}")
            for n, pid in enumerate(s.citations, 1):
                post = engine.post(pid)
                if post is not None:
                    click.echo(f"      [{n}] @{post.author}: {_line(post.text)}")
            continue
        for pid in s.representative_ids:
            post = engine.post(pid)
            if post is not None:
                click.echo(f"    @{post.author}: {_line(post.text)}")


def _line(text: str, width: int = 200) -> str:
    return " ".join(text.split())[:width]


def _summarized(
    cli: CliContext, engine: TrendEngine, window: str, limit: int, mode: str, now: datetime
) -> list[Story]:
    """The window's stories, each summarized in ``mode`` as of ``now`` (``--at``)."""
    from townsquare.answer.personas import UnknownPersona
    from townsquare.answer.summaries import StorySummarizer
    from townsquare.llm import LLMError

    runtime = Runtime(cli.settings)
    try:
        try:
            # "3 hours ago" as of --at, not as of today.
            answers = runtime.new_engine(clock=lambda: now)
        except LLMError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            answers.personas.get(mode)
        except UnknownPersona as exc:
            raise click.BadParameter(str(exc), param_hint="--mode") from None
        summarizer = StorySummarizer(answers)
        stories = engine.stories(window, limit=limit)
        asyncio.run(engine.asummarize(stories, summarizer, mode.lower()))
        if stories and summarizer.calls == 0:
            click.echo("warning: the LLM wrote no summaries (see the log)", err=True)
        return stories
    finally:
        runtime.close()


def _hm(dt: datetime, full: bool = False) -> str:
    return iso(dt)[:16].replace("T", " ") + "Z" if full else iso(dt)[11:16]


COMMANDS = [trends]
