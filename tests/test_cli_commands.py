"""The command line's table of contents: every command listed, each module imported only
when one of its commands runs (``townsquare ingest`` starts without the answer engine,
the web service or the evaluation code)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import import_module
from pathlib import Path

from click.testing import CliRunner

from townsquare.cli import COMMAND_MODULES, main


def test_every_command_module_is_listed_with_exactly_its_commands() -> None:
    for module_name in set(COMMAND_MODULES.values()):
        module = import_module(module_name)
        names = {command.name for command in module.COMMANDS}
        listed = {name for name, mod in COMMAND_MODULES.items() if mod == module_name}
        assert names == listed, module_name
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMAND_MODULES:
        assert f"  {name} " in result.output


def test_ingest_loads_neither_the_answer_engine_nor_the_service(tmp_path: Path) -> None:
    posts = tmp_path / "posts.jsonl"
    posts.write_text(json.dumps({"id": "1", "author": "ann", "text": "the tram is late",
                                 "created_at": "2026-11-01T10:00:00Z"}) + "\n")
    probe = (
        "import sys; from townsquare.cli import main\n"
        "try:\n"
        f"    main(['ingest', 'jsonl', {str(posts)!r}, '-q', '--embedder', 'none'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print(sorted(m for m in ('fastapi', 'openai', 'llama_cpp', 'townsquare.answer',\n"
        "                         'townsquare.service', 'townsquare.eval') if m in sys.modules))\n"
    )
    env = {**os.environ, "TOWNSQUARE_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    assert (tmp_path / "home").is_dir()
