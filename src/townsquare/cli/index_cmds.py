"""``index`` (bus -> store workers) and ``retention`` (drop old partitions): scale-out."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import click

from townsquare.cli import CliContext, pass_ctx
from townsquare.cli.ingest_cmds import _progress_line
from townsquare.ingest import IngestStats
from townsquare.runtime import Runtime
from townsquare.timeutil import parse_duration, utcnow

if TYPE_CHECKING:  # the bus (and nats) load only when `index` runs
    from townsquare.bus import IndexWorker


@click.command()
@click.option("--from", "nats_url", required=True, metavar="NATS_URL",
              help="The bus to consume, e.g. nats://127.0.0.1:4222 (see docs/DEPLOY.md).")
@click.option("--durable", default="townsquare-index", show_default=True,
              help="Consumer name; workers with the same name share the work.")
@click.option("--batch", default=500, show_default=True, type=click.IntRange(1, 10_000),
              help="Messages per store transaction.")
@click.option("--max-deliver", default=5, show_default=True, type=click.IntRange(1, 100),
              help="Deliveries before a message becomes a dead letter (new consumers only).")
@click.option("--ack-wait", default=30.0, show_default=True, type=click.FloatRange(0.5, 3600),
              help="Seconds before an unacknowledged message is redelivered (new consumers).")
@click.option("--stop-when-idle", is_flag=True,
              help="Exit once the consumer has nothing pending or unacknowledged.")
@click.option("--embedder", help="Embedder for dense indexing (default from config).")
@click.option("--quiet", "-q", is_flag=True, help="No progress line.")
@pass_ctx
def index(
    cli: CliContext,
    nats_url: str,
    durable: str,
    batch: int,
    max_deliver: int,
    ack_wait: float,
    stop_when_idle: bool,
    embedder: str | None,
    quiet: bool,
) -> None:
    """Store the posts that `ingest --publish` puts on NATS JetStream (run several).

    \b
    Examples:
      townsquare --store postgresql://db/townsquare index --from nats://127.0.0.1:4222
      townsquare --store postgresql://db/townsquare index --from nats://bus:4222 --batch 1000

    Delivery is at-least-once and storage exactly-once (upserts by post id);
    messages are acknowledged only after their store commit. Undecodable
    messages and those that run out of deliveries go to `townsquare quarantine`.
    """
    from townsquare.bus import BusConfig, BusError, IndexWorker, WorkerOptions

    if embedder:
        cli.overrides["embedder"] = embedder
    try:
        cfg = BusConfig.from_url(nats_url)
    except (BusError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--from") from None
    runtime = Runtime(cli.settings)
    options = WorkerOptions(durable=durable, batch=batch, max_deliver=max_deliver,
                            ack_wait_s=ack_wait, stop_when_idle=stop_when_idle)
    try:
        worker = IndexWorker(runtime.store, runtime.embedder, cfg, options,
                             limits=runtime.limits)
        asyncio.run(_run(worker, quiet))
    except BusError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        runtime.close()


async def _run(worker: IndexWorker, quiet: bool) -> IngestStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(worker.run(stop))
    tty = sys.stderr.isatty()
    last_print = 0.0
    while not task.done():
        await asyncio.wait({task}, timeout=0.5)
        now = time.monotonic()
        if not quiet and (tty or now - last_print >= 5.0):
            click.echo(("\r" if tty else "") + _progress_line(worker.stats), err=True, nl=not tty)
            last_print = now
    stats = task.result()
    if not quiet:
        click.echo(("\n" if tty else "") + f"done: {stats.posts:,} posts stored, "
                   f"{stats.deletes:,} deleted, {stats.quarantined:,} quarantined", err=True)
    return stats


@click.command()
@click.option("--older-than", required=True, metavar="DURATION",
              help="Drop posts older than this (e.g. 30d); whole days at a time.")
@click.option("--dry-run", is_flag=True, help="Say what would be dropped; change nothing.")
@pass_ctx
def retention(cli: CliContext, older_than: str, dry_run: bool) -> None:
    """Drop whole day partitions of posts older than a duration (PostgreSQL store).

    Partitions are dropped whole, so retention is exact to the day and costs
    no row-by-row deletes; run it daily (cron, a systemd timer).
    """
    try:
        age: timedelta = parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    runtime = Runtime(cli.settings)
    try:
        store = runtime.store
        if not store.drops_partitions:
            raise click.UsageError(
                f"retention drops day partitions and needs the PostgreSQL store; this store is "
                f"{store.kind!r} (use --store postgresql://…)"
            )
        result = store.drop_partitions_before(utcnow() - age, dry_run=dry_run)
    finally:
        runtime.close()
    verb = "would drop" if dry_run else "dropped"
    click.echo(f"{verb} {len(result.partitions)} partition(s) before {result.cutoff:%Y-%m-%d}"
               f"{': ' + ', '.join(result.partitions) if result.partitions else ''}")
    click.echo(f"{verb} {result.posts_deleted:,} post(s)")


COMMANDS = [index, retention]
