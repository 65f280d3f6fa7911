"""Turning user text into a safe FTS5 query.

User text never becomes FTS5 syntax: every token is double-quoted (so
``NOT``, ``OR``, ``*``, ``NEAR``, ``col:`` and stray quotes are plain words),
as datasette's ``quote_fts`` does. Tokens are OR-ed, because questions are
sentences ("what are people saying about the delays?") and BM25 already
rewards posts that contain more of them; stop words are dropped unless the
query is nothing but stop words.
"""

from __future__ import annotations

from townsquare.text import fold, stop_words
from townsquare.text import tokens as text_tokens

#: Function words and question framing: "what are people saying about the delays?"
#: searches for "delays".
_STOP = stop_words(questions=True)


def query_tokens(text: str) -> list[str]:
    """Lower-cased word tokens, stop words removed unless nothing else remains."""
    tokens = text_tokens(text)
    content = [t for t in tokens if fold(t) not in _STOP]
    seen: dict[str, None] = {}
    for t in content or tokens:
        seen.setdefault(t, None)
    return list(seen)[:32]


def quote_token(token: str) -> str:
    """One token as an FTS5 string literal: never an operator, column or prefix."""
    return '"' + token.replace('"', '""') + '"'
