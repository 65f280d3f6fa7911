"""``serve``, ``keys`` and ``usage``: the service and its accounts."""

from __future__ import annotations

import json
import logging
import socket
import sys
from datetime import UTC, datetime
from typing import Any

import click

from townsquare.cli import CliContext, pass_ctx
from townsquare.config import ADMIN_TIER, make_private
from townsquare.model import iso
from townsquare.registry import UnknownBackend
from townsquare.runtime import Runtime
from townsquare.sources import SourceError
from townsquare.store.base import ApiKeyRecord, Store


@click.command()
@click.option("--host", help="Interface to listen on (default from config: 127.0.0.1).")
@click.option("--port", type=int, help="Port (default from config: 8080; 0 picks a free one).")
@click.option("--source", "sources", multiple=True, metavar="SPEC",
              help="Ingest this source: jetstream, rss:URL, mastodon:URL, jsonl:PATH, "
              "options as key=value words after it, quoted: \"rss:URL interval=60\" "
              "(repeatable; default from config, else Bluesky's Jetstream).")
@click.option("--demo", is_flag=True,
              help="Replay the bundled sample stream instead (works offline).")
@click.option("--no-ingest", is_flag=True,
              help="Serve the store without running any source (a read replica).")
@click.option("--llm", help="LLM backend: local, openai, fake (default from config).")
@click.option("--embedder", help="Embedder (default from config).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@pass_ctx
def serve(
    cli: CliContext,
    host: str | None,
    port: int | None,
    sources: tuple[str, ...],
    demo: bool,
    no_ingest: bool,
    llm: str | None,
    embedder: str | None,
    log_level: str,
) -> None:
    """Ingest the configured sources and serve the API and the web page, in one process.

    With no source configured it follows Bluesky's public Jetstream (no account
    needed); where the network is unreachable it says so on the page and keeps
    serving what it has. On first start it creates a key for the web page,
    saved in <home>/web-key, and prints the URL to open.

    A source's options follow its spec as key=value words: a jsonl file is
    followed as it grows (follow=false reads it once), rss takes interval=SECONDS
    (default 300) and timeout, mastodon takes timeline (public, public:local,
    hashtag:TAG), token (or TOWNSQUARE_MASTODON_TOKEN) and transport. In
    config.toml, a source is a string in the same form or a table:
    sources = [{spec = "rss:https://example.org/feed.xml", interval = 60}].

    Posts that another process (`townsquare ingest`) commits to the same store
    reach the page's live feed and the watches too.

    \b
    Examples:
      townsquare serve --demo
      townsquare serve --source jetstream --source "rss:https://example.org/feed.xml interval=60"
      townsquare serve --source "mastodon:https://mastodon.social timeline=hashtag:climate"
      townsquare serve --source jsonl:/var/spool/posts.jsonl
      townsquare serve --port 9000 --no-ingest
    """
    from townsquare.ingest.supervisor import DEFAULT_SOURCES, SourceSpec, build_sources
    from townsquare.service.gate.auth import ensure_web_key

    for key, value in (("host", host), ("port", port), ("llm", llm), ("embedder", embedder)):
        if value is not None:
            cli.overrides[key] = value
    settings = cli.settings
    if demo and (sources or no_ingest):
        raise click.UsageError("--demo replaces the sources: drop --source/--no-ingest")
    specs: list[SourceSpec] = []
    if demo:
        specs = ["demo"]
    elif not no_ingest:
        specs = list(sources) or list(settings.sources) or list(DEFAULT_SOURCES)
    try:
        named = build_sources(specs)
    except UnknownBackend as exc:
        raise click.UsageError(str(exc)) from None
    except (SourceError, TypeError) as exc:
        raise click.UsageError(f"bad --source: {exc}") from None

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    sock = _bind(settings.host, settings.port)
    runtime = Runtime(settings)
    try:
        ensure_web_key(runtime.store, settings.home, settings.tiers)
        make_private(settings.home)  # the database was maybe just created
        # The embedder may take a while to load (or distill, on a first start):
        # the supervisor loads it in the background, after the server listens.
        supervisor = runtime.supervisor(named) if named else None
        from townsquare.service.app import create_app

        app = create_app(runtime, supervisor=supervisor)
        actual_port = sock.getsockname()[1]
        shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        what = ", ".join(name for name, _ in named) if named else "no sources"
        click.echo(f"townsquare {settings.home}: ingesting {what}")
        if specs and not demo:
            click.echo("(no network? `townsquare serve --demo` replays a bundled sample "
                       "stream; source status shows on the page and in /metrics)")
        key_file = settings.home / "web-key"
        # Never the key itself: terminal scrollback and log collectors keep it.
        click.echo(f"Open http://{shown}:{actual_port}/ with the web page's key from "
                   f"{key_file} (e.g. open \"http://{shown}:{actual_port}/#key=$(cat "
                   f"{key_file})\")", err=False)
        sys.stdout.flush()
        _run_uvicorn(app, sock, log_level, settings.header_timeout_s)
    finally:
        runtime.close()


def _bind(host: str, port: int) -> socket.socket:
    """Bind before starting so the printed URL has the real port (``--port 0``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it Nagle + delayed ACKs add 40 ms to every keep-alive response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    sock.set_inheritable(True)
    return sock


def _run_uvicorn(app: Any, sock: socket.socket, log_level: str, header_timeout_s: float) -> None:
    import uvicorn

    from townsquare.service.gate.header_timeout import protocol_with_header_timeout

    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=log_level == "debug",
        timeout_graceful_shutdown=5,
        backlog=2048,
    )
    # uvicorn only times out idle keep-alive connections: a client sending half a
    # header line every few seconds would hold its socket (and a slot) for ever.
    config.http = protocol_with_header_timeout(config.http, header_timeout_s)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])  # uvicorn's loop setup: uvloop and httptools when installed


# --- keys --------------------------------------------------------------------------


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (only a hash of each key is stored)."""


@keys.command("create")
@click.option("--name", required=True, help="Who the key is for (shown in usage reports).")
@click.option("--tier", default=None,
              help="Tier from the configuration (free, premium, business by default; "
              "default free).")
@click.option("--admin", is_flag=True,
              help=f"An operator key (tier {ADMIN_TIER!r}: no limits; sees source specs and "
              "raw errors in /v1/live, and /metrics).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def keys_create(
    cli: CliContext, name: str, tier: str | None, admin: bool, as_json: bool
) -> None:
    """Create a key and print it once: it cannot be shown again."""
    from townsquare.service.gate.auth import create_key

    if admin and tier not in (None, ADMIN_TIER):
        raise click.UsageError("--admin is its own tier: drop --tier")
    tier = ADMIN_TIER if admin else (tier or "free")
    settings = cli.settings
    runtime = Runtime(settings)
    try:
        plaintext, record = create_key(runtime.store, name, tier, settings.tiers)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        runtime.close()
        make_private(settings.home)
    if as_json:
        click.echo(json.dumps({**_key_dict(record), "key": plaintext}, indent=2))
        return
    click.echo(plaintext)
    click.echo(
        f"created key {record.prefix} '{record.name}' (tier {record.tier}); store it now, "
        "it is not shown again",
        err=True,
    )


@keys.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include revoked keys.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def keys_list(cli: CliContext, show_all: bool, as_json: bool) -> None:
    """List keys: prefix, name, tier, created, revoked."""
    runtime = Runtime(cli.settings, read_only=True)
    try:
        records = runtime.store.list_api_keys()
    finally:
        runtime.close()
    if not show_all:
        records = [r for r in records if r.revoked_at is None]
    if as_json:
        click.echo(json.dumps([_key_dict(r) for r in records], indent=2))
        return
    if not records:
        click.echo("no keys; create one with: townsquare keys create --name NAME", err=True)
        return
    click.echo(f"{'PREFIX':<10} {'NAME':<24} {'TIER':<10} {'CREATED':<22} REVOKED")
    for r in records:
        click.echo(
            f"{r.prefix:<10} {r.name[:24]:<24} {r.tier:<10} {iso(r.created_at):<22} "
            f"{iso(r.revoked_at) if r.revoked_at else '-'}"
        )


@keys.command("revoke")
@click.argument("name_or_prefix")
@pass_ctx
def keys_revoke(cli: CliContext, name_or_prefix: str) -> None:
    """Revoke every live key with this name or prefix (servers notice within seconds)."""
    runtime = Runtime(cli.settings)
    try:
        revoked = runtime.store.revoke_api_key(name_or_prefix)
    finally:
        runtime.close()
    if not revoked:
        raise click.ClickException(f"no live key named or prefixed {name_or_prefix!r}")
    click.echo(f"revoked {name_or_prefix}")


def _key_dict(r: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "prefix": r.prefix,
        "name": r.name,
        "tier": r.tier,
        "created_at": iso(r.created_at),
        "revoked_at": iso(r.revoked_at) if r.revoked_at else None,
    }


# --- usage -------------------------------------------------------------------------


def _resolve_keys(store: Store, key: str) -> list[ApiKeyRecord]:
    found = [r for r in store.list_api_keys() if key in (r.name, r.prefix)]
    if not found:
        raise click.UsageError(f"no key named or prefixed {key!r} (see `townsquare keys list`)")
    return found


@click.command()
@click.option("--key", help="Only this key (name or prefix).")
@click.option("--month", metavar="YYYY-MM",
              help="Calendar month, UTC (default: this month); 'all' for everything.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def usage(cli: CliContext, key: str | None, month: str | None, as_json: bool) -> None:
    """Metered usage per key and model (requests, prompt and completion tokens), for billing."""
    if month is None:
        month = f"{datetime.now(UTC):%Y-%m}"
    elif month != "all":
        try:
            datetime.strptime(month, "%Y-%m")
        except ValueError:
            raise click.BadParameter("use YYYY-MM, e.g. 2026-11, or 'all'",
                                     param_hint="--month") from None
    runtime = Runtime(cli.settings, read_only=True)
    try:
        store = runtime.store
        key_ids: list[int | None] = (
            [r.id for r in _resolve_keys(store, key)] if key else [None]
        )
        rows = [
            row
            for kid in key_ids
            for row in store.usage_report(kid, None if month == "all" else month)
        ]
    finally:
        runtime.close()
    out: list[dict[str, Any]] = [
        {
            "key_id": r.key_id,
            "key": r.key_name,
            "model": r.model,
            "requests": r.requests,
            "prompt_tokens": r.prompt_tokens or 0,
            "completion_tokens": r.completion_tokens or 0,
            "total_tokens": (r.prompt_tokens or 0) + (r.completion_tokens or 0),
        }
        for r in rows
    ]
    if as_json:
        click.echo(json.dumps({"month": month, "usage": out}, indent=2))
        return
    click.echo(f"month {month}")
    if not out:
        click.echo("no usage recorded", err=True)
        return
    click.echo(f"{'KEY':<20} {'MODEL':<20} {'REQUESTS':>9} {'PROMPT':>12} {'COMPLETION':>12} "
               f"{'TOTAL':>12}")
    for r in out:
        click.echo(
            f"{str(r['key'] or '-')[:20]:<20} {r['model'][:20]:<20} {r['requests']:>9,} "
            f"{r['prompt_tokens']:>12,} {r['completion_tokens']:>12,} {r['total_tokens']:>12,}"
        )
    total = sum(r["total_tokens"] for r in out)
    click.echo(f"{'total':<20} {'':<20} {sum(r['requests'] for r in out):>9,} "
               f"{sum(r['prompt_tokens'] for r in out):>12,} "
               f"{sum(r['completion_tokens'] for r in out):>12,} {total:>12,}")


COMMANDS = [serve, keys, usage]
