"""The words of a search query, shared by both engines' full-text search.

User text never becomes query syntax: each engine quotes these words its own
way (SQLite: every token double-quoted, ``sqlite/store.py``; PostgreSQL:
normalized by the server, ``postgres/textsearch.py``). Tokens are OR-ed,
because questions are sentences ("what are people saying about the delays?") and BM25 already
rewards posts that contain more of them; stop words are dropped unless the
query is nothing but stop words.
"""

from __future__ import annotations

import re

_TOKEN_RE = re.compile(r"\w+", re.UNICODE)

STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is
    it its itself just me more most my myself no nor not now of off on once only or other our
    ours ourselves out over own people said same say saying says she should so some such than
    that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would
    you your yours yourself yourselves what's whats right now today latest news think thinks
    tell au aux avec ce ces dans de des du elle en et eux il ils je la le les leur lui ma mais
    me meme mes moi mon ne nos notre nous on ou par pas pour qu que qui sa se ses son sur ta
    te tes toi ton tu un une vos votre vous c d j l m n s t y ete etre est sont ont quoi dit
    disent gens
    """.split()
)


def query_tokens(text: str) -> list[str]:
    """Lower-cased word tokens, stop words removed unless nothing else remains."""
    tokens = [t.lower() for t in _TOKEN_RE.findall(text)]
    content = [t for t in tokens if t not in STOPWORDS and t != "_"]
    seen: dict[str, None] = {}
    for t in content or tokens:
        seen.setdefault(t, None)
    return list(seen)[:32]
