"""``townsquare thread ID`` and ``townsquare authors QUERY``: conversations and people."""

from __future__ import annotations

import json

import click

from townsquare.cli import CliContext, pass_ctx
from townsquare.model import Post
from townsquare.retrieval.threads import find_post, gather
from townsquare.runtime import Runtime
from townsquare.store.people import search_authors
from townsquare.timeutil import humanize_age, utcnow


@click.command()
@click.argument("post")
@click.option("--replies", default=30, show_default=True, type=click.IntRange(0, 200))
@click.option("--quotes", default=20, show_default=True, type=click.IntRange(0, 200))
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def thread(cli: CliContext, post: str, replies: int, quotes: int, as_json: bool) -> None:
    """A post (id or URL) with its parent chain, what it quotes, its replies and quotes."""
    runtime = Runtime(cli.settings, read_only=True)
    try:
        found = find_post(post, runtime.store)
        if found is None:
            raise click.ClickException(f"no stored post with id or URL {post!r}")
        th = gather(runtime.store, found, replies, quotes)
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps(th.to_dict(), ensure_ascii=False, indent=2))
        return
    now = utcnow()

    def show(label: str, p: Post, indent: str = "") -> None:
        counts = " ".join(f"{n} {name}" for name, n in (
            ("likes", p.likes), ("reposts", p.reposts), ("replies", p.replies),
            ("quotes", p.quotes)) if n)
        click.echo(indent + click.style(f"{label} @{p.author}", bold=True)
                   + f"  {humanize_age(p.created_at, now)} ago  {p.url or p.id}"
                   + (f"  ({counts})" if counts else ""))
        click.echo(indent + "    " + p.text.replace("\n", "\n    " + indent)[:500])

    for p in th.ancestors:
        show("parent", p)
    show("POST", th.post)
    if th.quoted is not None:
        show("quotes", th.quoted, "  ")
    for p in th.replies:
        show("reply", p, "  ")
    for p in th.quotes:
        show("quoted by", p, "  ")


@click.command()
@click.argument("query")
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1, 100))
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def authors(cli: CliContext, query: str, limit: int, as_json: bool) -> None:
    """Accounts in the author directory by handle or name (accents and case folded)."""
    runtime = Runtime(cli.settings, read_only=True)
    try:
        found = search_authors(runtime.store, query, limit)
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps([a.public_dict() for a in found], ensure_ascii=False, indent=2))
        return
    if not found:
        click.echo("no authors found", err=True)
        return
    for a in found:
        name = f" ({a.display_name})" if a.display_name else ""
        click.echo(f"@{a.handle}{name}  {a.source}  {a.posts} posts  {a.id}")


COMMANDS = [thread, authors]
