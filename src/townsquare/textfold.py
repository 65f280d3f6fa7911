"""Folding text for matching names: case and accents removed ("Élodie" -> "elodie").

Shared by the author directory (what is stored), the question reader (what is
looked up) and SQLite (registered as the SQL function ``fold``), so the three
always fold alike.
"""

from __future__ import annotations

import re
import unicodedata

_WORDS = re.compile(r"[^\W_]+", re.UNICODE)


def fold(text: str | None) -> str:
    """Lower-cased, accents stripped, compatibility forms unified."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return bare.casefold()


def words(text: str | None) -> list[str]:
    """The folded words of a text, in order (``Jean-Luc`` -> ``jean``, ``luc``)."""
    return _WORDS.findall(fold(text))
