"""``ask`` and ``chat``: cited answers from the command line.

``ask`` answers one question (streaming to the terminal, or ``--json`` for
scripts); ``chat`` is an interactive loop on one event loop (so HTTP clients
and the local model's worker are reused), with ``/mode``, ``/new`` and
citations printed under each answer. Both persist the conversation; ``ask
--conversation ID`` continues one.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from townsquare.answer import (
    Answer,
    AnswerEngine,
    AnswerRequest,
    ConversationNotFound,
    Delta,
    UnknownModel,
    UnknownPersona,
)
from townsquare.answer.prompt import describe_age
from townsquare.cli import CliContext, pass_ctx
from townsquare.cli.ingest_cmds import filter_options
from townsquare.llm.base import LLMError
from townsquare.retrieval import SORTS
from townsquare.runtime import Runtime
from townsquare.store import SearchFilters
from townsquare.timeutil import parse_since, parse_time

CHAT_HELP = """\
/mode NAME   switch persona (regular, fun, or your own in <home>/personas)
/new         start a new conversation
/id          show the conversation id
/help        this help
/quit        leave (or Ctrl-D)"""


def _filter_options(fn: Any) -> Any:
    """The retrieval filters shared with ``search``, plus the answer's own options."""
    options = [
        click.option("--mode", help="Persona: regular (default), fun, or one of yours."),
        click.option("--model", help="LLM backend for this answer: local, openai, fake."),
        click.option("--max-results", type=click.IntRange(1, 50), default=8, show_default=True,
                     help="Posts given to the model."),
        click.option("--search", type=click.Choice(["auto", "on", "off"]), default="auto",
                     show_default=True, help="Search posts: auto (not for small talk), on, off."),
        click.option("--sort", type=click.Choice(SORTS), default="relevance", show_default=True,
                     help="Posts given to the model: relevance, latest, top (engagement)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return filter_options(fn)


def _filters(opts: dict[str, Any]) -> SearchFilters:
    try:
        return SearchFilters(
            since=parse_since(opts.get("since")),
            until=_until(opts.get("until")),
            authors=[a.lstrip("@") for a in opts.get("authors", ())],
            exclude_authors=[a.lstrip("@") for a in opts.get("exclude", ())],
            sources=list(opts.get("sources", ())),
            langs=list(opts.get("langs", ())),
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _until(value: str | None) -> Any:
    if not value:
        return None
    try:
        return parse_since(value)
    except ValueError:
        return parse_time(value)


def open_answer_engine(cli: CliContext) -> tuple[Runtime, AnswerEngine]:
    """A runtime and an answer engine over it (close the runtime when done)."""
    runtime = Runtime(cli.settings)
    try:
        return runtime, runtime.engine
    except LLMError as exc:
        raise click.ClickException(str(exc)) from None


def format_citations(answer: Answer) -> str:
    """The block printed under an answer: one entry per citation, text included."""
    if not answer.citations:
        return ""
    title = "Sources:" if any(c.cited for c in answer.citations) else "Posts considered:"
    lines = [title]
    for c in answer.citations:
        age = describe_age(parse_time(c.created_at), answer.as_of)
        head = f"[{c.n}] @{c.author} · {age}"
        if c.url:
            head += f" · {c.url}"
        text = " ".join(c.text.split())
        if len(text) > 280:
            text = text[:279].rstrip() + "…"
        lines += [head, f"    {text}"]
    return "\n".join(lines)


def _footer(answer: Answer) -> str:
    bits = [f"as of {answer.as_of:%Y-%m-%d %H:%M} UTC", answer.mode, answer.model]
    if answer.degraded:
        bits.append("search-only")
    return " · ".join(bits)


async def _stream_to_terminal(engine: AnswerEngine, request: AnswerRequest) -> Answer:
    final: Answer | None = None
    async for event in engine.stream(request):
        if isinstance(event, Delta):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        else:
            final = event.answer
    assert final is not None
    click.echo("\n")
    block = format_citations(final)
    if block:
        click.echo(block)
    click.secho(_footer(final), dim=True)
    return final


def _request(question: str, opts: dict[str, Any], conversation: str | None) -> AnswerRequest:
    return AnswerRequest(
        question=question,
        conversation_id=conversation,
        mode=opts.get("mode"),
        filters=_filters(opts),
        max_search_results=opts.get("max_results") or 8,
        search=opts.get("search") or "auto",
        model=opts.get("model"),
        sort=opts.get("sort") or "relevance",
    )


@click.command()
@click.argument("question", nargs=-1, required=True)
@_filter_options
@click.option("--conversation", "-c", metavar="ID", help="Continue this conversation.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@pass_ctx
def ask(
    cli: CliContext, question: tuple[str, ...], conversation: str | None, as_json: bool,
    **opts: Any,
) -> None:
    """Answer QUESTION from the freshest relevant posts, with numbered citations.

    \b
    Examples:
      townsquare ask "what are people saying about the strike?"
      townsquare ask what happened today in Lyon --mode fun
      townsquare ask "and what about him?" --conversation conv_1a2b...
      townsquare ask "latest from @alice.bsky.social" --since 6h --json

    Time phrases ("today", "in the last hour", "cette semaine"), @handles and
    #hashtags in the question become filters.
    """
    request = _request(" ".join(question), opts, conversation)
    runtime, engine = open_answer_engine(cli)
    try:
        if as_json:
            answer = asyncio.run(engine.answer(request))
            click.echo(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
        else:
            answer = asyncio.run(_stream_to_terminal(engine, request))
            if answer.conversation_id:
                click.secho(f"continue: townsquare ask -c {answer.conversation_id} ...", dim=True,
                            err=True)
    except (UnknownPersona, UnknownModel) as exc:
        raise click.UsageError(str(exc)) from None
    except (ConversationNotFound, LLMError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        runtime.close()


@click.command()
@_filter_options
@click.option("--conversation", "-c", metavar="ID", help="Resume this conversation.")
@pass_ctx
def chat(cli: CliContext, conversation: str | None, **opts: Any) -> None:
    """Talk with the timeline: streamed, cited answers; follow-ups keep context.

    Type /help for commands (/mode fun, /new, /quit). Ctrl-C stops an answer,
    Ctrl-D leaves.
    """
    if sys.stdin.isatty():
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:  # pragma: no cover - Windows
            pass
    runtime, engine = open_answer_engine(cli)
    mode = opts.get("mode") or "regular"
    try:
        engine.personas.get(mode)
    except UnknownPersona as exc:
        raise click.UsageError(str(exc)) from None
    click.secho(
        f"townsquare chat · mode {mode} · model {engine.llm.model_id} · /help for commands",
        bold=True,
    )
    try:
        with asyncio.Runner() as runner:
            while True:
                try:
                    line = input(f"{mode}> ").strip()
                except EOFError:
                    click.echo()
                    break
                except KeyboardInterrupt:
                    click.echo()
                    continue
                if not line:
                    continue
                if line.startswith("/"):
                    cmd, _, arg = line[1:].partition(" ")
                    cmd = cmd.lower()
                    if cmd in ("quit", "exit", "q"):
                        break
                    if cmd == "new":
                        conversation = None
                        click.echo("(new conversation)")
                    elif cmd == "mode":
                        name = arg.strip().lower()
                        if name in engine.personas:
                            mode = name
                            click.echo(f"(mode: {mode})")
                        else:
                            click.echo(f"(unknown mode {name!r}; available: "
                                       f"{', '.join(engine.personas.names())})")
                    elif cmd == "id":
                        click.echo(f"(conversation: {conversation or 'none yet'})")
                    else:
                        click.echo(CHAT_HELP)
                    continue
                request = _request(line, {**opts, "mode": mode}, conversation)
                try:
                    answer = runner.run(_stream_to_terminal(engine, request))
                    conversation = answer.conversation_id
                except KeyboardInterrupt:
                    click.echo("\n[interrupted]")
                except ConversationNotFound as exc:
                    click.echo(f"error: {exc}")
                    conversation = None
                except (LLMError, UnknownModel, ValueError) as exc:
                    click.echo(f"\nerror: {exc}")
    finally:
        runtime.close()


COMMANDS = [ask, chat]
