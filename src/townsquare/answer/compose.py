"""Grounded composition: an answer written from the posts themselves.

A 135M-parameter model cannot be trusted to write prose about the news, and
no model can when the gate leaves nothing. :func:`compose` writes a short,
wire-style summary that says only what the posts say, because what it says
*is* the posts: short verbatim quotes, each attributed to its author and
cited, framed by a few fixed words in the asker's language::

    The latest, from @rail_union (Rail Union) 12 minutes ago: “Deal reached, the
    strike is over” [1]. Earlier, @paris_news wrote 5 hours ago: “The walkout
    continues tomorrow” [2]. @alice adds: “Trains should run normally on Monday” [3].

- **Newest first**: the lead is the newest relevant post, so an update or a
  reversal ("deal reached" after "strike continues") leads, and the older
  post it changes follows as "Earlier…", which is what changed.
- **Who says what**: each sentence names its author (handle and display
  name) and quotes them verbatim; the quote is the post sentence that best
  matches the question, cut (with "…") at :data:`MAX_QUOTE_WORDS` words.
- **No repeats**: near-duplicate posts (reposts, copies) are merged into one
  sentence citing all of them.
- **Nothing fetchable, nothing injected**: quotes come from the post text
  with instruction-like sentences, markup and URLs removed.
- **Personas** change the framing words (``fun`` is cheekier), never what is
  quoted or cited.

The result is raw text with prompt-numbered markers; the engine feeds it
through the same :class:`~townsquare.answer.verify.Gate` as generated text,
which renumbers the markers and checks every sentence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from townsquare.answer.language import describe_age
from townsquare.answer.prompt import PromptPost
from townsquare.answer.sanitize import runs_between_urls
from townsquare.answer.verify import clean_post_text, content_stems, split_sentences

MAX_QUOTE_WORDS = 28
MAX_SENTENCES = 4
#: Copies of one post cited at most (the newest): more markers add nothing to read.
MAX_MARKERS = 3
#: Content-word overlap at which two posts say the same thing (merged).
SAME_POST = 0.6

#: Framing per (language, style): lead (the newest post shown), top (the lead
#: when a newer, less relevant post is shown too: no "latest" claim), changed
#: (an older post on the same topic), other voices (cycled). ``{who}``,
#: ``{age}``, ``{q}`` (the quote).
FRAMES: dict[tuple[str, str], dict[str, list[str]]] = {
    ("en", "regular"): {
        "lead": ["The latest, from {who} {age}: {q}"],
        "top": ["{who} wrote {age}: {q}"],
        "changed": ["Earlier, {who} wrote {age}: {q}"],
        "other": ["{who} adds: {q}", "{who} writes: {q}", "{who} posted {age}: {q}"],
    },
    ("en", "fun"): {
        "lead": ["Hot off the timeline, {who} {age}: {q}"],
        "top": ["{who} posted {age}: {q}"],
        "changed": ["Rewind to {age}: {who} was posting {q}"],
        "other": ["Meanwhile {who} chimes in: {q}", "{who}, for the record: {q}",
                  "And {who} piles on: {q}"],
    },
    ("fr", "regular"): {
        "lead": ["Le plus récent, de {who} {age} : {q}"],
        "top": ["{who} a écrit {age} : {q}"],
        "changed": ["Avant, {who} a écrit {age} : {q}"],
        "other": ["{who} écrit : {q}", "{who} rapporte : {q}", "{who} a écrit {age} : {q}"],
    },
    ("fr", "fun"): {
        "lead": ["Tout chaud, {who} {age} : {q}"],
        "top": ["{who} écrivait {age} : {q}"],
        "changed": ["Retour en arrière, {age} : {who} écrivait {q}"],
        "other": ["Pendant ce temps, {who} renchérit : {q}", "{who}, pour mémoire : {q}",
                  "Et {who} en rajoute : {q}"],
    },
}


@dataclass(slots=True)
class _Group:
    """One thing said: a post and its near-duplicates (newest first)."""

    posts: list[PromptPost]
    stems: set[str]
    quote: str
    relevance: float
    numbers: list[int] = field(default_factory=list)


def _quote_marks(text: str, lang: str) -> str:
    inner = re.sub(r"[«»“”\"„]", "", text).strip()
    return f"« {inner} »" if lang == "fr" else f"“{inner}”"


def best_quote(text: str, question_stems: set[str]) -> tuple[str, float]:
    """The post sentence that best answers the question, verbatim, and its overlap.

    Sentences come from the runs of text between URLs, and a quote never spans
    two runs: the URL between them is not shown, so joining them would put
    words side by side that the post does not.
    """
    sentences: list[str] = []
    run_of: list[int] = []
    for r, run in enumerate(runs_between_urls(text)):
        found, _ = split_sentences(clean_post_text(run), final=True)
        sentences += [x.strip() for x in found]
        run_of += [r] * len(found)
    best, best_score, best_i = "", -1.0, -1
    for i, s in enumerate(sentences):
        words = s.split()
        if not re.search(r"[^\W\d_]{2,}", s) or all(w[:1] in "@#" for w in words):
            continue
        overlap = len(content_stems(s) & question_stems)
        score = overlap - 0.01 * i  # earlier sentences win ties: posts lead with the news
        if score > best_score:
            best, best_score, best_i = s, score, i
    # A short post is quoted whole (its next sentences often hold the figure).
    for j in range(best_i + 1, len(sentences)) if best_i >= 0 else ():
        nxt = sentences[j]
        if (run_of[j] != run_of[best_i] or not nxt
                or len(best.split()) + len(nxt.split()) > MAX_QUOTE_WORDS):
            break
        best = f"{best} {nxt}"
    best = re.sub(r"[«»“”\"„]", "", best).strip()
    # Addressing around a post's words is not what it says: "@united AND my luggage is
    # lost @bob" is quoted "AND my luggage is lost" (still verbatim; hashtags stay).
    best = re.sub(r"^(?:@[\w.\-]+[\s,:;-]*)+", "", best)
    best = re.sub(r"(?:[\s,;:-]*@[\w.\-]+)+[\s.!?]*$", "", best).strip()
    words = best.split()
    if len(words) > MAX_QUOTE_WORDS:
        best = " ".join(words[:MAX_QUOTE_WORDS]).rstrip(",;:") + "…"
    best = best.rstrip(" .!?;:,")
    return best, max(0.0, best_score)


def _who(pp: PromptPost) -> str:
    handle = "@" + pp.post.author.lstrip("@")
    name = " ".join((pp.post.author_name or "").split())
    name = re.sub(r"[«»“”\"„\[\]()<>]", "", name)[:60].strip()
    return f"{handle} ({name})" if name and name.lower() != pp.post.author.lower() else handle


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _author_stems(pp: PromptPost) -> set[str]:
    return content_stems(f"{pp.post.author} {pp.post.author_name or ''}".replace("_", " "))


def _groups(posts: Sequence[PromptPost], question_stems: set[str]) -> list[_Group]:
    """Posts merged with their near-duplicates, newest first, scored for relevance.

    Relevance weighs each question word by how rare it is among these posts (a
    word every retrieved post shares, the storm's name, says little; "power"
    in a question about power cuts says a lot), counting the author's name too
    ("what does Sophie Renard say").
    """
    texts = {pp.n: content_stems(clean_post_text(pp.post.text)) for pp in posts}
    seen = {pp.n: texts[pp.n] | _author_stems(pp) for pp in posts}
    df = {q: sum(1 for st in seen.values() if q in st) for q in question_stems}
    weight = {q: math.log(1 + len(posts) / df[q]) for q in question_stems if df[q]}
    groups: list[_Group] = []
    for pp in sorted(posts, key=lambda p: p.n):  # newest first
        quote, _overlap = best_quote(pp.post.text, question_stems)
        if not quote:
            continue
        relevance = sum(weight.get(q, 0.0) for q in seen[pp.n] & question_stems)
        stems = texts[pp.n]
        for g in groups:
            if _jaccard(stems, g.stems) >= SAME_POST:
                g.posts.append(pp)
                g.numbers.append(pp.n)
                g.relevance = max(g.relevance, relevance)
                break
        else:
            groups.append(_Group([pp], stems, quote, relevance, [pp.n]))
    relevant = [g for g in groups if g.relevance > 0]
    return relevant if relevant else groups


def _lead(groups: list[_Group]) -> _Group:
    """The newest of the posts that answer the question best (not merely mention it)."""
    top = max(g.relevance for g in groups)
    strong = [g for g in groups if g.relevance >= 0.75 * top] or groups
    return min(strong, key=lambda g: g.numbers[0])


def compose(
    question: str,
    posts: Sequence[PromptPost],
    now: datetime,
    lang: str = "en",
    style: str = "regular",
    max_sentences: int = MAX_SENTENCES,
) -> str:
    """A short cited summary of ``posts`` (prompt-numbered markers), or "" if none has text."""
    style = style if style in ("regular", "fun") else "regular"
    frames = FRAMES.get((lang, style)) or FRAMES[("en", style)]
    qstems = content_stems(question)
    groups = _groups(posts, qstems)
    if not groups:
        return ""
    lead = _lead(groups)
    rest = [g for g in groups if g is not lead]
    # What changed: the nearest older post on the lead's topic. Prompt numbers run
    # newest first, so "older" is a larger first number: "Earlier" is never said of
    # a post newer than the lead.
    changed = None
    best_shared = 0
    for g in rest:
        if g.numbers[0] < lead.numbers[0]:
            continue
        shared = len(g.stems & lead.stems)
        if shared > best_shared:
            changed, best_shared = g, shared
    ordered: list[tuple[str, _Group]] = [("lead", lead)]
    if changed is not None:
        ordered.append(("changed", changed))
    others = [g for g in rest if g is not changed]
    others.sort(key=lambda g: (-g.relevance, g.numbers[0]))
    ordered += [("other", g) for g in others]
    ordered = ordered[:max_sentences]
    # "The latest" is a claim about time: only when no post shown is newer.
    if any(g.numbers[0] < lead.numbers[0] for _kind, g in ordered[1:]):
        ordered[0] = ("top", lead)
    out: list[str] = []
    other_i = 0
    for kind, g in ordered:
        pp = g.posts[0]
        options = frames[kind]
        template = options[other_i % len(options)] if kind == "other" else options[0]
        if kind == "other":
            other_i += 1
        sentence = template.format(
            who=_who(pp), age=describe_age(pp.post.created_at, now, lang),
            q=_quote_marks(g.quote, lang),
        )
        sentence = sentence[0].upper() + sentence[1:]
        markers = "".join(f"[{n}]" for n in g.numbers[:MAX_MARKERS])
        out.append(f"{sentence} {markers}.")
    return "\n".join(out)
