"""Which language an answer is in: py3langid, whose model ships inside its PyPI wheel.

The identifier is restricted to the languages a newsroom user of this project
is likely to ask in (:data:`LANGUAGES`): on the two or three sentences of an
answer, an unrestricted 97-language model too often picks a neighbour (Latin
or Luxembourgish for short French or English). Built once, on first use.
"""

from __future__ import annotations

import threading
from typing import Any

LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl")
_lock = threading.Lock()
_identifier: Any = None


def _get() -> Any:
    global _identifier
    with _lock:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            identifier.set_languages(list(LANGUAGES))
            _identifier = identifier
        return _identifier


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of ``text``'s language, or None when it has no words."""
    if not any(c.isalpha() for c in text):
        return None
    lang, _prob = _get().classify(text)
    return str(lang)
