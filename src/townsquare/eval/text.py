"""Text normalisation for the answer-quality scorer: folding, words, figures, names.

The scorer is written from the issue's definition of a supported sentence, on
purpose without the answer engine's own helpers: a metric that shares code
with what it measures would inherit its blind spots (so this module keeps its
own folding, stop words and tokens rather than the engine's
:mod:`townsquare.text`, and an engine bug there cannot hide from the score).
Everything here is plain
rules (English and French), deterministic and instant:

- :func:`fold`: NFKD, accents stripped, lower case, one kind of apostrophe.
- :func:`content_words`: folded words minus stop words and reporting verbs
  ("says", "selon"), lightly stemmed (:func:`stem`), figures excluded.
- :func:`figures`: numbers as canonical strings ("12 000", "12,000" and
  "12000" are all ``12000``; "3,5" is ``3.5``), plus small number words.
- :func:`names`: @handles, #hashtags, capitalised words that do not start a
  sentence or clause, and all-caps acronyms.
- :func:`sentences`: sentences and list items, each keeping the citation
  markers written right after it.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

MARKER_RE = re.compile(r"\[\s*(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\s*\]")
_WORD_RE = re.compile(r"[a-z0-9]+")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'", "ʼ": "'"})

_STOP_EN = """
a about above after again against all also am an and any are aren't as at be because been
before being below between both but by can could did do does doing don't down during each
few for from further had has have having he her here hers herself him himself his how i if
in into is isn't it it's its itself just let me more most my myself no nor not now of off on
once only or other our ours out over own same she should so some such than that the their
theirs them themselves then there these they this those through to too under until up very
was wasn't we were what when where which while who whom why will with would you your yours
yourself yet still already there's here's what's who's that's i'm you're they're we're ve ll
re d s t m amp via
""".split()
_STOP_FR = """
a au aux avec ce ces cet cette dans de des du elle elles en est et etaient etait etre eu
il ils je la le les leur leurs lui ma mais me meme mes moi mon ne nos notre nous on ont ou
par pas plus pour qu que qui sa sans se ses si son sont sur ta te tes toi ton tu un une vos
votre vous y c d j l m n s t qu ca cela ceci comme ici la toujours deja encore tout tous
toute toutes tres aussi alors donc ni car puis quand apres avant entre chez sous vers
selon ete avoir fait faire sera seront
""".split()
#: Words that frame a claim rather than make one: a sentence is not "unsupported"
#: because it says "according to" or "posts report".
_FRAMING = """
say says said saying according report reports reported reporting write writes wrote
post posts posted posting tweet tweets tweeted user users people account accounts latest
newest update updates updated earlier later recent recently new news source sources
mention mentions mentioned claim claims claimed note notes noted add adds added state
states stated announce announces announced confirm confirms confirmed
dit disent ecrit ecrivent annonce annoncent indique indiquent rapporte affirme affirment
selon message messages publication publications dernier derniere derniers dernieres
nouveau nouvelle nouvelles actualite compte comptes
meanwhile however whereas summary cependant toutefois pendant depuis resume
""".split()
STOP = frozenset(_STOP_EN + _STOP_FR)
FRAMING = frozenset(_FRAMING)

#: Small number words read as figures (not "one"/"un"/"une": articles more often than counts).
NUMBER_WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "hundred": 100, "thousand": 1000,
    "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "sept": 7, "huit": 8, "neuf": 9,
    "dix": 10, "onze": 11, "douze": 12, "vingt": 20, "trente": 30, "quarante": 40,
    "cinquante": 50, "cent": 100, "mille": 1000,
}
_NUMBER_RE = re.compile(
    r"(?<![\w.,])(\d{1,3}(?:[ \u00a0\u202f,]\d{3})+(?:[.,]\d+)?|\d+(?:[.,]\d+)?)(?!\w)"
    r"|(?<![\w.,])(\d+)(?=(?:st|nd|rd|th|e|er|k|m|h|%|am|pm)\b)"
)
_SUFFIXES = (
    "ations", "ation", "ements", "ement", "ments", "ment", "ings", "ing", "ies", "ied",
    "ees", "ee", "es", "ed", "er", "ly", "s", "x", "e",
)


def fold(text: str) -> str:
    """Lower case, accents stripped, apostrophes unified (for matching, never display)."""
    text = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


def strip_markers(text: str) -> str:
    return MARKER_RE.sub(" ", text)


_LIST_MARK_RE = re.compile(r"^\s*(?:[-*•>]+|\d{1,3}[.)])\s+", re.MULTILINE)


def strip_list_marks(text: str) -> str:
    """``text`` without list bullets, item numbers ("2.") and blockquote marks at line starts."""
    return _LIST_MARK_RE.sub("", text)


def stem(word: str) -> str:
    """Light suffix stripping, English and French: strike/strikes/striking -> strik."""
    if len(word) <= 4:
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def words(text: str) -> list[str]:
    """Folded alphanumeric words (apostrophes split: "l'usine" -> l, usine)."""
    return _WORD_RE.findall(fold(text))


def content_words(text: str) -> set[str]:
    """Stemmed words that carry a claim: no stop words, framing words or figures."""
    out: set[str] = set()
    for w in words(strip_markers(text)):
        if len(w) < 2 or w in STOP or w in FRAMING or w.isdigit() or w in NUMBER_WORDS:
            continue
        out.add(stem(w))
    return out


def _canonical(number: str) -> str | None:
    """``12 000``/``12,000``/``12000`` -> ``12000``; ``3,5``/``3.5`` -> ``3.5``; ``07`` -> ``7``."""
    raw = number.replace("\u00a0", " ").replace("\u202f", " ")
    grouped = re.fullmatch(r"(\d{1,3}(?:[ ,]\d{3})+)(?:[.,](\d+))?", raw)
    if grouped:
        raw = re.sub(r"[ ,]", "", grouped.group(1))
        if grouped.group(2):
            raw += "." + grouped.group(2)
    else:
        raw = raw.replace(",", ".")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None
    return format(value.normalize(), "f")


def figures(text: str) -> set[str]:
    """Every number in ``text`` (citation markers excluded), canonical, plus number words."""
    clean = strip_markers(text)
    found: set[str] = set()
    for m in _NUMBER_RE.finditer(clean):
        canon = _canonical(m.group(1) or m.group(2))
        if canon is not None:
            found.add(canon)
    for w in words(clean):
        if w in NUMBER_WORDS:
            found.add(str(NUMBER_WORDS[w]))
    return found


_TOKEN_RE = re.compile(r"[@#]?[^\W\d_][\w'’.\-]*", re.UNICODE)
_CLAUSE_START_RE = re.compile(r"(?:^|[:;«\"“(•*\n]|\s[-–—]\s|^\s*\d+[.)])\s*$")


def names(text: str) -> list[str]:
    """@handles, #hashtags, Capitalised words not starting a clause, and ACRONYMS."""
    clean = strip_markers(text)
    out: dict[str, None] = {}
    for m in _TOKEN_RE.finditer(clean):
        tok = m.group(0).rstrip(".'’-")
        if tok.endswith(("'s", "’s")):
            tok = tok[:-2]
        if len(tok) < 2:
            continue
        if tok[0] in "@#":
            if len(tok) > 1:
                out.setdefault(tok, None)
            continue
        body = tok.replace("'", "").replace("’", "").replace("-", "").replace(".", "")
        acronym = len(body) >= 2 and body.isupper() and body.isalpha()
        capital = tok[0].isupper()
        if not (acronym or capital):
            continue
        if fold(tok) in STOP or fold(tok) in FRAMING:
            continue
        if not acronym and _CLAUSE_START_RE.search(clean[: m.start()]):
            continue
        out.setdefault(tok, None)
    return list(out)


