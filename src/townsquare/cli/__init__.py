"""The ``townsquare`` command line.

One click group; each surface adds its commands from its own module (listed
in ``COMMAND_MODULES``) so this file stays a table of contents. A command's
module is imported when that command runs (or ``--help`` lists them all):
``townsquare ingest`` never loads the answer engine, the web service or the
evaluation code, which were a tenth of a bulk ingest's time. Shared options
(``--home``, ``--store``) live on the group and reach commands through
:class:`CliContext`.

Exit codes: 0 ok, 1 runtime failure, 2 usage error (click's), 3 input had
quarantined records (``ingest`` only, so scripts notice bad input).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import click

from townsquare import __version__
from townsquare.config import Settings, load_settings

#: Command name -> the module whose ``COMMANDS`` holds it.
COMMAND_MODULES = {
    **dict.fromkeys(("ingest", "search", "stats", "quarantine"), "townsquare.cli.ingest_cmds"),
    **dict.fromkeys(("ask", "chat"), "townsquare.cli.answer_cmds"),
    **dict.fromkeys(("serve", "keys", "usage"), "townsquare.cli.serve_cmds"),
    "trends": "townsquare.cli.trends_cmds",
    **dict.fromkeys(("index", "retention"), "townsquare.cli.index_cmds"),
    "eval": "townsquare.cli.eval_cmds",
    **dict.fromkeys(("thread", "authors"), "townsquare.cli.people_cmds"),
}


class _LazyGroup(click.Group):
    """A group whose commands are imported from ``COMMAND_MODULES`` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMAND_MODULES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            module = import_module(COMMAND_MODULES[cmd_name])
            for command in getattr(module, "COMMANDS", ()):
                self.add_command(command)
        return super().get_command(ctx, cmd_name)


@dataclass
class CliContext:
    """What every command needs: settings, built lazily so ``--help`` stays instant."""

    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(**self.overrides)
            except Exception as exc:  # pydantic ValidationError, bad TOML
                raise click.ClickException(f"bad configuration: {exc}") from exc
        return self._settings


pass_ctx = click.make_pass_decorator(CliContext)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="townsquare")
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="TOWNSQUARE_HOME",
    help="Data directory (default: the platform's user data dir). Env: TOWNSQUARE_HOME.",
)
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    help="Store URL: a SQLite path or sqlite:///path (default <home>/townsquare.db), "
    "or postgresql://... Env: TOWNSQUARE_STORE.",
)
@click.pass_context
def main(ctx: click.Context, home: Path | None, store_url: str | None) -> None:
    """townsquare: live posts in, searchable within a second, cited answers out."""
    ctx.obj = CliContext(overrides={"home": home, "store": store_url})


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
