"""People and threads in answers (issue #15): who the model is shown, end to end.

    python benchmarks/bench_people.py [--people 40] [--embedder minilm-static]

Builds a store (SQLite, the chosen embedder) with ``--people`` named accounts
(first and last names, some with accents, a few sharing a surname), each
posting on two topics, and for every person as many posts *by others about
them* ("<Surname> is lying about the strike"), plus reply threads and quotes.
Then it asks through the real :class:`~townsquare.answer.AnswerEngine` (fake
LLM, so only retrieval and context are measured) and reads the posts the
model was shown:

- **names**: "what does <surname> say about <topic>?" in the forms people
  type (lower case, accents dropped, full name, French). Target: every post
  shown is by that person when the surname is unique; with a shared surname,
  the posts shown are from the people who carry it.
- **who is**: "who is <Full Name>?": every post shown is theirs.
- **threads**: "explain this post <url>" on a reply in the middle of a
  thread: shown = the post, its parent chain and its replies and quotes.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import tempfile
import time
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table
from townsquare.answer import AnswerEngine, AnswerRequest
from townsquare.config import load_settings
from townsquare.ingest import Ingestor, IngestStats
from townsquare.llm.fake import FakeLLM
from townsquare.model import Batch, Post, Upsert
from townsquare.runtime import Runtime

FIRST = ["Jean", "Élodie", "Marc", "Anaïs", "Paul", "Zoé", "Hugo", "Léa", "Omar", "Inès",
         "Karim", "Chloé", "Louis", "Maëlle", "Yann", "Sofia", "Théo", "Nina", "Rémi", "Ava"]
LAST = ["Dupont", "Mélenchon", "Garnier", "Lefèvre", "Moreau", "Durand", "Rousseau", "Bélanger",
        "Caron", "Fournier", "Giraud", "Hébert", "Joly", "Klein", "Lambert", "Mercier",
        "Noël", "Perrin", "Renaud", "Vidal", "Weber", "Brun", "Colin", "Faure", "Gauthier",
        "Hamel", "Jacquet", "Leroy", "Marchand", "Nicolas", "Olivier", "Poirier", "Roche",
        "Sauvage", "Tessier", "Vasseur", "Aubert", "Barbier", "Chevalier", "Dumas"]
TOPICS = {
    "strike": ["the rail strike", "the union talks on the strike", "strike pay"],
    "budget": ["the budget vote", "budget cuts", "the budget deficit"],
    "climate": ["the climate plan", "the heatwave and climate", "climate targets"],
    "housing": ["housing prices", "the housing bill", "rents and housing"],
}
NOW = datetime.now(UTC)


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def build(n_people: int, seed: int = 5) -> tuple[list[Post], list[dict[str, object]], list[str]]:
    rng = random.Random(seed)
    people: list[dict[str, object]] = []
    # One surname in eight is carried by two people (ambiguous by design).
    surnames = LAST[: max(2, min(len(LAST), n_people - n_people // 8))]
    for i in range(n_people):
        first, last = FIRST[i % len(FIRST)], surnames[i % len(surnames)]
        handle = f"{strip_accents(first[0]).lower()}{strip_accents(last).lower()}{i}.example.social"
        people.append({"name": f"{first} {last}", "last": last, "handle": handle,
                       "topics": rng.sample(list(TOPICS), 2)})
    posts: list[Post] = []
    n = 0

    def add(author: str, text: str, minutes: float, **kw: object) -> Post:
        nonlocal n
        n += 1
        p = Post(id=f"jsonl:b{n}", source="jsonl", author=author, text=text,
                 created_at=NOW - timedelta(minutes=minutes), url=f"https://ex.org/b{n}",
                 **kw)  # type: ignore[arg-type]
        posts.append(p)
        return p

    for person in people:
        for topic in person["topics"]:  # type: ignore[attr-defined]
            for phrase in TOPICS[topic]:
                add(str(person["handle"]), f"My view on {phrase}: we need a fair deal now",
                    rng.uniform(5, 600), author_name=str(person["name"]))
        for topic in TOPICS:  # others talking about them, by name
            add(f"critic{rng.randrange(500)}",
                f"{person['last']} is lying about {TOPICS[topic][0]}, as always",
                rng.uniform(1, 300))
    # Threads: root -> reply -> reply (the one asked about) -> 2 replies, 1 quote.
    targets = []
    for t in range(10):
        root = add(f"reporter{t}", f"Bridge {t} closed for repairs until Friday", 200)
        mid = add(f"asker{t}", f"Which bridge {t}? The old one?", 190, reply_to=root.id)
        post = add(f"reporter{t}", "Yes the old stone one", 180, reply_to=mid.id)
        kids = [add(f"reader{t}x{k}", f"Thanks, taking the ferry ({k})", 170 - k,
                    reply_to=post.id) for k in range(2)]
        quote = add(f"quoter{t}", "Finally some repairs", 160, quote_of=post.id)
        targets.append(",".join([post.id, root.id, mid.id, *(k.id for k in kids), quote.id]))
    return posts, people, targets


async def _names(engine: AnswerEngine, llm: FakeLLM, asked: list[dict[str, object]],
                 people: list[dict[str, object]], form: str, limit: int) -> tuple[float, float]:
    """(questions whose shown posts are all right, share of shown posts right)."""
    good = right = total = 0
    for person in asked:
        topic = person["topics"][0]  # type: ignore[index]
        q = form.format(last=person["last"], plain=strip_accents(str(person["last"])).lower(),
                        name=person["name"], topic=topic)
        await engine.answer(AnswerRequest(q, persist=False, max_search_results=limit))
        authors = shown(llm)
        if "{last}" in form or "{plain}" in form:  # whoever carries the surname
            wanted = {str(p["handle"]) for p in people if p["last"] == person["last"]}
        else:
            wanted = {str(person["handle"])}
        theirs = sum(a in wanted for a in authors)
        right += theirs
        total += len(authors)
        good += bool(authors) and theirs == len(authors)
    return good / max(len(asked), 1), right / max(total, 1)


def shown(llm: FakeLLM) -> list[str]:
    prompt = "\n".join(m.content for m in llm.last_messages)
    return re.findall(r"^\[\d+\] @(\S+)", prompt, re.MULTILINE)


def shown_ids(llm: FakeLLM, posts: dict[str, Post]) -> set[str]:
    prompt = "\n".join(m.content for m in llm.last_messages)
    return {pid for pid, p in posts.items() if p.text in prompt}


async def run(n_people: int, embedder: str) -> None:
    posts, people, threads = build(n_people)
    by_id = {p.id: p for p in posts}
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(home=Path(tmp), embedder=embedder, llm="fake")
        runtime = Runtime(settings)
        Ingestor(runtime.store, runtime.embedder).commit(
            "bench", Batch([Upsert(p) for p in posts], None), IngestStats())
        llm = FakeLLM()
        engine = runtime.engine
        engine.llm = llm
        surname_count: dict[str, int] = {}
        for person in people:
            surname_count[str(person["last"])] = surname_count.get(str(person["last"]), 0) + 1
        rows = []
        forms = {
            "surname": "What does {last} say about {topic}?",
            "lower, no accents": "what does {plain} think about {topic}",
            "full name": "What is {name} saying about {topic}?",
            "French": "Que pense {name} de {topic} ?",
        }
        t0 = time.perf_counter()
        for label, form in forms.items():
            by_name = label in ("full name", "French")  # the full name is never shared
            asked = [p for p in people if by_name or surname_count[str(p["last"])] == 1]
            rows.append([f"names: {label}", len(asked),
                         *await _names(engine, llm, asked, people, form, limit=8)])
        shared = [p for p in people if surname_count[str(p["last"])] > 1]
        if shared:
            rows.append(["names: shared surname, top 3", len(shared), *await _names(
                engine, llm, shared, people, forms["surname"], limit=3)])
        ok = share = 0
        for person in people:
            await engine.answer(AnswerRequest(f"who is {person['name']}?", persist=False))
            authors = shown(llm)
            ok += bool(authors) and all(a == person["handle"] for a in authors)
            share += sum(a == person["handle"] for a in authors) / max(len(authors), 1)
        rows.append(["who is <full name>", len(people), ok / len(people), share / len(people)])
        complete = found = wanted_n = 0
        for spec in threads:
            target, *context = spec.split(",")
            await engine.answer(AnswerRequest(f"Explain this post: {target}", persist=False))
            got = shown_ids(llm, by_id)
            hit = sum(c in got for c in context)
            found += hit
            wanted_n += len(context)
            complete += hit == len(context)
        rows.append(["threads: explain this post", len(threads), complete / len(threads),
                     found / wanted_n])
        secs = time.perf_counter() - t0
        runtime.close()
    print(table(f"people and threads, {len(posts):,} posts, {n_people} people, embedder "
                f"{embedder}, fake LLM (retrieval only)",
                ["questions", "n", "all shown from the right account(s)",
                 "share of shown posts right"], rows))
    print(f"{secs:.1f} s for all questions")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=40)
    ap.add_argument("--embedder", default="minilm-static")
    args = ap.parse_args()
    asyncio.run(run(args.people, args.embedder))


if __name__ == "__main__":
    main()
