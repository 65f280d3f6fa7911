"""The verification gate: a sentence is shown only if the posts it cites say it.

Every surface's answer text (generated, composed, degraded, story summaries)
passes through a :class:`Gate`. The gate cuts the text into sentences as it
streams, and checks each complete sentence against the posts it cites
*before* emitting it, so the stream never shows what the final answer drops
(streamed output equals the non-streamed answer).

A sentence is **supported** by a set of posts when

- its content words (stop words and the composition's framing words aside;
  accents and case folded, lightly stemmed) appear in those posts, all of
  them for a short sentence, all but one in five for a long one;
- every figure in it appears there (``1,200`` = ``1200``, ``3,5`` = ``3.5``;
  "2 hours ago" is accepted when a cited post is that old);
- every name in it (capitalised words, ``@handles``) appears there, in the
  text or as the author;
- every quotation (``"…"``, ``“…”``, ``«…»``) appears verbatim (case, spacing
  and quotation marks aside; ``…`` separates verbatim fragments) in one cited
  post, and, when the sentence names an author of a post (``@alice`` or
  "Alice Martin"), in a post by that account.

An unsupported sentence is re-cited to the newest single post that supports
it, else dropped; a sentence with no content at all is dropped (it can only
be filler or a bare yes/no the posts never said). A sentence that repeats an
earlier one (same content words, or nearly) is cut: a looping model is cut at
its first repeat. Markers are renumbered in reader order as sentences are
emitted (``[1]`` is the first post cited), and sentence text goes through
:func:`~townsquare.answer.sanitize.clean_text`, so no URL ever leaves.

:class:`Verification` (``{"sentences", "kept", "recited", "dropped"}``) is
what the gate did; it is part of the answer's JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from townsquare.answer.citations import marker_numbers
from townsquare.answer.language import describe_age
from townsquare.answer.policy import IMAGE_REDACTED, REDACTED, neutralize_post
from townsquare.answer.prompt import PromptPost
from townsquare.answer.sanitize import clean_text
from townsquare.text import fold as fold_text
from townsquare.text import stop_words

#: Words the composition frames quotes with, and generic reporting verbs: never "content".
FRAMING = frozenset(
    """
    latest newest recent recently earlier previously before after update updated updates
    also adds add added writes wrote write posted posts post says said saying reports report
    reported according notes noted note meanwhile while account accounts people user users
    timeline says tweets tweeted tweet message messages replies replied reply answer answers
    ago minute minutes hour hours day days just now
    dernier derniere derniers dernieres recent recents plus tot auparavant ensuite ajoute ajoutent
    ecrit ecrivait ecrivent publie publiait selon message messages compte comptes rapporte note
    pendant temps instant heure heures minute minutes jour jours
    meanwhile rewind hot off fresh chimes chime piles pile spicy drama breaking retour arriere
    tout chaud rebondissement attention renchérit rajoute memoire pour record posting
    """.split()
)
_EXTRA_STOP = frozenset(
    """
    there here what which who whom whose about would could should might will shall can cannot
    very really much many more most some any every each other such only own same than too also
    yes non oui no not never
    est sont etait ete avoir etre fait faire sera seront peut peuvent cela ceci celui celle
    """.split()
)

_SUFFIXES = (
    "issements", "issement", "ements", "ement", "ations", "ation", "ments", "ment", "ings",
    "ing", "ies", "ied", "ees", "ee", "es", "ed", "er", "s", "e", "x",
)
_TOKEN = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*", re.UNICODE)
_FIGURE = re.compile(
    r"(?<![\w.,])(?:\d{1,3}(?:[ \u00a0\u202f,.]\d{3})+(?![\d])|\d+(?:[.,:]\d+)?)", re.UNICODE
)
_NUMBER_WORDS = {
    "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
    "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "twenty": "20", "hundred": "100",
    "thousand": "1000", "million": "1000000", "deux": "2", "trois": "3", "quatre": "4",
    "cinq": "5", "sept": "7", "huit": "8", "neuf": "9", "dix": "10", "onze": "11",
    "douze": "12", "vingt": "20", "cent": "100", "mille": "1000",
}
_QUOTE = re.compile(r"«([^«»]{1,1000})»|“([^“”]{1,1000})”|\"([^\"]{1,1000})\"|„([^„“]{1,1000})“")
_QUOTE_CHARS = re.compile(r"[«»“”\"„‹›]")
_HANDLE = re.compile(r"(?<![\w@])@([\w.\-]+[\w])")
_CAPITAL = re.compile(r"(?<![\w@#])[A-ZÀ-ÖØ-Þ][\w'’.-]*", re.UNICODE)
_AGE = re.compile(
    r"\b\d+\s+(?:minutes?|hours?|days?)\s+ago\b|\bil\s+y\s+a\s+\d+\s+(?:minutes?|heures?|jours?)\b",
    re.IGNORECASE,
)
#: A sentence missing more content words than this share of them is not supported.
MISSING_SHARE = 0.2
#: Content-word overlap at which a sentence repeats an earlier one.
REPEAT_JACCARD = 0.8


def fold(text: str) -> str:
    """Lower-case, accents removed, typographic apostrophes made plain."""
    return fold_text(text.replace("’", "'").replace("ʼ", "'"))


_STOP = stop_words() | {fold(w) for w in FRAMING | _EXTRA_STOP}


def stem(word: str) -> str:
    """A light, language-agnostic stem: one common English/French suffix off."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def tokens(text: str) -> list[str]:
    """Folded word tokens (apostrophes split ``l'avion`` into ``l``, ``avion``)."""
    return [t for tok in _TOKEN.findall(fold(text)) for t in re.split(r"'", tok) if t]


