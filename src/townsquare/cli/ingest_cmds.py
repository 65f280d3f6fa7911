"""``ingest``, ``search``, ``stats`` and ``quarantine``: the foundation's commands."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

import click

from townsquare.cli import CliContext, pass_ctx
from townsquare.ingest import IngestStats
from townsquare.model import iso
from townsquare.registry import UnknownBackend
from townsquare.retrieval import SORTS, SearchRequest
from townsquare.runtime import Runtime
from townsquare.sources import SOURCES, SourceError
from townsquare.store import SearchFilters
from townsquare.timeutil import humanize_age, parse_since, utcnow

EXIT_QUARANTINED = 3


def _progress_line(stats: IngestStats) -> str:
    lag = f"{stats.lag_s:.1f}s" if stats.lag_s is not None else "n/a"
    if stats.lag_s is None and stats.newest_post_at is not None:
        lag = humanize_age(stats.newest_post_at) + " (newest post age)"
    return (
        f"{stats.posts:,} posts  {stats.rate:,.0f}/s  {stats.deletes:,} deleted  "
        f"{stats.quarantined:,} quarantined  lag {lag}"
    )


@click.command()
@click.argument("kind", metavar="SOURCE")
@click.argument("targets", nargs=-1)
@click.option("--follow", is_flag=True, default=None, help="jsonl: keep tailing the file(s).")
@click.option("--interval", type=float, help="rss: seconds between polls (default 300).")
@click.option("--timeline", help="mastodon: public, public:local or hashtag:TAG.")
@click.option("--token", envvar="TOWNSQUARE_MASTODON_TOKEN", help="mastodon: access token.")
@click.option("--transport", type=click.Choice(["sse", "websocket"]), help="mastodon transport.")
@click.option("--engagement/--no-engagement", default=None,
              help="jetstream: also read likes and reposts and count them (default on).")
@click.option("--embedder", help="Embedder for dense indexing (default from config).")
@click.option("--publish", metavar="NATS_URL", help="Publish normalized posts to NATS "
              "JetStream instead of writing the store (see `townsquare index`).")
@click.option("--quiet", "-q", is_flag=True, help="No progress line.")
@pass_ctx
def ingest(
    cli: CliContext,
    kind: str,
    targets: tuple[str, ...],
    quiet: bool,
    embedder: str | None,
    publish: str | None,
    **source_options: Any,
) -> None:
    """Ingest posts from SOURCE (jsonl, rss, jetstream, mastodon) until stopped.

    \b
    Examples:
      townsquare ingest jsonl posts.jsonl
      townsquare ingest jsonl live.jsonl --follow
      cat posts.jsonl | townsquare ingest jsonl -
      townsquare ingest rss https://example.org/feed.xml --interval 60
      townsquare ingest jetstream
      townsquare ingest mastodon https://mastodon.social --timeline public

    Exit status: 0 done, 3 some input was quarantined (see `townsquare stats`),
    1 the source or store failed.
    """
    options = {k: v for k, v in source_options.items() if v is not None}
    target = ",".join(targets) if targets else None
    try:
        source = SOURCES.create(kind, target, **options)
    except UnknownBackend as exc:
        raise click.UsageError(str(exc)) from None
    except (SourceError, TypeError) as exc:
        raise click.UsageError(f"{kind}: {exc}") from None
    if embedder:
        cli.overrides["embedder"] = embedder
    runtime = Runtime(cli.settings)
    if publish:
        from townsquare.bus import publish_source  # issue: scale-out

        stats = asyncio.run(publish_source(source, publish, quiet=quiet, limits=runtime.limits))
    else:
        stats = asyncio.run(_run_ingest(runtime, source, quiet))
    runtime.close()
    if stats.quarantined:
        sys.exit(EXIT_QUARANTINED)


async def _run_ingest(runtime: Runtime, source: Any, quiet: bool) -> IngestStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ingestor = runtime.ingestor()
    stats = IngestStats(stream_key=source.key)
    task = asyncio.create_task(ingestor.run(source, stop=stop, stats=stats))
    tty = sys.stderr.isatty()
    last_print = 0.0
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            if stop.is_set() and not task.done():
                task.cancel()
            now = time.monotonic()
            if not quiet and (tty or now - last_print >= 5.0):
                click.echo(("\r" if tty else "") + _progress_line(stats), err=True, nl=not tty)
                last_print = now
        if not task.cancelled():
            task.result()
    except asyncio.CancelledError:
        pass
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None
    if not quiet:
        if tty:
            click.echo("", err=True)
        click.echo(
            f"done: {stats.posts:,} posts, {stats.deletes:,} deleted, "
            f"{stats.quarantined:,} quarantined, {stats.overall_rate:,.0f} posts/s",
            err=True,
        )
    return stats


def _filters(
    since: str | None,
    until: str | None,
    authors: tuple[str, ...],
    exclude: tuple[str, ...],
    sources: tuple[str, ...],
    langs: tuple[str, ...],
) -> SearchFilters:
    try:
        return SearchFilters(
            since=parse_since(since),
            until=parse_since(until),
            authors=list(authors),
            exclude_authors=list(exclude),
            sources=list(sources),
            langs=list(langs),
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def filter_options(fn: Any) -> Any:
    """The shared retrieval filters (search, ask)."""
    for opt in reversed(
        [
            click.option("--since", help="Only posts after: 2h, 3d, or ISO 8601 / epoch."),
            click.option("--until", help="Only posts before: 2h (ago), or ISO 8601 / epoch."),
            click.option("--from", "authors", multiple=True, metavar="HANDLE",
                         help="Only posts by this handle (repeatable)."),
            click.option("--exclude", multiple=True, metavar="HANDLE",
                         help="Never posts by this handle (repeatable)."),
            click.option("--source", "sources", multiple=True,
                         help="Only this source: jsonl, rss, bluesky, mastodon (repeatable)."),
            click.option("--lang", "langs", multiple=True,
                         help="Only this language code, e.g. fr (repeatable)."),
        ]
    ):
        fn = opt(fn)
    return fn


@click.command()
@click.argument("query", default="")
@filter_options
@click.option("--limit", "-n", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--mode", type=click.Choice(["hybrid", "lexical", "dense", "recent"]),
              default="hybrid", show_default=True)
@click.option("--sort", type=click.Choice(SORTS), default="relevance", show_default=True,
              help="relevance (with recency), latest, or top (most engagement) first.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def search(
    cli: CliContext,
    query: str,
    since: str | None,
    until: str | None,
    authors: tuple[str, ...],
    exclude: tuple[str, ...],
    sources: tuple[str, ...],
    langs: tuple[str, ...],
    limit: int,
    mode: str,
    sort: str,
    as_json: bool,
) -> None:
    """Search stored posts by keywords and meaning, freshest first among equals.

    An empty QUERY lists the newest posts that pass the filters.
    """
    filters = _filters(since, until, authors, exclude, sources, langs)
    runtime = Runtime(cli.settings, read_only=True)
    try:
        hits = runtime.retriever.search(
            SearchRequest(query=query, filters=filters, limit=limit, mode=mode,  # type: ignore[arg-type]
                          sort=sort)  # type: ignore[arg-type]
        )
    finally:
        runtime.close()
    if as_json:
        out = [
            {
                "id": h.post.id,
                "author": h.post.author,
                "text": h.post.text,
                "created_at": iso(h.post.created_at),
                "url": h.post.url,
                "source": h.post.source,
                "lang": h.post.lang,
                "likes": h.post.likes,
                "reposts": h.post.reposts,
                "score": round(h.score, 6),
            }
            for h in hits
        ]
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    if not hits:
        click.echo("no posts found", err=True)
        return
    now = utcnow()
    for i, h in enumerate(hits, 1):
        p = h.post
        click.echo(
            click.style(f"[{i}] @{p.author}", bold=True)
            + f"  {humanize_age(p.created_at, now)} ago  {p.source}  {p.url or p.id}"
        )
        click.echo("    " + p.text.replace("\n", "\n    ")[:500])


@click.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def stats(cli: CliContext, as_json: bool) -> None:
    """Counts per source, newest post age, quarantine, index sizes."""
    runtime = Runtime(cli.settings, read_only=True)
    try:
        data = runtime.store.stats()
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps(data, default=_json_default, indent=2))
        return
    click.echo(f"store      {data['store']}")
    click.echo(f"posts      {data['posts']:,}")
    now = utcnow()
    for name, s in data["sources"].items():
        click.echo(
            f"  {name:<10} {s['posts']:>10,}  newest {humanize_age(s['newest_created_at'], now)} "
            "old"
        )
    click.echo(f"quarantine {data['quarantined']:,}")
    click.echo(f"vectors    {data['vectors']:,} ({data['embedder'] or 'no embedder'})")
    click.echo(f"file       {data['file_bytes'] / 1e6:,.1f} MB")


@click.command()
@click.option("--limit", "-n", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def quarantine(cli: CliContext, limit: int, as_json: bool) -> None:
    """Show the newest quarantined inputs and why they were rejected."""
    runtime = Runtime(cli.settings, read_only=True)
    try:
        records = runtime.store.quarantined(limit)
    finally:
        runtime.close()
    rows: list[dict[str, Any]] = [
        {"id": r.id, "source": r.source, "reason": r.reason, "at": iso(r.at),
         "raw": r.raw[:300].decode("utf-8", "replace")}
        for r in records
    ]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for r in rows:
        click.echo(f"#{r['id']} {r['at']} {r['source']}: {r['reason']}\n    {r['raw'][:200]}")


def _json_default(o: Any) -> Any:
    if hasattr(o, "isoformat"):
        return iso(o)
    raise TypeError(type(o).__name__)


COMMANDS = [ingest, search, stats, quarantine]
