"""``townsquare eval`` through the CLI on a small slice, with the scripted fake LLM (CI)."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from townsquare.cli import main
from townsquare.eval.sets import tweets_set
from townsquare.llm.fake import SCRIPT_ENV

UNSUPPORTED = ("The storm was a hoax staged by pirates on Mars [1]. "
               "The storm was a hoax staged by pirates on Mars [1].")
SUPPORTED = "Nimbus Storage in eu-west-3 has fully recovered [1][2][3][4][5][6][7][8]."
ENGLISH = "A faulty configuration change caused the Nimbus outage [1][2][3][4][5][6][7][8]."
SLICE = "storm-hoax,cloud-over,cloud-cause-fr"


def run(*args: str) -> tuple[int, str]:
    """Exit code and stdout (progress lines go to stderr)."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


@pytest.fixture
def scripted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([UNSUPPORTED, SUPPORTED, ENGLISH]), encoding="utf-8")
    monkeypatch.setenv(SCRIPT_ENV, str(script))


def eval_json(*args: str) -> dict[str, Any]:
    code, out = run("eval", "--llm", "fake", "--no-tweets", "--json", *args)
    assert code == 0, out
    data: dict[str, Any] = json.loads(out)
    return data


@pytest.mark.usefixtures("scripted")
def test_eval_scores_a_slice_and_tells_good_answers_from_bad() -> None:
    data = eval_json("--only", SLICE)
    assert data["backend"] == "fake" and data["model"] == "fake"
    rows = {r["id"]: r for r in data["results"]}
    assert list(rows) == ["storm-hoax", "cloud-over", "cloud-cause-fr"]
    for r in rows.values():
        s = r["score"]
        assert r["error"] is None
        assert 0 <= s["supported_sentences"] <= s["scored_sentences"]
        assert s["facts_found"] <= s["facts_total"] and s["total_s"] > 0
        assert s["lang_detected"] in ("en", "fr")
    assert rows["storm-hoax"]["score"]["latest_ok"] is None
    assert isinstance(rows["cloud-over"]["score"]["latest_ok"], bool)

    hoax, over, cause = (rows[k] for k in SLICE.split(","))
    # Whatever the engine does with the scripted text, what it shows is what gets scored.
    if "Mars" in hoax["answer"]:
        bad = hoax["score"]
        assert bad["supported_sentences"] < bad["scored_sentences"]
        assert "hoax" in bad["forbidden_asserted"]
        assert bad["repeated"] >= 1
        if "fully recovered" in over["answer"]:
            good = over["score"]
            assert good["supported_sentences"] == good["scored_sentences"] >= 1
            assert good["facts_found"] > bad["facts_found"]
            share = (good["supported_sentences"] / good["scored_sentences"])
            assert share > bad["supported_sentences"] / bad["scored_sentences"]
    if "faulty configuration" in cause["answer"]:
        assert cause["score"]["lang_ok"] is False  # English answer to a French question

    summary = data["summary"]
    assert summary["answers"] == 3
    assert summary["sentences"] == sum(r["score"]["scored_sentences"] for r in rows.values())
    assert summary["supported"] == sum(r["score"]["supported_sentences"] for r in rows.values())
    assert summary["facts"] == 2 + 1 + 1
    assert set(data["targets"]) >= {"supported_share", "quotes_bad", "fact_recall"}


@pytest.mark.usefixtures("scripted")
def test_eval_prints_a_table_with_totals() -> None:
    code, out = run("eval", "--llm", "fake", "--no-tweets", "--only", "storm-hoax,cloud-over",
                    "--answers")
    assert code == 0, out
    assert "breaking/storm-hoax" in out and "breaking/cloud-over" in out
    for label in ("supported sentences", "fact recall", "newest cited first",
                  "answer language", "repeated sentences", "time to first token"):
        assert label in out
    assert "UNSUPPORTED" in out or "Mars" not in out


@pytest.mark.usefixtures("scripted")
def test_a_follow_up_is_asked_in_the_conversation_it_follows() -> None:
    data = eval_json("--only", "strike-pay-fr")  # brings the question it follows
    first, follow = data["results"]
    assert (first["id"], follow["id"]) == ("strike-latest", "strike-pay-fr")
    assert first["conversation_id"] and follow["conversation_id"] == first["conversation_id"]


@pytest.mark.usefixtures("scripted")
def test_a_saved_run_can_be_rescored_without_asking(tmp_path: Path) -> None:
    first = eval_json("--only", SLICE)
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(first), encoding="utf-8")
    again = eval_json("--only", SLICE, "--rescore", str(saved))
    assert again["summary"] == first["summary"]
    assert [r["answer"] for r in again["results"]] == [r["answer"] for r in first["results"]]


def test_eval_refuses_bad_arguments(tmp_path: Path) -> None:
    code, out = run("eval", "--llm", "fake", "--no-tweets", "--only", "nope")
    assert code == 2 and "no question nope" in out
    code, out = run("eval", "--llm", "nonsense", "--no-tweets")
    assert code == 2 and "unknown backend" in out
    code, out = run("eval", "--llm", "fake", "--tweets", str(tmp_path / "missing.csv"))
    assert code == 2 and "not found" in out
    bad = tmp_path / "bad.json"
    bad.write_text('{"questions": [{"id": "q"}]}', encoding="utf-8")
    code, out = run("eval", "--llm", "fake", "--no-tweets", "--set", str(bad))
    assert code == 1 and "needs an id and a question" in out
    bad.write_text('{"questions": [{"id": "a", "question": "?", "follows": "b"}]}')
    code, out = run("eval", "--llm", "fake", "--no-tweets", "--set", str(bad))
    assert code == 1 and "not an earlier question" in out


def write_tweets(path: Path) -> Path:
    rows = [
        ("1", "ann", "@united snow again, flight Cancelled", "2015-02-20 08:00:00 -0800"),
        ("2", "bob", "@united lost my bag in Denver", "2015-02-22 09:30:00 -0800"),
        ("3", "cy", "@SouthwestAir snow delays everywhere tonight", "2015-02-24 11:00:00 -0800"),
        ("4", "dee", "@JetBlue great crew, thanks!", "2015-02-24 11:30:00 -0800"),
    ]
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["tweet_id", "airline_sentiment", "name", "text", "tweet_created"])
        for tid, name, text, created in rows:
            w.writerow([tid, "negative", name, text, created])
    return path


def test_tweets_are_retimed_to_now_keeping_order_and_spacing(tmp_path: Path) -> None:
    now = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    qset = tweets_set(write_tweets(tmp_path / "Tweets.csv"), now)
    times = {r["id"]: datetime.fromisoformat(r["created_at"]) for r in qset.records}
    assert times["4"] == now - timedelta(minutes=2)
    assert times["4"] - times["3"] == timedelta(minutes=30)
    assert times["3"] - times["1"] == timedelta(days=4, hours=3)
    latest = next(q for q in qset.questions if q.id == "tw-snow-latest")
    assert latest.expect.latest == ["jsonl:3"]  # the newest tweet about snow


@pytest.mark.usefixtures("scripted")
def test_eval_runs_the_tweets_questions(tmp_path: Path) -> None:
    tweets = write_tweets(tmp_path / "Tweets.csv")
    code, out = run("eval", "--llm", "fake", "--tweets", str(tweets), "--only",
                    "tw-snow-latest", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert [(r["set"], r["id"]) for r in data["results"]] == [("tweets", "tw-snow-latest")]
    assert data["results"][0]["citations"], "the tweets were ingested and retrieved"