def content_stems(text: str) -> set[str]:
    """Stems of the words that carry meaning."""
    out: set[str] = set()
    for tok in tokens(text):
        for part in tok.split("-"):
            if len(part) >= 3 and part not in _STOP and not part.isdigit():
                out.add(stem(part))
    return out


def figures(text: str) -> set[str]:
    """Numbers in ``text``, canonical (``1 200`` / ``1,200`` -> ``1200``, ``3,5`` -> ``3.5``)."""
    out: set[str] = set()
    for m in _FIGURE.finditer(text):
        raw = m.group(0)
        if re.fullmatch(r"\d{1,3}(?:[ \u00a0\u202f,.]\d{3})+", raw):
            value = re.sub(r"[ \u00a0\u202f,.]", "", raw)
        else:
            value = raw.replace(",", ".")
        if "." in value and ":" not in value:
            value = value.rstrip("0").rstrip(".") or "0"
        out.add(value.lstrip("0") or "0")
    for tok in tokens(text):
        if tok in _NUMBER_WORDS:
            out.add(_NUMBER_WORDS[tok])
    return out


def _quote_norm(text: str) -> str:
    return " ".join(_QUOTE_CHARS.sub("", fold(text)).split())


def quotes(text: str) -> list[str]:
    """The quotations in ``text`` (the text between the marks)."""
    return [next(g for g in m.groups() if g is not None) for m in _QUOTE.finditer(text)]


def clean_post_text(text: str) -> str:
    """A post's text as the gate and composition see it: no injections, no URLs or markup."""
    out = neutralize_post(clean_text(text)).text
    out = out.replace(REDACTED, " ").replace(IMAGE_REDACTED, " ")
    return " ".join(clean_text(out).split())


@dataclass(slots=True)
class _Facts:
    """What one post can support."""

    n: int
    author: str
    stems: set[str]
    text_stems: set[str]  # from the post's text only (not its author's name)
    figures: set[str]
    words: set[str]  # every folded token, names included
    norm: str  # for verbatim quotes
    accounts: set[str]  # the author's handle and name words (folded)
    ages: set[str]


def _facts(pp: PromptPost, now: datetime | None) -> _Facts:
    post = pp.post
    raw = post.text
    clean = clean_post_text(raw)
    both = f"{raw}\n{clean}"
    handle = fold(post.author.lstrip("@"))
    accounts = {handle, *handle.split(".")}
    name_words = set(tokens(post.author_name or ""))
    accounts |= {w for w in name_words if len(w) >= 3}
    words = set(tokens(both)) | accounts | name_words | {handle}
    words |= {w for w in words for w in w.split("-")}
    text_stems = content_stems(both)
    stems = text_stems | {stem(w) for w in name_words} | {stem(handle)}
    ages: set[str] = set()
    if now is not None:
        ages = {fold(describe_age(post.created_at, now, lang)) for lang in ("en", "fr")}
    return _Facts(pp.n, handle, stems, text_stems, figures(both), words, _quote_norm(both),
                  accounts, ages)


@dataclass(slots=True)
class Verification:
    """What the gate did to an answer's sentences."""

    sentences: int = 0
    kept: int = 0
    recited: int = 0
    dropped: int = 0
    #: Why each dropped sentence went (for logs and the eval; not in the JSON).
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, int]:
        return {"sentences": self.sentences, "kept": self.kept, "recited": self.recited,
                "dropped": self.dropped}


@dataclass(slots=True)
class Verdict:
    ok: bool
    reason: str = ""


