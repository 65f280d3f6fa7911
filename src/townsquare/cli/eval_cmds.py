"""``eval``: answer quality, measured: a question set through any LLM backend, scored.

Builds a fresh temporary store (the user's data is never touched), ingests
the set's posts timed relative to now, asks each question (follow-ups in one
conversation) and prints one row per question plus the totals against the
targets (see :mod:`townsquare.eval`). ``--json`` prints everything, answers
included, for comparing backends or runs.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from townsquare.cli import CliContext, pass_ctx
from townsquare.config import load_settings
from townsquare.eval.report import table, to_json
from townsquare.eval.runner import EvalRun, run_eval
from townsquare.eval.runner import rescore as rescore_run
from townsquare.eval.sets import (
    BUILTIN_SETS,
    DEFAULT_TWEETS,
    QuestionSet,
    SetError,
    builtin_set,
    load_set,
    tweets_set,
)
from townsquare.llm.base import LLMError
from townsquare.timeutil import utcnow


def _sets(names: tuple[str, ...], tweets: Path | None, no_tweets: bool, only: str | None,
          now: datetime) -> tuple[list[QuestionSet], list[str]]:
    notes: list[str] = []
    sets = [builtin_set(n, now) if n in BUILTIN_SETS else load_set(Path(n), now)
            for n in (names or ("breaking",))]
    if not no_tweets:
        path = tweets or DEFAULT_TWEETS
        if path.is_file():
            sets.append(tweets_set(path, now))
        elif tweets is not None:
            raise click.BadParameter(f"{path} not found", param_hint="--tweets")
        else:
            notes.append(f"tweets set skipped: {path} not found (pass --tweets PATH)")
    if only:
        wanted = {q.strip() for q in only.split(",") if q.strip()}
        known = {q.id for s in sets for q in s.questions}
        unknown = sorted(wanted - known)
        if unknown:
            raise click.BadParameter(f"no question {', '.join(unknown)}; known: "
                                     f"{', '.join(sorted(known))}", param_hint="--only")
        sets = [s.only(wanted) for s in sets]
        sets = [s for s in sets if s.questions]
    return sets, notes


@click.command("eval")
@click.option("--set", "set_names", multiple=True, metavar="NAME|PATH",
              help=f"Question set: built-in ({', '.join(BUILTIN_SETS)}) or a JSON file. "
              "Repeatable. Default: breaking.")
@click.option("--tweets", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help=f"Tweets.csv for the airline-tweets questions (default: {DEFAULT_TWEETS} "
              "when present, else skipped with a note).")
@click.option("--no-tweets", is_flag=True, help="Leave out the airline-tweets questions.")
@click.option("--only", metavar="IDS", help="Comma-separated question ids (and what they follow).")
@click.option("--llm", metavar="NAME", help="LLM backend: local, openai, fake (default: settings).")
@click.option("--openai-base-url", metavar="URL", help="For --llm openai: the server's /v1 URL.")
@click.option("--openai-model", metavar="NAME", help="For --llm openai: the model name.")
@click.option("--style", type=click.Choice(["auto", "grounded", "generative"]), default=None,
              help="Answer style (default: settings' answer_style; auto = grounded for the "
                   "bundled model, generated and gated for others).")
@click.option("--mode", help="Persona: regular (default), fun, or one of yours.")
@click.option("--max-results", type=click.IntRange(1, 50), default=8, show_default=True,
              help="Posts given to the model per question.")
@click.option("--answers", "show_answers", is_flag=True,
              help="Also print each answer with why its sentences failed.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole run as JSON.")
@click.option("--rescore", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Score the answers saved by an earlier --json run again; asks nothing.")
@pass_ctx
def eval_cmd(
    cli: CliContext, set_names: tuple[str, ...], tweets: Path | None, no_tweets: bool,
    only: str | None, llm: str | None, openai_base_url: str | None, openai_model: str | None,
    style: str | None, mode: str | None, max_results: int, show_answers: bool, as_json: bool,
    rescore: Path | None,
) -> None:
    """Measure answer quality: supported sentences, quotes, facts, freshness, language, speed.

    \b
    Examples:
      townsquare eval                                  # embedded model, built-in sets
      townsquare eval --llm openai --openai-base-url http://127.0.0.1:11434/v1 \\
                      --openai-model qwen2.5:7b-instruct
      townsquare eval --llm fake --only cloud-over --json > run.json
      townsquare eval --rescore run.json               # score saved answers again

    Runs in a temporary store; nothing is written to your data directory.
    """
    from townsquare.llm import LLMS

    if llm is not None and llm not in LLMS.names():
        raise click.BadParameter(f"unknown backend {llm!r}; available: "
                                 f"{', '.join(LLMS.names())}", param_hint="--llm")
    try:
        settings = load_settings(**cli.overrides, llm=llm, openai_base_url=openai_base_url,
                                 openai_model=openai_model, answer_style=style)
    except Exception as exc:  # pydantic ValidationError, bad TOML
        raise click.ClickException(f"bad configuration: {exc}") from exc
    try:
        sets, notes = _sets(set_names, tweets, no_tweets, only, utcnow())
    except SetError as exc:
        raise click.ClickException(str(exc)) from None
    if not sets:
        raise click.ClickException("no questions to ask")
    def progress(line: str) -> None:  # stderr: --json's stdout stays one document
        click.secho(line, dim=True, err=True)

    try:
        if rescore is not None:
            run = rescore_run(json.loads(rescore.read_text(encoding="utf-8")), sets)
        else:
            run = run_eval(settings, sets, mode=mode, max_results=max_results,
                           progress=progress)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{rescore}: not a saved run: {exc}") from None
    except LLMError as exc:
        raise click.ClickException(str(exc)) from None
    run.notes.extend(notes)
    if as_json:
        click.echo(json.dumps(to_json(run), ensure_ascii=False, indent=2))
        return
    if show_answers:
        click.echo(_answers(run))
    click.echo(table(run))


def _answers(run: EvalRun) -> str:
    blocks: list[str] = []
    for r in run.results:
        lines = [f"== {r.set_name}/{r.question_id}: {r.question}"]
        if r.error:
            lines.append(f"   error: {r.error}")
        for s in r.score.sentences:
            flag = "fixed" if s.fixed else ("ok" if s.supported else "UNSUPPORTED")
            why = f"  ({'; '.join(s.reasons)})" if s.reasons else ""
            lines.append(f"   [{flag}] {s.text}{why}")
        for q in r.score.quotes:
            if q.altered or q.misattributed:
                kind = "altered" if q.altered else "misattributed"
                lines.append(f"   quote {kind}: \"{q.text}\" (attributed to: "
                             f"{', '.join(q.attributed_to) or 'nobody'})")
        details: list[Any] = []
        if r.score.missing_facts:
            details.append(f"missing facts: {'; '.join(r.score.missing_facts)}")
        if r.score.forbidden_asserted:
            details.append(f"asserted: {'; '.join(r.score.forbidden_asserted)}")
        lines.extend(f"   {d}" for d in details)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


COMMANDS = [eval_cmd]
