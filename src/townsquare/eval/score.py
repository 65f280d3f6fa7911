"""The deterministic answer-quality scorer (issue 11's columns), no model from a hub.

Input is an answer in the public JSON shape (``Answer.to_dict()``, i.e.
``townsquare ask --json``) and what the question set expects
(:class:`Expectation`); output is an :class:`AnswerScore`. Definitions:

- **Supported sentence.** A sentence (or list item) is supported only when it
  cites at least one post (``[n]``) and those posts together contain
  (1) at least :data:`SUPPORT_THRESHOLD` of its content words (folded, stop
  and framing words removed, lightly stemmed: :mod:`townsquare.eval.text`),
  (2) every figure in it and (3) every name in it (@handles, #tags,
  capitalised words not starting a clause, acronyms; a name may also be the
  cited post's author or display name). A stated post age ("45 min ago") is
  checked against the cited posts' times instead. A quotation found verbatim
  in a cited post is reported speech, scored under quote fidelity: these
  checks read the sentence's own words around it (a clock time such as
  "depuis 13h" inside a faithful quote is the post's, not a claimed age). A
  sentence without a citation is
  unsupported unless it is a fixed text (:data:`FIXED_TEXTS`: no results,
  declined, search-only); a declined answer is all fixed text. Fixed
  sentences are counted apart and left out of the share.
- **Quote fidelity.** Text of two words or more in quotation marks ("…",
  “…”, «…», „…“) must appear verbatim (case, spacing and apostrophe styles
  aside; "…" may elide) in a post the sentence cites (any cited post when the
  sentence cites none): else it is *altered*. When the sentence names someone
  outside the quote, one of them must be the author of a post holding the
  quote, or be named in it (a post reporting what someone said): else it is
  *misattributed*.
- **Fact recall.** Each gold fact is a list of alternatives (say a figure, or
  the same word in English and French); it is found when one alternative
  occurs in the answer (folded, figures in canonical form, on word bounds).
- **Forbidden claims.** A forbidden phrase counts when the answer states it in
  its own words (a faithful, attributed quotation of a cited post reports what
  someone said and is left out; an altered one is not)
  without a negation shortly before it in the same clause ("not", "no",
  "ne … pas", "aucun", "jamais"...) or a denial after it ("false",
  "infondé"): "no post calls it a hoax" does not assert "hoax"; "it was a
  hoax, but it wasn't real" does.
- **Latest.** On a "latest" question the first post the answer cites must be
  one of the newest relevant posts the set names.
- **Language.** The answer's text (markers, quotes, links, handles removed)
  is identified with py3langid (:mod:`townsquare.eval.lang`) and must be the
  question's language.
- **Repeated sentences.** A sentence of three words or more equal to an
  earlier one after folding, or sharing 90 % of its content words with one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from townsquare.eval import text as tx
from townsquare.eval.lang import detect_language
from townsquare.timeutil import parse_time

#: Share of a sentence's content words its cited posts must contain.
SUPPORT_THRESHOLD = 0.8
#: Fixed texts an answer may contain without a citation (English and French), folded.
FIXED_TEXTS = (
    r"^nothing about that", r"^no (recent |matching |relevant )?(posts?|results?)",
    r"not something i'?ll help", r"^search-only", r"^most relevant posts",
    r"language model is unavailable", r"model returned no answer", r"^i looked everywhere",
    r"timeline is suspiciously quiet", r"^nothing to report",
    r"(could ?n[o']t|can ?n[o']t|did ?n[o']t) find (any |anything|relevant |recent )",
    r"found no (posts?|results?|messages?)",
    r"^(je n'ai )?rien (trouve|sur|a ce sujet|de neuf)", r"je n'ai (rien )?trouve",
    r"aucun(e)? (post|message|publication|resultat)",
    r"^je ne (peux|vais) pas", r"^ce n'est pas quelque chose", r"^reponse de recherche seule",
    r"^(les )?(posts?|messages?|publications?) les plus pertinent",
)
_FIXED_RE = re.compile("|".join(FIXED_TEXTS))
_NEGATION_RE = re.compile(
    r"(?<![a-z])(no|not|never|none|nothing|nobody|without|isn't|wasn't|aren't|weren't|"
    r"doesn't|didn't|don't|cannot|can't|deny|denies|denied|false|unfounded|unconfirmed|"
    r"ne|n'|pas|aucun|aucune|jamais|rien|sans|personne|dementi|dementent|faux|infonde)(?![a-z])"
)
#: Words after a phrase that deny it ("hoax claims are false", "rumeur infondée").
_DENIAL_RE = re.compile(
    r"(?<![a-z])(false|unfounded|untrue|debunked|denied|baseless|faux|fausse|infondee?s?|"
    r"dementie?s?)(?![a-z])"
)
#: A clause ends at punctuation or a "but"/"mais": negation does not cross it.
_CLAUSE_BREAK_RE = re.compile(r"[,;:.!?()]|(?<![a-z])(?:but|mais|however|cependant)(?![a-z])")
#: How many words before a phrase a negation may stand ("no post says the storm was a hoax").
NEGATION_WINDOW = 8
_QUOTE_RES = (
    re.compile(r"\"([^\"\n]+)\""),
    re.compile(r"“([^”\n]+)”"),
    re.compile(r"«\s*([^»\n]+?)\s*»"),
    re.compile(r"„([^“”\n]+)[“”]"),
)
_URL_RE = re.compile(r"https?://\S+")
_HANDLE_RE = re.compile(r"[@#][\w.\-]+")


@dataclass(slots=True)
class Expectation:
    """What a question's answer must (and must not) contain."""

    #: Each fact: alternatives, any one of which counts ("deal", "accord").
    gold: list[list[str]] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    #: ISO 639-1 code of the question's language; None: not checked.
    lang: str | None = None
    #: Ids of the newest relevant posts on a "latest" question (empty: not one).
    latest: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CitedPost:
    id: str
    author: str
    text: str
    author_name: str = ""
    #: Seconds between the post and the answer's ``as_of`` (None: unknown).
    age_s: float | None = None

    @property
    def folded(self) -> str:
        return " ".join((tx.fold(self.text), tx.fold(self.author), tx.fold(self.author_name)))


