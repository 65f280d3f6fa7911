"""The words of a search query, shared by both engines' full-text search.

User text never becomes query syntax: each engine quotes these words its own
way (SQLite: every token double-quoted, ``sqlite/store.py``; PostgreSQL:
normalized by the server, ``postgres/textsearch.py``). Tokens are OR-ed,
because questions are sentences ("what are people saying about the delays?") and BM25 already
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
