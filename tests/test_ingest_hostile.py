"""Hostile input through the public surfaces: it is quarantined, everything else goes in.

Every line below broke ``townsquare ingest jsonl`` before (the batch rolled
back, the cursor stayed put, a re-run failed the same way, ``serve``
restarted the source forever) or let a post escape its bounds (dated 2099,
50 MB). Each test runs on SQLite, then on PostgreSQL when
``TOWNSQUARE_TEST_POSTGRES`` is set.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ago
from townsquare.cli import main

pytestmark = pytest.mark.usefixtures("store_backend")


def _post(pid: str, **fields: object) -> str:
    record = {"id": pid, "author": "alice", "text": f"good post {pid}", "created_at": ago(hours=1)}
    record.update(fields)
    return json.dumps(record)


DEEP = "[" * 100_000 + "]" * 100_000
#: Each bad line, and what its quarantine reason says.
NASTY: dict[str, tuple[str, str]] = {
    "time-array": ('{"id": "n1", "author": "a", "text": "t", "created_at": [1]}',
                   "bad created_at: not a time: a JSON array"),
    "time-object": ('{"id": "n2", "author": "a", "text": "t", "created_at": {}}',
                    "bad created_at: not a time: a JSON object"),
    "deep": ('{"id": "n3", "author": "a", "text": "t", "created_at": 1767323045, "x": '
             + DEEP + "}", "RecursionError"),
    "surrogate": ('{"id": "n4", "author": "a", "text": "broken \\ud800 emoji", '
                  '"created_at": 1767323045}', "field 'text' is not valid Unicode"),
    "id-object": ('{"id": {"a": 1}, "author": "a", "text": "t", "created_at": 1767323045}',
                  "must be strings or integers: id"),
    "author-number": ('{"id": "n6", "author": 5, "text": "t", "created_at": 1767323045}',
                      "must be strings: author"),
    "year-1": ('{"id": "n7", "author": "a", "text": "t", "created_at": "0001-01-01T00:00:00Z"}',
               "created_at 0001-01-01T00:00:00Z is before 1990-01-01T00:00:00Z"),
    "epoch-overflow": ('{"id": "n8", "author": "a", "text": "t", "created_at": 1e300}',
                       "bad created_at"),
    "nan": ('{"id": "n9", "author": "a", "text": "t", "created_at": NaN}', "not a time: NaN"),
    "year-overflow": ('{"id": "n10", "author": "a", "text": "t", '
                      '"created_at": "9999-12-31T23:59:59-05:00"}', "bad created_at"),
    "surrogate-delete": ('{"id": "\\udfff", "deleted": true}', "the store refused it"),
    "surrogate-author": ('{"id": "n12", "author": "\\ud83d", "text": "t", '
                         '"created_at": 1767323045}', "field 'author' is not valid Unicode"),
    "not-json": ("{oops", "invalid JSON"),
}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def _mixed_file(path: Path) -> list[str]:
    """Good lines between every bad one; returns the good post ids."""
    lines, good = [], []
    for n, (bad, _) in enumerate(NASTY.values()):
        lines += [_post(f"g{n}"), bad]
        good.append(f"jsonl:g{n}")
    lines.append(_post("future", created_at="2099-01-01T00:00:00Z", text="dated 2099"))
    lines.append(_post("huge", text="huge " + "lorem ipsum dolor sit amet " * 80_000))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [*good, "jsonl:future", "jsonl:huge"]


def _quarantine() -> list[dict[str, str]]:
    code, out = run("quarantine", "--json", "-n", "1000")
    assert code == 0, out
    return json.loads(out)


def _stored() -> dict[str, dict[str, object]]:
    code, out = run("search", "", "--limit", "1000", "--json")
    assert code == 0, out
    return {h["id"]: h for h in json.loads(out)}


def test_every_bad_line_is_quarantined_and_every_good_one_kept(tmp_path: Path) -> None:
    good = _mixed_file(tmp_path / "mixed.jsonl")
    code, out = run("ingest", "jsonl", str(tmp_path / "mixed.jsonl"))
    assert code == 3, out
    assert f"{len(good)} posts" in out and f"{len(NASTY)} quarantined" in out, out
    stored = _stored()
    assert set(stored) == set(good)
    reasons = [r["reason"] for r in _quarantine()]
    assert len(reasons) == len(NASTY)
    for name, (_, why) in NASTY.items():
        assert any(why in r for r in reasons), (name, why, reasons)
    # Time and size are bounded: 2099 becomes "now", the huge text is clipped.
    when = datetime.fromisoformat(str(stored["jsonl:future"]["created_at"]).replace("Z", "+00:00"))
    assert abs(when - datetime.now(UTC)) < timedelta(minutes=5)
    assert len(str(stored["jsonl:huge"]["text"])) <= 10_000
    assert str(stored["jsonl:huge"]["text"]).endswith("…")
    # The cursor passed every bad line: a re-run reads nothing and succeeds.
    code, out = run("ingest", "jsonl", str(tmp_path / "mixed.jsonl"))
    assert code == 0 and "0 posts" in out and "0 quarantined" in out, out
    assert len(_quarantine()) == len(NASTY)


def test_the_same_file_under_other_names_adds_no_quarantine_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mixed_file(tmp_path / "x.jsonl")
    monkeypatch.chdir(tmp_path)
    assert run("ingest", "jsonl", "x.jsonl", "-q")[0] == 3
    for name in ("./x.jsonl", str(tmp_path / "x.jsonl"), f"../{tmp_path.name}/x.jsonl"):
        code, out = run("ingest", "jsonl", name)
        assert code == 0 and "0 quarantined" in out, (name, out)
    # Another file with the same bad lines is read (a new stream), but each bad
    # input is listed once: quarantine rows are unique by source, reason and bytes.
    shutil.copy(tmp_path / "x.jsonl", tmp_path / "copy.jsonl")
    assert run("ingest", "jsonl", "copy.jsonl", "-q")[0] == 3
    assert len(_quarantine()) == len(NASTY)


def test_raw_records_are_capped_so_a_huge_post_is_not_stored_twice(tmp_path: Path) -> None:
    words = " ".join(f"w{i:07d}" for i in range(300_000))  # 2.7 MB, barely compressible
    (tmp_path / "big.jsonl").write_text(_post("big", text=words) + "\n", encoding="utf-8")
    code, out = run("ingest", "jsonl", str(tmp_path / "big.jsonl"))
    assert code == 0, out
    _, out = run("stats", "--json")
    assert json.loads(out)["file_bytes"] < 1_500_000  # text and raw were 5.4 MB together


def test_a_line_over_the_line_limit_is_quarantined_unread(tmp_path: Path) -> None:
    path = tmp_path / "giant.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        fh.write(_post("before") + "\n")
        fh.write('{"id": "giant", "author": "a", "created_at": 1767323045, "text": "')
        fh.write("x" * (17 * 1024 * 1024) + '"}\n')
        fh.write(_post("after") + "\n")
    code, out = run("ingest", "jsonl", str(path))
    assert code == 3 and "2 posts" in out and "1 quarantined" in out, out
    assert set(_stored()) == {"jsonl:before", "jsonl:after"}
    (record,) = _quarantine()
    assert "line longer than 16,777,216 bytes" in record["reason"]


def test_ingest_bounds_are_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    (tmp_path / "p.jsonl").write_text(
        _post("soon", created_at=soon) + "\n" + _post("long", text="word " * 100) + "\n"
        + _post("old", created_at="1985-05-05T00:00:00Z") + "\n", encoding="utf-8")
    monkeypatch.setenv("TOWNSQUARE_MAX_FUTURE_SKEW", "2h")
    monkeypatch.setenv("TOWNSQUARE_MAX_POST_CHARS", "100")
    monkeypatch.setenv("TOWNSQUARE_MIN_POST_DATE", "1980-01-01")
    code, out = run("ingest", "jsonl", str(tmp_path / "p.jsonl"))
    assert code == 0, out
    stored = _stored()
    assert str(stored["jsonl:soon"]["created_at"]).startswith(soon[:16])  # within the skew
    assert len(str(stored["jsonl:long"]["text"])) <= 100
    assert "jsonl:old" in stored
    monkeypatch.setenv("TOWNSQUARE_MAX_FUTURE_SKEW", "soon")
    code, out = run("ingest", "jsonl", str(tmp_path / "p.jsonl"))
    assert code != 0 and "max_future_skew" in out and "not a duration" in out, out


async def test_serve_keeps_its_source_running_through_bad_lines(tmp_path: Path) -> None:
    from service_helpers import make_runtime
    from townsquare.ingest.supervisor import Supervisor
    from townsquare.sources.jsonl import JsonlSource

    good = _mixed_file(tmp_path / "mixed.jsonl")
    runtime = make_runtime()
    sup = Supervisor(runtime.store, runtime.embedder,
                     [("file", JsonlSource(str(tmp_path / "mixed.jsonl")))],
                     backoff_base=0.01, backoff_cap=0.02, limits=runtime.limits)
    await sup.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while sup.statuses()[0].status != "stopped":
        assert loop.time() < deadline, sup.statuses()
        await asyncio.sleep(0.02)
    status = sup.statuses()[0]
    await sup.stop()
    assert status.restarts == 0 and status.last_error is None, status
    assert status.posts == len(good) and status.quarantined == len(NASTY)
    assert all(runtime.store.get_post(pid) is not None for pid in good)
    runtime.close()


def test_stdin_gets_the_same_treatment(tmp_path: Path) -> None:
    good = _mixed_file(tmp_path / "mixed.jsonl")
    body = (tmp_path / "mixed.jsonl").read_bytes()
    body += b'{"id": "giant", "text": "' + b"x" * (17 * 1024 * 1024) + b'"}\n'
    body += _post("last").encode() + b"\n"
    result = CliRunner().invoke(main, ["ingest", "jsonl", "-"], input=body,
                                catch_exceptions=False)
    assert result.exit_code == 3, result.output
    assert set(_stored()) == {*good, "jsonl:last"}
    reasons = [r["reason"] for r in _quarantine()]
    assert len(reasons) == len(NASTY) + 1
    assert any("line longer than 16,777,216 bytes" in r for r in reasons)
