"""`townsquare trends` over a real SQLite store, and the engine rebuilt from it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write_jsonl
from townsquare.cli import main
from townsquare.llm.fake import SCRIPT_ENV
from townsquare.model import Upsert, iso
from townsquare.store import open_store
from townsquare.trends import TrendEngine
from trends_helpers import T0, background, post

AT = T0 + timedelta(hours=30)


def _records() -> list[dict[str, object]]:
    posts = background(T0, hours=30, per_minute=1.0, seed=21)
    posts += [
        post(
            f"eclipse{i}",
            f"sky{i}",
            "Total #Eclipse over Lyon, incroyable !",
            AT - timedelta(minutes=20) + timedelta(seconds=30 * i),
        )
        for i in range(25)
    ]
    return [
        {"id": p.id, "author": p.author, "text": p.text, "created_at": iso(p.created_at)}
        for p in posts
    ]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_trends_command_reads_the_store(tmp_path: Path) -> None:
    code, out = run("ingest", "jsonl", str(write_jsonl(tmp_path / "p.jsonl", _records())), "-q")
    assert code == 0, out
    code, out = run("trends", "--at", iso(AT), "--window", "1h", "--json", "--stories")
    assert code == 0, out
    data = json.loads(out)
    assert data["window"] == "1h" and data["at"] == iso(AT)
    top = data["trends"][0]
    assert top["label"] == "#Eclipse" and top["authors"] == 25 and top["posts"] == 25
    assert top["sample_ids"][0].startswith("jsonl:eclipse")
    assert data["stories"][0]["size"] == 25 and "#Eclipse" in data["stories"][0]["title"]

    code, out = run("trends", "--at", iso(AT), "-n", "3")
    assert code == 0 and "#Eclipse" in out and "25 posts by 25 authors" in out

    # A day later the burst has left the hour; nothing else stands out.
    code, out = run("trends", "--at", iso(AT + timedelta(days=1)), "--json")
    assert code == 0 and json.loads(out)["trends"] == []


def test_trends_summarize_writes_cited_summaries_in_a_persona(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = run("ingest", "jsonl", str(write_jsonl(tmp_path / "p.jsonl", _records())), "-q")
    assert code == 0, out
    script = tmp_path / "llm.json"
    monkeypatch.setenv(SCRIPT_ENV, str(script))

    # (Every sentence is verified against the posts it cites: the script says what they say.)
    script.write_text(json.dumps(["A total eclipse over Lyon [1]."]))
    code, out = run("trends", "--at", iso(AT), "--summarize", "--json")
    assert code == 0, out
    story = json.loads(out)["stories"][0]
    assert story["summary"] == "A total eclipse over Lyon [1]."
    assert story["summary_mode"] == "regular"
    [cite] = story["citations"]
    assert cite["n"] == 1 and cite["id"].startswith("jsonl:eclipse")
    assert "#Eclipse" in cite["text"]

    script.write_text(json.dumps(["Total eclipse over Lyon, and it is incroyable [1]."]))
    code, out = run("trends", "--at", iso(AT), "--summarize", "--mode", "fun", "-n", "3")
    assert code == 0, out
    assert "Total eclipse over Lyon, and it is incroyable [1]." in out
    assert "[1] @sky" in out and "Total #Eclipse over Lyon" in out

    result = CliRunner().invoke(main, ["trends", "--summarize", "--mode", "grumpy"])
    assert result.exit_code == 2 and "unknown mode 'grumpy'" in result.output


def test_trends_command_rejects_bad_input() -> None:
    assert CliRunner().invoke(main, ["trends", "--window", "2h"]).exit_code == 2
    result = CliRunner().invoke(main, ["trends", "--at", "yesterday-ish"])
    assert result.exit_code == 2 and "not a time" in result.output


def test_engine_from_store_matches_feeding_posts_directly(tmp_path: Path) -> None:
    posts = background(T0, hours=30, per_minute=1.0, seed=22)
    posts += [
        post(f"b{i}", f"fan{i}", "grève générale demain", AT - timedelta(minutes=i))
        for i in range(20)
    ]
    store = open_store(str(tmp_path / "t.db"), tmp_path)
    try:
        store.apply("test", [Upsert(p) for p in posts], cursor=None)
        rebuilt = TrendEngine.from_store(store, AT, history=timedelta(hours=6))
    finally:
        store.close()
    direct = TrendEngine()
    direct.add_many(p for p in posts if p.created_at >= AT - timedelta(hours=30))
    direct.detector.advance(AT)
    assert [t.to_dict() for t in rebuilt.trends("1h")] == [
        t.to_dict() for t in direct.trends("1h")
    ]
    # One trend (its words restate each other); on a tie phrases rank before terms.
    assert [t.label for t in rebuilt.trends("1h")] == ["générale demain"]