@dataclass(slots=True)
class SentenceScore:
    text: str
    cited: list[int]
    supported: bool
    fixed: bool = False
    #: Why it failed: "no citation", "words 2/5", "figure 14", "name Dupont".
    reasons: list[str] = field(default_factory=list)


@dataclass(slots=True)
class QuoteScore:
    text: str
    altered: bool
    misattributed: bool
    attributed_to: list[str] = field(default_factory=list)


@dataclass(slots=True)
class AnswerScore:
    sentences: list[SentenceScore] = field(default_factory=list)
    quotes: list[QuoteScore] = field(default_factory=list)
    facts_total: int = 0
    facts_found: int = 0
    missing_facts: list[str] = field(default_factory=list)
    forbidden_asserted: list[str] = field(default_factory=list)
    #: None when the question is not a "latest" one.
    latest_ok: bool | None = None
    lang_expected: str | None = None
    lang_detected: str | None = None
    repeated: int = 0
    ttft_s: float | None = None
    total_s: float | None = None

    @property
    def scored(self) -> int:
        return sum(1 for s in self.sentences if not s.fixed)

    @property
    def supported(self) -> int:
        return sum(1 for s in self.sentences if not s.fixed and s.supported)

    @property
    def altered(self) -> int:
        return sum(1 for q in self.quotes if q.altered)

    @property
    def misattributed(self) -> int:
        return sum(1 for q in self.quotes if q.misattributed)

    @property
    def lang_ok(self) -> bool | None:
        if self.lang_expected is None:
            return None
        return self.lang_detected == self.lang_expected

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(scored_sentences=self.scored, supported_sentences=self.supported,
                   quotes_altered=self.altered, quotes_misattributed=self.misattributed,
                   lang_ok=self.lang_ok)
        return out


def cited_posts(answer: Mapping[str, Any], names: Mapping[str, str]) -> dict[int, CitedPost]:
    """The answer's citations by number (``names``: post id -> author display name)."""
    out: dict[int, CitedPost] = {}
    as_of = _time(answer.get("as_of"))
    for c in answer.get("citations") or []:
        pid = str(c.get("id", ""))
        created = _time(c.get("created_at"))
        age = (as_of - created).total_seconds() if as_of and created else None
        out[int(c["n"])] = CitedPost(pid, str(c.get("author", "")), str(c.get("text", "")),
                                     names.get(pid, "") or str(c.get("author_name") or ""), age)
    return out


def _time(value: Any) -> datetime | None:
    try:
        return parse_time(str(value)) if value else None
    except ValueError:
        return None