def find_phrase(haystack_folded: str, phrase: str) -> list[tuple[int, int]]:
    """Where ``phrase`` (folded here) occurs in ``haystack_folded``, on word boundaries.

    A phrase ending in a letter may be followed by more letters ("deal" finds
    "deals"); one ending in a digit may not ("4" does not find "40").
    """
    needle = fold(phrase).strip()
    if not needle:
        return []
    left = r"(?<![a-z0-9])" if needle[0].isalnum() else ""
    right = r"(?![0-9])" if needle[-1].isdigit() else ""
    if needle[-1].isalpha() and len(needle) <= 3:
        right = r"(?![a-z0-9])"
    return [m.span() for m in re.finditer(left + re.escape(needle) + right, haystack_folded)]


def contains_phrase(haystack_folded: str, phrase: str) -> bool:
    return bool(find_phrase(haystack_folded, phrase))


def normalize_figures(text: str) -> str:
    """``text`` folded, with every number in canonical form (for fact matching)."""
    clean = fold(strip_markers(text))

    def canon(m: re.Match[str]) -> str:
        c = _canonical(m.group(1) or m.group(2))
        return c if c is not None else m.group(0)

    return _NUMBER_RE.sub(canon, clean)


_SENTENCE_END_RE = re.compile(
    r"([.!?…]+(?:[\"’')\]]|\s*[»”])*(?:\s*\[\s*\d{1,3}(?:\s*[,;]\s*\d{1,3})*\s*\])*)(?:\s+|$)"
)
_LIST_NUMBER_RE = re.compile(r"^\d{1,3}[.)]$")
#: Quoted spans (straight, curly, French guillemets): sentences are not split inside them.
QUOTE_SPAN_RE = re.compile(r"\"[^\"\n]+\"|“[^”\n]+”|«[^»\n]+»|„[^“”\n]+[“”]")


