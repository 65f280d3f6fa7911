"""The asker's language: detected, and the fixed texts in it.

Detection uses ``py3langid`` (a maintained fork of langid.py whose model
ships inside the wheel: nothing is downloaded), restricted to the languages
people are likely to ask in, since an unrestricted classifier calls a
three-word question Latin or Luxembourgish. Questions are short, and short
texts are hard: a question under :data:`SHORT_WORDS` words, or one the model
is unsure of, is classified together with the conversation's earlier user
turns ("et hier ?" after a French question is French). With nothing to go
on, English.

Fixed texts (no results, declined, search-only...) exist in every language
of :data:`TEXTS`; another detected language gets the generative path's
instruction to answer in it, and English fixed texts.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

DEFAULT = "en"
#: Languages the detector chooses among (ISO 639-1).
CANDIDATES = ("en", "fr", "es", "de", "it", "pt", "nl")
#: Below this many words the earlier turns are taken into account.
SHORT_WORDS = 6
#: Below this probability the earlier turns are taken into account.
CONFIDENT = 0.9
#: Below this probability a short text takes the conversation's language.
UNSURE = 0.7
NAMES = {
    "en": "English", "fr": "French", "es": "Spanish", "de": "German", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch",
}

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "no_results": "I couldn't find any posts about that{window}.",
        "declined": "I can't help with that.",
        "self_harm": (
            "I can't help with that, but you don't have to go through this alone. If you are "
            "in danger or thinking about suicide, please contact local emergency services or a "
            "crisis line (in the US call or text 988; in France call 3114)."
        ),
        "search_only": "Search-only answer (the language model is unavailable right now).",
        "no_search": (
            "Hello! Ask me what people are posting about a topic, a person or a place, and I'll "
            "answer from the freshest posts, with sources."
        ),
        "nothing_supported": "The posts found do not say enough to answer that.",
        "none_by_author": "I found no posts by {who} about that{window}.",
        "mentioning": "Posts that mention {who}:",
    },
    "fr": {
        "no_results": "Je n'ai trouvé aucun message à ce sujet{window}.",
        "declined": "Je ne peux pas vous aider pour cela.",
        "self_harm": (
            "Je ne peux pas vous aider pour cela, mais vous n'avez pas à traverser cela seul. "
            "Si vous êtes en danger ou pensez au suicide, contactez les services d'urgence ou "
            "une ligne d'écoute (en France, appelez le 3114 ; aux États-Unis, le 988)."
        ),
        "search_only": (
            "Réponse fondée sur la recherche seule (le modèle de langue est indisponible "
            "pour le moment)."
        ),
        "no_search": (
            "Bonjour ! Demandez-moi ce que les gens publient sur un sujet, une personne ou un "
            "lieu, et je répondrai à partir des messages les plus récents, sources à l'appui."
        ),
        "nothing_supported": "Les messages trouvés n'en disent pas assez pour répondre.",
        "none_by_author": "Je n'ai trouvé aucun message de {who} à ce sujet{window}.",
        "mentioning": "Des messages qui mentionnent {who} :",
    },
}

_UNIT_FR = {"minute": ("minutes", "la dernière minute"), "hour": ("heures", "la dernière heure"),
            "day": ("jours", "le dernier jour"), "week": ("semaines", "la dernière semaine"),
            "month": ("mois", "le dernier mois")}
#: Query windows (``QueryPlan.window``, English) in French.
_FIXED_WINDOWS_FR = {
    " since yesterday": " depuis hier", " in the last few days": " ces derniers jours",
    " last week": " la semaine dernière", " this week": " cette semaine",
    " this month": " ce mois-ci", " yesterday": " hier", " today": " aujourd'hui",
}

_lock = threading.Lock()
_identifiers: dict[tuple[str, ...], Any] = {}


def identifier(languages: tuple[str, ...]) -> Any:
    """py3langid's classifier restricted to ``languages`` (loaded once per set, shared)."""
    with _lock:
        ident = _identifiers.get(languages)
        if ident is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            ident.set_languages(list(languages))
            _identifiers[languages] = ident
        return ident


_URLISH = re.compile(r"https?://\S+|[@#][\w.\-]+|\[\d+\]")


def _classify(text: str, languages: tuple[str, ...] = CANDIDATES) -> tuple[str, float]:
    clean = _URLISH.sub(" ", text)
    if not re.search(r"[^\W\d_]", clean):
        return DEFAULT, 0.0
    lang, prob = identifier(languages).classify(clean)
    return str(lang), float(prob)


def detect(text: str, earlier: Sequence[str] = ()) -> str:
    """The language of ``text`` (ISO 639-1), helped by ``earlier`` texts when it is short.

    ``earlier`` holds the conversation's previous user turns, oldest first. A
    short or uncertain text is classified with them; with nothing to lean on,
    a very uncertain text is classified among the languages that have fixed
    texts (a two-word "Et hier ?" is French, not Dutch).
    """
    lang, prob = _classify(text)
    if prob >= CONFIDENT and len(text.split()) >= SHORT_WORDS:
        return lang
    if earlier and prob < UNSURE:
        context = " ".join([*earlier[-3:], text])
        lang2, prob2 = _classify(context)
        if prob2 >= max(prob, 0.5):
            return lang2
    if prob >= 0.5:
        return lang
    if prob == 0.0:
        return DEFAULT
    return _classify(text, tuple(TEXTS))[0]


def text(key: str, lang: str) -> str:
    """A fixed text in ``lang`` (English when it has no translation)."""
    return TEXTS.get(lang, TEXTS[DEFAULT]).get(key) or TEXTS[DEFAULT][key]


def window_label(window: str, lang: str) -> str:
    """A query window label (" in the last hour") in ``lang``."""
    if lang != "fr" or not window:
        return window
    if window in _FIXED_WINDOWS_FR:
        return _FIXED_WINDOWS_FR[window]
    m = re.match(r"^ in the last (\d+) (minute|hour|day|week|month)s$", window)
    if m:
        return f" ces {m.group(1)} derniers {_UNIT_FR[m.group(2)][0]}".replace(
            "derniers semaines", "dernières semaines").replace("derniers heures",
                                                               "dernières heures")
    m = re.match(r"^ in the last (minute|hour|day|week|month)$", window)
    if m:
        return " dans " + _UNIT_FR[m.group(1)][1]
    return window


def describe_age(dt: datetime, now: datetime, lang: str = DEFAULT) -> str:
    """'12 minutes ago' / 'il y a 12 minutes' (words read better than '12m')."""
    secs = max(0, int((now - dt).total_seconds()))
    units_en = (("day", 86400), ("hour", 3600), ("minute", 60))
    units_fr = {"day": ("jour", "jours"), "hour": ("heure", "heures"),
                "minute": ("minute", "minutes")}
    for unit, size in units_en:
        if secs >= size:
            n = secs // size
            if lang == "fr":
                one, many = units_fr[unit]
                return f"il y a {n} {one if n == 1 else many}"
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "à l'instant" if lang == "fr" else "just now"


def instruction(lang: str) -> str:
    """The generative path's line telling the model which language to write."""
    return f"Answer in {NAMES.get(lang, NAMES[DEFAULT])}."
