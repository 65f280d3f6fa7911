"""Question sets: posts to ingest, questions to ask, what each answer must contain.

A set is one JSON file (the built-ins live in ``townsquare/eval/sets/``)::

    {"name": "breaking", "description": "...",
     "posts": [{"id": "strike-4", "minutes_ago": 60, "author": "lemonde_live",
                "author_name": "Le Monde Live", "lang": "fr", "text": "...",
                "reply_to": "strike-1", "quote_of": "..."}],           # optional fields
     "questions": [{"id": "strike-latest", "question": "What is the latest ...?",
                    "lang": "en",                                      # expected language
                    "gold": [["deal", "accord"], ["4.5"]],             # facts: alternatives
                    "forbidden": ["strike continues"],                 # must not be asserted
                    "latest": ["strike-4", "strike-5"],                # newest relevant posts
                    "follows": "other-question-id"}]}                  # same conversation

Post times are given as ``minutes_ago`` and resolved against the run's clock,
so "latest" and recency ranking behave as they would on a live stream. The
posts become JSON Lines records of the ``jsonl`` source (same fields, same
validation). :func:`tweets_set` builds a set from ``Tweets.csv`` (Twitter US
Airline Sentiment) and the built-in ``tweets.json`` questions instead.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from townsquare.errors import DataError
from townsquare.eval.score import Expectation
from townsquare.eval.text import fold, words
from townsquare.timeutil import parse_time

BUILTIN_SETS = ("breaking",)
#: Where ``--tweets`` looks by default (the repository's sibling ``shared`` folder).
DEFAULT_TWEETS = Path("../shared/data/tweets/Tweets.csv")


class SetError(DataError, ValueError):
    """A question set that cannot be used (the message says which field)."""


@dataclass(slots=True)
class Question:
    id: str
    text: str
    expect: Expectation
    #: Id of the question whose conversation this one continues (a follow-up).
    follows: str | None = None
    #: Words the newest relevant post holds, when the set finds it in the data
    #: (``latest_match``) instead of naming it (``latest``).
    latest_match: list[str] = field(default_factory=list)


@dataclass(slots=True)
class QuestionSet:
    name: str
    description: str
    #: JSON Lines records for the ``jsonl`` source, times resolved.
    records: list[dict[str, Any]]
    questions: list[Question]
    #: Post id (as stored: ``jsonl:<id>``) -> author display name, for quote attribution.
    names: dict[str, str] = field(default_factory=dict)

    def only(self, ids: set[str]) -> QuestionSet:
        """The questions named in ``ids``, plus the ones they follow up."""
        by_id = {q.id: q for q in self.questions}
        keep = set()
        for qid in ids & set(by_id):
            while qid and qid not in keep:
                keep.add(qid)
                qid = by_id[qid].follows or ""
        questions = [q for q in self.questions if q.id in keep]
        return QuestionSet(self.name, self.description, self.records, questions, self.names)


def builtin_set(name: str, now: datetime) -> QuestionSet:
    """A set shipped with the package (``breaking``)."""
    if name not in BUILTIN_SETS:
        raise SetError(f"no built-in question set {name!r}; built-ins: {', '.join(BUILTIN_SETS)}")
    text = resources.files("townsquare.eval").joinpath(f"sets/{name}.json").read_text("utf-8")
    return parse_set(json.loads(text), now, origin=f"{name}.json")


def load_set(path: Path, now: datetime) -> QuestionSet:
    """A set from a JSON file of the documented shape."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SetError(f"{path}: {exc}") from None
    return parse_set(data, now, origin=str(path))


def parse_set(data: Any, now: datetime, origin: str = "set") -> QuestionSet:
    if not isinstance(data, dict):
        raise SetError(f"{origin}: a question set is a JSON object")
    records: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, post in enumerate(data.get("posts") or []):
        missing = [k for k in ("id", "author", "text", "minutes_ago") if k not in post]
        if missing:
            raise SetError(f"{origin}: post {i} lacks {', '.join(missing)}")
        rec = {k: v for k, v in post.items() if k != "minutes_ago"}
        rec["created_at"] = (now - timedelta(minutes=float(post["minutes_ago"]))).isoformat()
        records.append(rec)
        if post.get("author_name"):
            names[f"jsonl:{post['id']}"] = str(post["author_name"])
    qset = QuestionSet(
        name=str(data.get("name") or origin),
        description=str(data.get("description") or ""),
        records=records,
        questions=_questions(data.get("questions") or [], origin),
        names=names,
    )
    resolve_latest(qset)
    return qset


def resolve_latest(qset: QuestionSet) -> None:
    """Find the newest relevant post of each ``latest_match`` question in the set's posts."""
    for q in qset.questions:
        if q.latest_match:
            q.expect.latest = newest_matching(qset.records, q.latest_match)


def _questions(items: list[Any], origin: str) -> list[Question]:
    out: list[Question] = []
    seen: set[str] = set()
    for i, q in enumerate(items):
        if not isinstance(q, dict) or not q.get("id") or not q.get("question"):
            raise SetError(f"{origin}: question {i} needs an id and a question")
        gold = [[alt] if isinstance(alt, str) else [str(a) for a in alt]
                for alt in q.get("gold") or []]
        follows = q.get("follows")
        if follows and follows not in seen:
            raise SetError(f"{origin}: {q['id']} follows {follows!r}, not an earlier question")
        seen.add(str(q["id"]))
        out.append(Question(
            id=str(q["id"]),
            text=str(q["question"]),
            expect=Expectation(
                gold=gold,
                forbidden=[str(f) for f in q.get("forbidden") or []],
                lang=q.get("lang"),
                latest=[f"jsonl:{pid}" for pid in q.get("latest") or []],
            ),
            follows=follows,
            latest_match=[str(w) for w in q.get("latest_match") or []],
        ))
    return out


def tweets_set(path: Path, now: datetime) -> QuestionSet:
    """``Tweets.csv`` re-timed to end two minutes before ``now``, with the tweet questions."""
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise SetError(f"{path}: {exc}") from None
    needed = {"tweet_id", "name", "text", "tweet_created"}
    if not rows or not needed <= set(rows[0]):
        raise SetError(f"{path}: expected a Tweets.csv with columns {', '.join(sorted(needed))}")
    timed = sorted(((parse_time(r["tweet_created"]), r) for r in rows), key=lambda t: t[0])
    shift = (now - timedelta(minutes=2)) - timed[-1][0]
    records: dict[str, dict[str, Any]] = {}
    for created, row in timed:
        records[row["tweet_id"]] = {
            "id": row["tweet_id"], "author": row["name"], "text": row["text"],
            "created_at": (created + shift).isoformat(), "lang": "en",
        }
    text = resources.files("townsquare.eval").joinpath("sets/tweets.json").read_text("utf-8")
    qset = parse_set(json.loads(text), now, origin="tweets.json")
    qset.records = list(records.values())
    resolve_latest(qset)
    return qset


def newest_matching(records: list[dict[str, Any]], terms: list[str]) -> list[str]:
    """Id of the newest record whose words include every term (folded), as stored."""
    want = [fold(t) for t in terms]
    best: tuple[str, str] | None = None
    for rec in records:
        have = set(words(rec["text"]))
        if all(w in have for w in want) and (best is None or rec["created_at"] > best[0]):
            best = (rec["created_at"], rec["id"])
    return [f"jsonl:{best[1]}"] if best else []