class Verifier:
    """Checks a sentence against a set of prompt posts."""

    def __init__(self, posts: Sequence[PromptPost], now: datetime | None = None) -> None:
        self.facts = {pp.n: _facts(pp, now) for pp in posts}
        self.all_accounts = {f.author: f for f in self.facts.values()}

    def check(self, sentence: str, cited: Iterable[int]) -> Verdict:
        group = [self.facts[n] for n in cited if n in self.facts]
        if not group:
            return Verdict(False, "cites no post")
        outside = _QUOTE.sub(" ", sentence)
        ages = set().union(*(f.ages for f in group))
        for m in list(_AGE.finditer(outside)):
            if fold(" ".join(m.group(0).split())) in ages:
                outside = outside.replace(m.group(0), " ")
        # Figures (outside quotes: a quote is checked verbatim as a whole).
        have_figures = set().union(*(f.figures for f in group))
        missing_fig = figures(_HANDLE.sub(" ", outside)) - have_figures
        if missing_fig:
            return Verdict(False, f"figure {sorted(missing_fig)[0]} not in the cited posts")
        # Names and handles.
        words = set().union(*(f.words for f in group))
        for handle in _HANDLE.findall(outside):
            h = fold(handle)
            if h not in words and h.split(".")[0] not in words:
                return Verdict(False, f"@{handle} not in the cited posts")
        plain = _HANDLE.sub(" ", outside)
        for m in _CAPITAL.finditer(plain):
            for part in tokens(m.group(0)):
                for p in part.split("-"):
                    if p in _STOP or len(p) < 2 or p.isdigit():
                        continue
                    if p not in words and stem(p) not in {stem(w) for w in words if w[:2] == p[:2]}:
                        return Verdict(False, f"name {m.group(0)!r} not in the cited posts")
        # Quotations: verbatim, in one cited post, by the account named (if any).
        named = self._named_accounts(outside)
        for q in quotes(sentence):
            frags = [_quote_norm(f) for f in re.split(r"…|\.\.\.|\[…\]", q)]
            frags = [f for f in frags if f]
            if not frags:
                continue
            by = [f for f in group if all(fr in f.norm for fr in frags)]
            if not by:
                return Verdict(False, "quotation not verbatim in the cited posts")
            if named and not any(f.author in named for f in by):
                return Verdict(False, "quotation attributed to the wrong account")
        # Content words.
        stems = content_stems(_HANDLE.sub(" ", outside))
        have = set().union(*(f.stems for f in group))
        missing = stems - have
        if len(missing) > int(MISSING_SHARE * len(stems)):
            return Verdict(False, f"content {sorted(missing)[:3]} not in the cited posts")
        if not quotes(sentence) and not stems & set().union(*(f.text_stems for f in group)):
            # Only who and when ("@lemonde (Le Monde) · 6 hours ago"): no claim to show.
            return Verdict(False, "no content from the posts")
        return Verdict(True)

    def _named_accounts(self, text: str) -> set[str]:
        """Authors of prompt posts the sentence names (by @handle or by name)."""
        named = {fold(h) for h in _HANDLE.findall(text)} & set(self.all_accounts)
        caps = {t for m in _CAPITAL.finditer(_HANDLE.sub(" ", text)) for t in tokens(m.group(0))}
        for author, facts in self.all_accounts.items():
            names = facts.accounts - {author}
            if caps & {w for w in names if len(w) >= 3 and w not in _STOP}:
                named.add(author)
        return named

    def best(self, sentence: str, exclude: Iterable[int] = ()) -> int | None:
        """The newest single post that supports ``sentence`` (None if none does)."""
        skip = set(exclude)
        for n in sorted(self.facts):
            if n not in skip and self.check(sentence, [n]).ok:
                return n
        return None


# --- the streaming gate ------------------------------------------------------

_END = re.compile(r"\n|[.!?…]+[\"'»”’)]*(?=\s|$)")
_ABBREV = frozenset("mr mrs ms dr st mt no vs etc jr sr m mme mlle me dr pr gen col lt sgt".split())
_BULLET = re.compile(r"^\s*(?:[-*•>]+|\d{1,2}[.)]|#{1,6})\s+")
_MARKER = re.compile(r"(?<!!)\s*\[([^\[\]\n]{1,24})\](?!\()")
#: A sentence's final punctuation; after a closing quotation mark there is none
#: (the markers go after the quotation, then a full stop).
_TERMINATOR = re.compile(r"\s*([.!?…]+)\s*$")


def _open_quote(text: str) -> bool:
    return text.count("«") > text.count("»") or text.count("“") > text.count("”") or (
        text.count('"') % 2 == 1
    )