def score_answer(
    answer: Mapping[str, Any],
    expect: Expectation,
    names: Mapping[str, str] | None = None,
    ttft_s: float | None = None,
    total_s: float | None = None,
) -> AnswerScore:
    """Score one answer (``Answer.to_dict()`` shape) against what its question expects."""
    text = str(answer.get("answer") or "")
    posts = cited_posts(answer, names or {})
    declined = bool(answer.get("declined"))
    score = AnswerScore(ttft_s=ttft_s, total_s=total_s, lang_expected=expect.lang)
    cited_any = list(posts.values())
    own_text: list[str] = []
    for sentence in tx.sentences(text):
        numbers = [n for n in tx.cited_numbers(sentence) if n in posts]
        sources = [posts[n] for n in numbers]
        own = own_words(sentence, sources)
        score.sentences.append(_sentence(sentence, own, numbers, sources, declined))
        for quote in quotes(sentence):
            score.quotes.append(_quote(sentence, quote, sources or cited_any))
        own_text.append(own)
    score.repeated = repeated_sentences([s.text for s in score.sentences])
    haystack = tx.normalize_figures(tx.strip_list_marks(text))
    for fact in expect.gold:
        score.facts_total += 1
        if any(tx.contains_phrase(haystack, tx.normalize_figures(alt)) for alt in fact):
            score.facts_found += 1
        else:
            score.missing_facts.append(" / ".join(fact))
    score.forbidden_asserted = asserted(" ".join(own_text), expect.forbidden)
    if expect.latest:
        score.latest_ok = _first_cited_is(text, posts, expect.latest)
    if expect.lang:
        score.lang_detected = detect_language(language_text(text))
    return score


def is_fixed(sentence: str) -> bool:
    return _FIXED_RE.search(tx.fold(tx.strip_markers(sentence)).strip()) is not None


def own_words(sentence: str, sources: Sequence[CitedPost]) -> str:
    """``sentence`` with each quotation that is verbatim in a cited post blanked out.

    Such a quotation is reported speech, scored by quote fidelity; what is left
    (the frame: who said it, when, and any claim of the answer's own) is what
    the support and forbidden-claim checks read. An altered quotation stays in.
    """
    if not sources:
        return sentence
    out = sentence
    for rx in _QUOTE_RES:
        def blank(m: re.Match[str]) -> str:
            inner = m.group(1).strip()
            if len(tx.words(inner)) < 2:
                return m.group(0)
            return " " if not _quote(sentence, inner, sources).altered else m.group(0)
        out = rx.sub(blank, out)
    return out


def _sentence(
    sentence: str, own: str, numbers: list[int], sources: Sequence[CitedPost], declined: bool
) -> SentenceScore:
    if declined or (not numbers and is_fixed(sentence)):
        return SentenceScore(sentence, numbers, supported=True, fixed=True)
    if not sources:
        return SentenceScore(sentence, numbers, supported=False, reasons=["no citation"])
    reasons = support_failures(own, sources)
    return SentenceScore(sentence, numbers, supported=not reasons, reasons=reasons)


def support_failures(sentence: str, sources: Sequence[CitedPost]) -> list[str]:
    """Why ``sentence`` is not supported by ``sources`` (empty: it is).

    A post's age ("45 min ago", "il y a 2 h") is checked against the cited
    posts' times (within half the actual age, two minutes at least) rather
    than against their text, then left out of the word and figure checks.
    """
    reasons: list[str] = []
    for phrase, stated in tx.ages(sentence):
        known = [p.age_s for p in sources if p.age_s is not None]
        if known and not any(abs(stated - a) <= max(0.5 * a, 120.0) for a in known):
            reasons.append(f"age '{phrase}'")
    claim = tx.without_ages(tx.strip_list_marks(sentence))
    words = tx.content_words(claim)
    post_words: set[str] = set()
    post_figures: set[str] = set()
    for p in sources:
        post_words |= tx.content_words(f"{p.text} {p.author} {p.author_name}")
        post_figures |= tx.figures(p.text)
    if words:
        shared = len(words & post_words)
        if shared < SUPPORT_THRESHOLD * len(words):
            missing = sorted(words - post_words)
            reasons.append(f"words {shared}/{len(words)} (missing: {', '.join(missing[:6])})")
    for figure in sorted(tx.figures(claim) - post_figures):
        reasons.append(f"figure {figure}")
    folded = " ".join(p.folded for p in sources)
    for name in tx.names(sentence):
        if not tx.contains_phrase(folded, name.lstrip("@#")):
            reasons.append(f"name {name}")
    return reasons


