"""What can trend in a post: hashtags, terms, two-word phrases and named entities.

One pass of one regular expression over the text yields every feature, keyed
by kind so that the same word as a hashtag, a term or part of a name is
counted separately:

========  ==========================  ============================================
kind      key                         from
========  ==========================  ============================================
hashtag   ``#destinationdragons``     ``#DestinationDragons``
term      ``t:greve``                 a word that is not a stop word or a number
phrase    ``p:cancelled flightled``   two adjacent terms in one clause
entity    ``e:imagine dragons``       a run of Capitalized words not opening a
                                      sentence; ``e:@united`` (mentions);
                                      ``e:$aapl`` (cashtags)
========  ==========================  ============================================

Keys are case- and diacritic-folded (``Grève`` and ``greve`` are one
feature) while each feature keeps a display form as it was typed. URLs are
dropped. Entity detection is a cheap heuristic and knows it: a post written
in capitals or in Title Case has no entities rather than wrong ones.

Extraction runs once per ingested post, so it caches per distinct word and
avoids per-character Python work; see ``benchmarks/bench_trends.py``.
"""

from __future__ import annotations

import html
import re
from itertools import islice
from typing import Final

from townsquare.text import fold, stop_words

HASHTAG: Final = "hashtag"
TERM: Final = "term"
PHRASE: Final = "phrase"
ENTITY: Final = "entity"
KINDS: Final = (HASHTAG, TERM, PHRASE, ENTITY)

# Words come first: they are most tokens, and Python's engine tries the
# alternatives in order at every position. ``\B`` before ``@``/``#``/``$``
# means "not glued to a word" (``C#``, ``user@host`` and ``US$5`` are not tags).
_TOKEN_RE = re.compile(
    r"(\w+)"  # word
    r"|\B(@[\w.\-]+(?:@[\w\-]+(?:\.[\w\-]+)+)?)"  # mention (Mastodon: user@host)
    r"|\B(#\w+)"  # hashtag
    r"|([.!?…\n]+)"  # sentence end
    r"|([,;:()\[\]{}\"“”«»|/–—]+|\s-\s)"  # clause break
    r"|\B(\$[A-Za-z]{1,6}(?:\.[A-Za-z]{1,2})?)\b",  # cashtag
    re.UNICODE,
)
_URL_RE = re.compile(r"https?://\S+|www\.\S+")

#: Longest run of capitalized words taken as one entity; longer runs are
#: headlines or shouting, not names.
_MAX_ENTITY_WORDS = 4

_WordInfo = tuple[str, bool, bool, str, str, str, str]

#: English and French function words: removed before anything is counted, so they
#: can never trend whatever their volume; words merely frequent in one stream (an
#: airline's name in airline traffic) are handled by each feature's own baseline.
STOP_WORDS = stop_words()
#: Lower-case words allowed *inside* a run of capitalized words, so that
#: "Bank of America" and "Charles de Gaulle" stay one entity.
ENTITY_CONNECTORS: frozenset[str] = frozenset(
    "of the de du des la le van von der del da di".split()
)


def kind_of(key: str) -> str:
    """The kind of a feature key (``#x`` hashtag, ``t:`` term, ``p:`` phrase, ``e:`` entity)."""
    if key.startswith("#"):
        return HASHTAG
    prefix = key[:2]
    if prefix == "t:":
        return TERM
    if prefix == "p:":
        return PHRASE
    if prefix == "e:":
        return ENTITY
    raise ValueError(f"not a feature key: {key!r} (expected #tag, t:, p: or e: prefix)")


def words_of(key: str) -> frozenset[str]:
    """The folded words a feature is made of, to tell when one trend restates another."""
    body = key[1:] if key.startswith("#") else key[2:]
    return frozenset(body.lstrip("@$").split())