def split_sentences(buf: str, final: bool = False) -> tuple[list[str], str]:
    """Complete sentences at the start of ``buf`` and the rest (kept for more text).

    A sentence ends at a newline, or at ``.!?…`` followed by a space, except
    inside an open quotation, after a short abbreviation ("Mr.") or when
    citation markers follow the full stop ("... closed. [2]"), which then
    belong to it.
    """
    out: list[str] = []
    start = i = 0
    while True:
        m = _END.search(buf, i)
        if m is None:
            break
        if m.group(0) == "\n":
            out.append(buf[start : m.start()])
            start = i = m.end()
            continue
        j = m.end()
        while j < len(buf) and buf[j] in " \t":
            j += 1
        if j >= len(buf) and not final:
            break
        before = re.search(r"(\w+)[.!?…]*$", buf[start : m.start() + 1])
        if m.group(0) == "." and before and (
            before.group(1).lower() in _ABBREV
            or (len(before.group(1)) == 1 and before.group(1).isupper())  # an initial: "Karim B."
        ):
            i = m.end()
            continue
        if _open_quote(buf[start : m.end()]) and len(buf) - start < 1200:
            i = m.end()
            continue
        end = m.end()
        waiting = False
        while j < len(buf) and buf[j] == "[":
            close = buf.find("]", j)
            if close == -1:
                waiting = not final
                break
            if marker_numbers(buf[j + 1 : close]) is None:
                break
            end = close + 1
            j = end
            while j < len(buf) and buf[j] in " \t":
                j += 1
        if waiting or (j >= len(buf) and end != m.end() and not final):
            break
        out.append(buf[start:end])
        start = i = end
    rest = buf[start:]
    if final and rest.strip():
        out.append(rest)
        rest = ""
    return out, rest


def parse_markers(sentence: str, valid: set[int]) -> tuple[str, list[int], int]:
    """(text without markers, valid prompt numbers cited in order, invalid ones dropped)."""
    cited: list[int] = []
    bad = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal bad
        nums = marker_numbers(m.group(1))
        if nums is None:
            return m.group(0)
        for n in nums:
            if n in valid:
                if n not in cited:
                    cited.append(n)
            else:
                bad += 1
        return ""

    return _MARKER.sub(repl, sentence), cited, bad


class Gate:
    """Model (or composed) text in, verified reader text out, sentence by sentence."""

    def __init__(self, posts: Sequence[PromptPost], now: datetime | None = None) -> None:
        self.verifier = Verifier(posts, now)
        self.valid = {p.n for p in posts}
        #: prompt number -> reader number, in order of first citation.
        self.mapping: dict[int, int] = {}
        self.stats = Verification()
        self._buf = ""
        self._seen: list[set[str]] = []
        self._seen_text: set[str] = set()
        self._out: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self._out)

    def feed(self, delta: str) -> str:
        """Verified text that can be shown now (empty while a sentence is incomplete)."""
        self._buf += delta
        sentences, self._buf = split_sentences(self._buf)
        return self._emit(sentences)

    def finish(self) -> str:
        sentences, self._buf = split_sentences(self._buf, final=True)
        return self._emit(sentences)

    def _emit(self, sentences: list[str]) -> str:
        shown: list[str] = []
        for raw in sentences:
            piece = self._sentence(raw)
            if piece:
                sep = " " if self._out or shown else ""
                shown.append(sep + piece)
        text = "".join(shown)
        if text:
            self._out.append(text)
        return text

    def _sentence(self, raw: str) -> str:
        body = _BULLET.sub("", raw).replace("**", "").replace("__", "")
        body, cited, _bad = parse_markers(body, self.valid)
        body = clean_text(" ".join(body.split()))
        term_m = _TERMINATOR.search(body)
        term = term_m.group(1) if term_m else ""
        if term_m:
            body = body[: term_m.start()].rstrip()
        body = body.rstrip(" ,;:-–—")
        if not re.search(r"[^\W_]", body):
            if re.search(r"[^\W_]", _BULLET.sub("", raw)):
                self.stats.sentences += 1
                self.stats.dropped += 1
                self.stats.reasons.append("nothing left once links and markup were removed")
            return ""
        self.stats.sentences += 1
        signature = content_stems(body)
        key = " ".join(tokens(body))
        if key in self._seen_text or any(
            (signature and signature <= s) or _jaccard(signature, s) >= REPEAT_JACCARD
            for s in self._seen
        ):
            self.stats.dropped += 1
            self.stats.reasons.append("repeats an earlier sentence")
            return ""
        verdict = self.verifier.check(body, cited) if cited else Verdict(False, "uncited")
        if not verdict.ok:
            n = self.verifier.best(body, exclude=())
            if n is None:
                self.stats.dropped += 1
                self.stats.reasons.append(verdict.reason)
                return ""
            cited = [n]
            self.stats.recited += 1
        else:
            self.stats.kept += 1
        self._seen.append(signature)
        self._seen_text.add(key)
        markers = "".join(f"[{self._number(n)}]" for n in cited)
        return f"{body} {markers}{term or '.'}"

    def _number(self, n: int) -> int:
        if n not in self.mapping:
            self.mapping[n] = len(self.mapping) + 1
        return self.mapping[n]


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def verification_dict(v: Verification | None) -> dict[str, Any] | None:
    return v.to_dict() if v is not None else None