def quotes(sentence: str) -> list[str]:
    """Quoted spans of two words or more (shorter ones are scare quotes, not quotes)."""
    found: list[str] = []
    for rx in _QUOTE_RES:
        for m in rx.finditer(sentence):
            inner = m.group(1).strip()
            if len(tx.words(inner)) >= 2:
                found.append(inner)
    return found


_QUOTE_CHARS = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-",
                              "\u00a0": " ", "\u202f": " "})


def _quote_norm(text: str) -> str:
    text = text.translate(_QUOTE_CHARS)
    return " ".join(text.split()).lower()


def _quote(sentence: str, quote: str, sources: Sequence[CitedPost]) -> QuoteScore:
    # A citation marker the writer put inside the quotation marks is not quoted text.
    bare = tx.strip_markers(quote)
    fragments = [f.strip(" .,;:!?-'\"") for f in re.split(r"\.\.\.|…|\[\.\.\.\]", bare)]
    fragments = [_quote_norm(f) for f in fragments if len(tx.words(f)) >= 1]
    holders = [p for p in sources
               if fragments and all(f in _quote_norm(p.text) for f in fragments)]
    outside = sentence
    for rx in _QUOTE_RES:
        outside = rx.sub(" ", outside)
    who = tx.names(outside)
    if not holders:
        return QuoteScore(quote, altered=True, misattributed=False, attributed_to=who)
    misattributed = bool(who) and not any(
        tx.contains_phrase(p.folded, n.lstrip("@#")) for p in holders for n in who
    )
    return QuoteScore(quote, altered=False, misattributed=misattributed, attributed_to=who)


def repeated_sentences(sentences: Sequence[str]) -> int:
    """Sentences that repeat an earlier one (same words, or 90 % of its content words)."""
    seen: list[tuple[str, set[str]]] = []
    count = 0
    for s in sentences:
        norm = " ".join(tx.words(tx.strip_markers(s)))
        content = tx.content_words(s)
        if len(norm.split()) >= 3:
            for prev, prev_content in seen:
                if norm == prev or (
                    len(content) >= 4 and len(content & prev_content)
                    >= 0.9 * max(len(content), len(prev_content))
                ):
                    count += 1
                    break
        seen.append((norm, content))
    return count


def asserted(text: str, forbidden: Sequence[str]) -> list[str]:
    """Forbidden phrases ``text`` states without negating or denying them."""
    out: list[str] = []
    folded_sentences = [tx.normalize_figures(s) for s in tx.sentences(text)]
    for phrase in forbidden:
        needle = tx.normalize_figures(phrase)
        if any(not _negated(folded, start, end)
               for folded in folded_sentences
               for start, end in tx.find_phrase(folded, needle)):
            out.append(phrase)
    return out


def _negated(folded: str, start: int, end: int) -> bool:
    """Whether the phrase at ``folded[start:end]`` is negated in its own clause.

    A negation counts up to :data:`NEGATION_WINDOW` words before the phrase
    ("no post says the storm was a hoax", "rien n'indique un canular"), a
    denial word after it ("hoax claims are false"); neither across a clause
    break ("it was a hoax, but not..." still asserts it).
    """
    before = _CLAUSE_BREAK_RE.split(folded[:start])[-1]
    window = " ".join(before.split()[-NEGATION_WINDOW:])
    after = _CLAUSE_BREAK_RE.split(folded[end:])[0]
    return bool(_NEGATION_RE.search(window) or _DENIAL_RE.search(after))


def _first_cited_is(text: str, posts: Mapping[int, CitedPost], ids: Sequence[str]) -> bool:
    for n in tx.cited_numbers(text):
        if n in posts:
            pid = posts[n].id
            return any(pid == want or pid.endswith(":" + want) for want in ids)
    return False


def language_text(text: str) -> str:
    """What language detection should read: the answer's own words, not what it quotes."""
    bare = tx.strip_markers(_URL_RE.sub(" ", text))
    own = bare
    for rx in _QUOTE_RES:
        own = rx.sub(" ", own)
    own = _HANDLE_RE.sub(" ", own)
    return own if len(re.findall(r"\w", own)) >= 20 else _HANDLE_RE.sub(" ", bare)
