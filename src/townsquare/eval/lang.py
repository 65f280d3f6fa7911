"""Which language an answer is in: py3langid, whose model ships inside its PyPI wheel.

The identifier is restricted to the languages a newsroom user of this project
is likely to ask in (:data:`LANGUAGES`): on the two or three sentences of an
answer, an unrestricted 97-language model too often picks a neighbour (Latin
or Luxembourgish for short French or English). The classifier is the answer
engine's loader (:func:`townsquare.answer.language.identifier`), built once
per language set; the eval's set and its reading of the result are its own.
"""

from __future__ import annotations

from townsquare.answer.language import identifier

LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl")


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of ``text``'s language, or None when it has no words."""
    if not any(c.isalpha() for c in text):
        return None
    lang, _prob = identifier(LANGUAGES).classify(text)
    return str(lang)