class FeatureExtractor:
    """Turns post text into ``{feature key: display form}``, first occurrence first.

    ``max_features`` bounds the work one long post (an RSS article) can cost;
    ``max_chars`` bounds the text looked at. The per-word cache is cleared
    when it reaches ``cache_size`` so memory stays bounded on open vocabularies.
    """

    def __init__(
        self, max_features: int = 64, max_chars: int = 2000, cache_size: int = 200_000
    ) -> None:
        self.max_features = max_features
        self.max_chars = max_chars
        self.cache_size = cache_size
        # word as typed -> (folded, capitalized, stop word, term key or "",
        # phrase key prefix, display, display + " ")
        self._words: dict[str, _WordInfo] = {}

    def _word(self, word: str) -> _WordInfo:
        if len(self._words) >= self.cache_size:
            self._words.clear()
        folded = fold(word)
        stop = folded in STOP_WORDS
        term = not stop and len(folded) > 1 and not folded.isdigit()
        disp = word.lower()
        info = (
            folded,
            word[0].isupper(),
            stop,
            "t:" + folded if term else "",
            "p:" + folded + " ",
            disp,
            disp + " ",
        )
        self._words[word] = info
        return info

    def extract(self, text: str) -> dict[str, str]:
        """Features of one text; see the module docstring for the key forms."""
        text = text[: self.max_chars]
        if "&" in text:
            text = html.unescape(text)
        if "http" in text or "www." in text:
            text = _URL_RE.sub(" , ", text)  # a URL also ends a phrase
        out: dict[str, str] = {}
        entities: list[tuple[str, str]] = []
        run: list[tuple[str, str, bool]] = []  # (folded, as typed, stop word)
        pending: list[tuple[str, str, bool]] = []  # connectors inside a run
        run_at_start = False
        at_start = True
        prev_pre = prev_d = ""  # the previous term's phrase prefix and display, for phrases
        words = caps = 0
        cache_get = self._words.get
        limit = self.max_features

        for word, mention, tag, end, _brk, cash in _TOKEN_RE.findall(text):
            if word:
                info = cache_get(word)
                if info is None:
                    info = self._word(word)
                folded, cap, stop, tkey, pre, disp, disp_sp = info
                words += 1
                if cap:
                    caps += 1
                    if not run:
                        run_at_start = at_start
                    elif pending:
                        run.extend(pending)
                        pending.clear()
                    run.append((folded, word, stop))
                elif run:
                    if folded in ENTITY_CONNECTORS:
                        pending.append((folded, word, stop))
                    else:
                        _flush(run, run_at_start, entities)
                        pending.clear()
                at_start = False
                if tkey:
                    out.setdefault(tkey, disp)
                    if prev_pre:
                        out.setdefault(prev_pre + folded, prev_d + disp)
                    prev_pre, prev_d = pre, disp_sp
                    if len(out) >= limit:
                        break
                else:
                    prev_pre = ""
                continue
            if run:
                _flush(run, run_at_start, entities)
                pending.clear()
            prev_pre = ""
            if end:
                at_start = True
            elif mention:
                handle = mention.rstrip(".-")
                if len(handle) > 1:
                    out.setdefault("e:" + fold(handle), handle)
            elif tag:
                body = tag[1:]
                if not body.isdigit():
                    out.setdefault("#" + fold(body), tag)
            elif cash:
                out.setdefault("e:" + fold(cash), cash.upper())
        if run:
            _flush(run, run_at_start, entities)
        # Title Case text (headlines) capitalizes everything: no trustworthy names.
        if entities and not text.isupper() and not (words >= 6 and caps * 10 > words * 6):
            for key, disp in entities:
                if len(out) >= limit:
                    break
                out.setdefault(key, disp)
        if len(out) > limit:
            out = dict(islice(out.items(), limit))
        return out


def _flush(
    run: list[tuple[str, str, bool]], at_start: bool, entities: list[tuple[str, str]]
) -> None:
    """Close a run of capitalized words, keeping it as an entity if it looks like a name."""
    lo, hi = (1 if at_start else 0), len(run)
    # A capital at a sentence start says nothing; stop words at the edges are not names.
    while lo < hi and run[lo][2]:
        lo += 1
    while hi > lo and run[hi - 1][2]:
        hi -= 1
    if 0 < hi - lo <= _MAX_ENTITY_WORDS:
        part = run[lo:hi]
        key = " ".join(p[0] for p in part)
        if len(key) > 1 and not key.isdigit():
            entities.append(("e:" + key, " ".join(p[1] for p in part)))
    run.clear()


_DEFAULT = FeatureExtractor()


def extract_features(text: str) -> dict[str, str]:
    """Features of ``text`` with a shared default extractor (see :class:`FeatureExtractor`)."""
    return _DEFAULT.extract(text)
