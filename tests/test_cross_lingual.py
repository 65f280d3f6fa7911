"""Every language (issue #15): with the default configuration, a question in one language
finds posts about the same event in another, through `townsquare ingest` and `search`.

The default embedder is ``use-static`` (multilingual); homes indexed before the default
changed keep the embedder their vectors were made with.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ago, write_jsonl
from townsquare.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("store_backend")]

POSTS = [
    {"id": "greve", "author": "sncf_info", "lang": "fr",
     "text": "La grève est suspendue : les trains reprennent demain matin sur toutes les lignes."},
    {"id": "flood", "author": "cityhall", "lang": "en",
     "text": "Flooding downtown: the river burst its banks and several streets are under water."},
    # Same languages, other events: what a question must not find first.
    {"id": "tarte", "author": "chef", "lang": "fr",
     "text": "Ma recette de tarte aux pommes pour le week-end, avec beaucoup de cannelle."},
    {"id": "match", "author": "supporter", "lang": "fr",
     "text": "Quel but magnifique hier soir, le stade entier était debout !"},
    {"id": "concert", "author": "fan", "lang": "en",
     "text": "The concert last night was amazing, the band played for three hours."},
    {"id": "picnic", "author": "dave", "lang": "en",
     "text": "Lovely sunny weather for a picnic in the park today."},
]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def search_ids(*args: str) -> list[str]:
    code, out = run("search", *args, "--json")
    assert code == 0, out
    return [h["id"] for h in json.loads(out)]


def ingest(tmp_path: Path, *flags: str) -> None:
    posts = [{**p, "created_at": ago(minutes=10 + i)} for i, p in enumerate(POSTS)]
    code, out = run("ingest", "jsonl", str(write_jsonl(tmp_path / "p.jsonl", posts)), "-q",
                    *flags)
    assert code == 0, out


def test_default_configuration_answers_across_french_and_english(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOWNSQUARE_EMBEDDER")  # the suite's fast default: back to the real one
    ingest(tmp_path)
    # No word in common with the French post: only the dense side can find it.
    assert search_ids("strike")[0] == "jsonl:greve"
    assert search_ids("is the rail strike over?")[0] == "jsonl:greve"
    assert search_ids("inondations dans le centre-ville")[0] == "jsonl:flood"
    code, out = run("stats")
    assert code == 0 and "use-static/256" in out, out


def test_a_home_indexed_by_the_old_default_keeps_its_embedder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ingest(tmp_path, "--embedder", "minilm-static")  # what the default made before
    monkeypatch.delenv("TOWNSQUARE_EMBEDDER")
    with caplog.at_level(logging.WARNING, logger="townsquare.runtime"):
        # Searching and ingesting with the default work on that home, with its vectors.
        assert search_ids("concert band", "--mode", "dense")[0] == "jsonl:concert"
        more = [{"id": "new", "author": "x", "text": "The band announced a second concert.",
                 "created_at": ago(minutes=1), "lang": "en"}]
        code, out = run("ingest", "jsonl", str(write_jsonl(tmp_path / "m.jsonl", more)), "-q")
        assert code == 0, out
    assert "made by the minilm-static embedder: using it" in caplog.text
    assert "minilm-static/256" in run("stats")[1]
    # Chosen explicitly, another embedder is still refused: its vectors would not compare.
    monkeypatch.setenv("TOWNSQUARE_EMBEDDER", "use-static")
    with pytest.raises(ValueError, match="minilm-static/256"):
        run("search", "concert")