def sentences(text: str) -> list[str]:
    """Sentences and list items; markers after a full stop stay with their sentence.

    A full stop inside a quotation does not end the sentence that quotes it
    (``X wrote: "A deal. Trains run." [1]`` is one sentence, cited).
    """
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        quoted = [(m.start(), m.end()) for m in QUOTE_SPAN_RE.finditer(line)]
        start = 0
        for m in _SENTENCE_END_RE.finditer(line):
            end = m.end(1)
            if any(a < m.start(1) and end < b for a, b in quoted):
                continue  # a stop inside a quote, before its closing mark
            if _LIST_NUMBER_RE.match(line[start:end].strip()):
                continue  # "1. First item": the number belongs to its item
            piece = line[start:end].strip()
            # "3.5", "U.S." and "e.g." never reach here: a stop needs a space after it.
            if piece:
                out.append(piece)
            start = m.end()
        rest = line[start:].strip()
        if rest:
            out.append(rest)
    return [s for s in out if re.search(r"\w", strip_markers(s))]


_AGE_RE = re.compile(
    r"(?:il y a|depuis)\s+(\d+|une?)\s*(secondes?|sec|s|minutes?|min|mn|heures?|h|jours?|j)\b"
    r"|(\d+|an?|one)\s*(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d)\s+ago\b"
)
_AGE_UNITS = {"s": 1, "se": 1, "m": 60, "mi": 60, "mn": 60, "h": 3600, "j": 86400, "d": 86400}


def ages(text: str) -> list[tuple[str, float]]:
    """Post ages a text states ("45 min ago", "il y a 2 heures"), as (phrase, seconds)."""
    out: list[tuple[str, float]] = []
    for m in _AGE_RE.finditer(fold(text)):
        count, unit = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        n = 1.0 if not count.isdigit() else float(count)
        scale = _AGE_UNITS.get(unit[:2]) or _AGE_UNITS.get(unit[0], 1)
        out.append((m.group(0), n * scale))
    return out


def without_ages(text: str) -> str:
    """``text`` (folded) with its post-age phrases removed."""
    return _AGE_RE.sub(" ", fold(text))


def cited_numbers(sentence: str) -> list[int]:
    """Citation numbers written in a sentence, in order."""
    out: list[int] = []
    for m in MARKER_RE.finditer(sentence):
        for part in re.split(r"[,;]", m.group(1)):
            n = int(part.strip())
            if n not in out:
                out.append(n)
    return out
