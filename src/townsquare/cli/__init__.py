"""The ``townsquare`` command line.

One click group; each surface adds its commands from its own module (listed
in ``_COMMAND_MODULES``) so this file stays a table of contents. Shared
options (``--home``, ``--store``) live on the group and reach commands
through :class:`CliContext`.

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

_COMMAND_MODULES = (
    "townsquare.cli.ingest_cmds",
    "townsquare.cli.answer_cmds",
    "townsquare.cli.serve_cmds",
    "townsquare.cli.trends_cmds",
    "townsquare.cli.index_cmds",
    "townsquare.cli.eval_cmds",
    "townsquare.cli.people_cmds",
)


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


def _register() -> None:
    for name in _COMMAND_MODULES:
        module = import_module(name)
        for command in getattr(module, "COMMANDS", ()):
            main.add_command(command)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
