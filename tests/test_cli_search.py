"""The foundation through its public surface: `townsquare ingest jsonl` then `search`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ago, write_jsonl
from townsquare.cli import main

# Every test runs on SQLite, then on PostgreSQL when TOWNSQUARE_TEST_POSTGRES is set.
pytestmark = pytest.mark.usefixtures("store_backend")

POSTS = [
    {"id": "1", "author": "alice", "text": "The train strike in Paris is over #greve",
     "created_at": ago(hours=30), "lang": "en", "url": "https://ex.org/1"},
    {"id": "2", "author": "bob", "text": "Grève des trains: l'école est fermée à Lyon",
     "created_at": ago(hours=2), "lang": "fr"},
    {"id": "3", "author": "carol", "text": "Train strike continues, stations empty",
     "created_at": ago(minutes=10), "lang": "en"},
    {"id": "4", "author": "dave", "text": "Lovely weather for a picnic today",
     "created_at": ago(minutes=5), "lang": "en"},
]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def search_json(*args: str) -> list[dict[str, object]]:
    code, out = run("search", *args, "--json")
    assert code == 0, out
    return json.loads(out)


def test_ingest_then_search_returns_fields_in_sensible_order(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "posts.jsonl", POSTS)
    code, out = run("ingest", "jsonl", str(f), "-q")
    assert code == 0, out
    hits = search_json("train strike")
    ids = [h["id"] for h in hits]
    # All three match ("trains" stems to "train"); the fresh full match leads,
    # and with a 6 h half-life a 2 h-old partial match outranks a 30 h-old one.
    assert ids == ["jsonl:3", "jsonl:2", "jsonl:1"]
    assert set(hits[0]) >= {"id", "author", "text", "created_at", "url", "score"}
    assert hits[2]["url"] == "https://ex.org/1"
    assert hits[0]["score"] > hits[1]["score"] > hits[2]["score"]


def test_half_life_trades_freshness_for_relevance(tmp_path: Path) -> None:
    run("ingest", "jsonl", str(write_jsonl(tmp_path / "p.jsonl", POSTS)), "-q")
    import os

    os.environ["TOWNSQUARE_HALF_LIFE"] = "3650d"  # the autouse fixture restores env
    ids = [h["id"] for h in search_json("train strike", "--mode", "lexical")]
    assert ids[-1] == "jsonl:2"  # one word of two matches: last when age barely matters


def test_every_filter_is_honoured(tmp_path: Path) -> None:
    run("ingest", "jsonl", str(write_jsonl(tmp_path / "p.jsonl", POSTS)), "-q")
    assert [h["id"] for h in search_json("train", "--since", "1h")] == ["jsonl:3"]
    assert [h["id"] for h in search_json("train", "--until", "1d")] == ["jsonl:1"]
    assert [h["id"] for h in search_json("train", "--from", "@alice")] == ["jsonl:1"]
    ids = [h["id"] for h in search_json("train", "--exclude", "carol")]
    assert "jsonl:3" not in ids and "jsonl:1" in ids
    assert [h["id"] for h in search_json("train", "--lang", "fr")] == ["jsonl:2"]
    assert search_json("train", "--source", "rss") == []
    assert len(search_json("", "--limit", "2")) == 2  # empty query: newest
    assert [h["id"] for h in search_json("", "--limit", "1")] == ["jsonl:4"]


def test_diacritics_fold_and_user_text_never_becomes_fts_syntax(tmp_path: Path) -> None:
    run("ingest", "jsonl", str(write_jsonl(tmp_path / "p.jsonl", POSTS)), "-q")
    assert [h["id"] for h in search_json("ecole", "--mode", "lexical")] == ["jsonl:2"]
    # "grève" in a French post and the #greve hashtag both match the folded query.
    assert {h["id"] for h in search_json("GRÈVE", "--mode", "lexical")} == {"jsonl:1", "jsonl:2"}
    for nasty in ['"', "NOT", "train OR", "*", "text:train", 'NEAR("a" "b")', "(", "^"]:
        code, out = run("search", nasty, "--json")
        assert code == 0, (nasty, out)


def test_same_input_twice_gives_same_rows_and_delete_removes(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", POSTS)
    b = tmp_path / "b.jsonl"
    b.write_bytes(a.read_bytes())
    run("ingest", "jsonl", str(a), "-q")
    first = search_json("", "--limit", "100")
    run("ingest", "jsonl", str(b), "-q")  # a different stream with the same posts
    assert search_json("", "--limit", "100") == first
    _, out = run("stats", "--json")
    assert json.loads(out)["posts"] == len(POSTS)
    write_jsonl(b, [{"id": "3", "deleted": True}])
    run("ingest", "jsonl", str(b), "-q")
    assert "jsonl:3" not in [h["id"] for h in search_json("train strike")]


def test_malformed_lines_are_quarantined_and_ingestion_goes_on(tmp_path: Path) -> None:
    f = tmp_path / "mixed.jsonl"
    f.write_text(
        '{"id": "ok1", "author": "a", "text": "first good", "created_at": 1700000000}\n'
        "this is not json\n"
        '{"id": "x", "author": "a", "created_at": "2026-01-01T00:00:00Z"}\n'
        '{"id": "y", "author": "a", "text": "bad time", "created_at": "yesterday-ish"}\n'
        "[1, 2]\n"
        '{"id": "ok2", "author": "b", "text": "second good", "created_at": "2026-01-01"}\n'
    )
    code, out = run("ingest", "jsonl", str(f))
    assert code == 3, out
    assert "2 posts" in out and "4 quarantined" in out
    code, out = run("quarantine", "--json")
    reasons = [r["reason"] for r in json.loads(out)]
    assert any("invalid JSON" in r for r in reasons)
    assert any("missing required field(s): text" in r for r in reasons)
    assert any("bad created_at" in r for r in reasons)
    assert any("expected a JSON object" in r for r in reasons)
    assert len(search_json("good")) == 2


def test_every_time_form_and_encoding_is_read_or_quarantined(tmp_path: Path) -> None:
    f = tmp_path / "times.jsonl"
    lines = [
        ("iso-z", "2026-01-02T03:04:05Z"),
        ("iso-offset", "2026-01-02T05:04:05+02:00"),
        ("iso-fraction", "2026-01-02T03:04:05.000z"),
        ("epoch-s", 1767323045),
        ("epoch-string", "1767323045"),
        ("epoch-ms", 1767323045000),
    ]
    # Digits are epoch seconds, not a basic date: "20260102" is 1970-08-23, which
    # is before min_post_date, so it is quarantined (not stored as 2026-01-02).
    digits = {"id": "digits-not-a-date", "author": "a", "text": "when", "created_at": "20260102"}
    body = "".join(
        json.dumps({"id": pid, "author": "a", "text": f"when {pid}", "created_at": when}) + "\n"
        for pid, when in lines
    ).encode()
    body += json.dumps(digits).encode() + b"\n"
    body += b'{"id": "latin1", "author": "a", "text": "caf\xe9", "created_at": 1767323045}\n'
    f.write_bytes(body)
    code, out = run("ingest", "jsonl", str(f))
    assert code == 3 and f"{len(lines)} posts" in out and "2 quarantined" in out, out
    got = {h["id"]: h["created_at"] for h in search_json("when", "--limit", "20")}
    for pid, _ in lines:
        assert got[f"jsonl:{pid}"] == "2026-01-02T03:04:05Z", pid
    assert "jsonl:digits-not-a-date" not in got
    _, out = run("quarantine", "--json")
    reasons = [r["reason"] for r in json.loads(out)]
    assert any("invalid JSON" in r for r in reasons)
    assert "created_at 1970-08-23T11:48:22Z is before 1990-01-01T00:00:00Z" in " ".join(reasons)


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    code, out = run("ingest", "nosuchsource", "x")
    assert code == 2 and "unknown source 'nosuchsource'" in out
    code, out = run("ingest", "jsonl", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "no such file" in out
    code, out = run("search", "x", "--since", "yesterday-ish")
    assert code == 2 and "not a time" in out


def test_help_and_version() -> None:
    code, out = run("--version")
    assert code == 0 and "townsquare" in out
    for cmd in ("ingest", "search", "stats", "quarantine"):
        code, out = run(cmd, "--help")
        assert code == 0 and "Usage" in out
