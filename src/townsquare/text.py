"""Text as townsquare matches it: folding, stop words per language, word tokens.

One module, so that what is stored and what is looked up always agree: the
author directory and both stores fold names alike (SQLite registers
:func:`fold` as the SQL function ``fold``), and the full-text query, the
question reader, the trend features and the answer verifier drop the same
stop words.

- :func:`fold`: compatibility forms unified, accents stripped, case folded
  (``Élodie`` -> ``elodie``, ``ﬁ`` -> ``fi``).
- :func:`words`: the folded words of a text (``Jean-Luc`` -> ``jean``, ``luc``).
- :func:`tokens`: lower-cased words as typed, accents kept, for full-text
  indexes that may keep them (PostgreSQL without ``unaccent``).
- :data:`STOP_WORDS` (function words) and :data:`QUESTION_WORDS` (how questions
  are framed: "what are people saying", "latest news"), per language, folded;
  :func:`stop_words` unites the languages asked for.

Words are runs of letters and digits (``[^\\W_]+``), as FTS5's ``unicode61``
tokenizer cuts them. The eval scorer (:mod:`townsquare.eval.text`) keeps its
own rules on purpose: a metric that shares code with what it measures would
inherit its blind spots.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping

_WORDS = re.compile(r"[^\W_]+", re.UNICODE)


def fold(text: str | None) -> str:
    """Lower-cased, accents stripped, compatibility forms unified."""
    if not text:
        return ""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def words(text: str | None) -> list[str]:
    """The folded words of a text, in order (``Jean-Luc`` -> ``jean``, ``luc``)."""
    return _WORDS.findall(fold(text))


def tokens(text: str | None) -> list[str]:
    """The words of a text as typed, lower-cased, accents kept (``Été`` -> ``été``)."""
    return [w.lower() for w in _WORDS.findall(text or "")]


# Stored folded and lower-cased, with the pieces tokenization leaves behind when
# it splits at apostrophes (``don't`` -> ``don`` + ``t``, ``l'avion`` -> ``l`` + ``avion``).
_ENGLISH = """
a about above after again against ago all almost also am an and any anyone anything are
aren around as at away back be became because been before being below between both but by
came can cannot come could couldn d did didn do does doesn doing don done down during each
else even ever every few for from further get gets getting go goes going gone got gotten
had hadn has hasn have haven having he her here hers herself him himself his how however i
if in into is isn it its itself just last least less let like ll m made make many may me
might more most much must mustn my myself never next no nor not now o of off oh ok okay
on once one only or other our ours ourselves out over own please put re really s said same
say says see seem shall shan she should shouldn since so some someone something still such
t take than that the their theirs them themselves then there these they thing things this
those though through thru to too took u under until up upon ur us use used ve very via want
wants was wasn way we well went were weren what when where whether which while who whom
whose why will with within without won would wouldn y yes yet you your yours yourself
yourselves
rt amp gt lt http https www com im ive id youre dont didnt doesnt cant wont isnt thats
theres lol yeah hey hi pls plz thx btw via
"""

_FRENCH = """
a ai aie aient aies ait alors as au aucun aucune aupres aussi autre autres aux avaient avais
avait avant avec avez aviez avions avoir avons ayant c ca car ce ceci cela celle celles celui
ces cet cette ceux chacun chaque chez ci comme comment d dans de des deja depuis donc dont du
elle elles en encore entre es est et etaient etais etait etant ete etes etiez etions etre eu
eue eues eurent eus eusse eut eux faire fait fais font fut h hui ici il ils j je jusqu jusque
l la le les leur leurs lui m ma mais me meme memes mes moi moins mon n ne ni non nos notre
nous on ont ou oui par parce pas peu peut plus pour pourquoi qu quand que quel quelle quelles
quels qui quoi s sa sans se sera serait ses si sien soit sommes son sont sous suis sur t ta
te tes toi ton tous tout toute toutes tres tu un une unes uns v va vais vers via voici voila
vont vos votre vous vu y aujourd c est ok bon bien
"""

#: Function words: never a topic, never a trend, never a claim's content.
STOP_WORDS: Mapping[str, frozenset[str]] = {
    "en": frozenset(_ENGLISH.split()),
    "fr": frozenset(_FRENCH.split()),
}

#: How questions to a live-news assistant are framed, not what they are about.
QUESTION_WORDS: Mapping[str, frozenset[str]] = {
    "en": frozenset(
        "people say saying says said tell think thinks latest news new happening currently "
        "right today what's whats".split()
    ),
    "fr": frozenset("dit disent gens nouveau nouvelles passe a-t-il".split()),
}

LANGUAGES = tuple(STOP_WORDS)


def stop_words(langs: Iterable[str] = LANGUAGES, *, questions: bool = False) -> frozenset[str]:
    """The stop words of ``langs`` (folded), with question framing if asked."""
    out: set[str] = set()
    for lang in langs:
        out |= STOP_WORDS.get(lang, frozenset())
        if questions:
            out |= QUESTION_WORDS.get(lang, frozenset())
    return frozenset(out)
