"""Personas: how an answer sounds, never what it says.

A persona is a Markdown file: an optional front-matter block of ``key: value``
lines, then the tone instructions. Two ship with townsquare (``regular`` and
``fun``, in ``answer/personas/``); users add their own, or replace a built-in,
by dropping ``<name>.md`` into ``<home>/personas/`` (``Settings.personas_dir``)::

    ---
    description: Explains like a patient teacher.
    no_results: Nothing about that{window} yet.
    declined: That's not something I'll help with.
    ---
    Tone: warm and patient; define jargon in a few words.

The persona text only fills the *tone* slot of the system prompt. The rules
about citations, untrusted posts and the content policy are the engine's and
come before and after it, so a persona (even a hostile user-written one)
cannot switch citations off or turn posts into instructions.
``{window}`` in ``no_results`` becomes " in the last hour" etc.

Fixed texts are answered in the asker's language: ``no_results.fr:`` and
``declined.fr:`` (any language code) give a persona's own translations;
without one, the engine's text for that language
(:data:`townsquare.answer.language.TEXTS`) is used. ``framing: fun`` (the
built-in ``fun`` has it) picks the cheekier framing words of grounded
composition (:mod:`townsquare.answer.compose`); the default is ``regular``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from townsquare.answer import language
from townsquare.errors import NotFound

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
#: Tone text beyond this is cut: personas shape style, they do not get a prompt budget.
MAX_TONE_CHARS = 2000

DEFAULT_NO_RESULTS = "I couldn't find any posts about that{window}."
DEFAULT_DECLINED = "I can't help with that."


class UnknownPersona(NotFound, ValueError):
    """A mode nobody defined; the message lists the ones that exist."""

    code = "model_not_found"
    param = "model"


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    tone: str
    description: str = ""
    no_results: str = DEFAULT_NO_RESULTS
    declined: str = DEFAULT_DECLINED
    builtin: bool = True
    #: Translations of the fixed texts, keyed ``"no_results.fr"``, ``"declined.fr"``.
    texts: tuple[tuple[str, str], ...] = ()
    #: Which framing words grounded composition uses: ``regular`` or ``fun``.
    framing: str = "regular"

    def _text(self, key: str, default: str, lang: str) -> str:
        if lang == language.DEFAULT:
            return default
        found = dict(self.texts).get(f"{key}.{lang}")
        if found:
            return found
        if default not in (DEFAULT_NO_RESULTS, DEFAULT_DECLINED) and lang not in language.TEXTS:
            return default
        return language.text(key, lang)

    def no_results_text(self, window: str = "", lang: str = language.DEFAULT) -> str:
        text = self._text("no_results", self.no_results, lang)
        return text.replace("{window}", language.window_label(window, lang))

    def declined_text(self, lang: str = language.DEFAULT) -> str:
        return self._text("declined", self.declined, lang)


def parse_persona(name: str, text: str, builtin: bool = False) -> Persona:
    """A persona from its file text (front matter optional)."""
    meta: dict[str, str] = {}
    body = text.replace("\r\n", "\n")
    if body.startswith("---\n"):
        end = body.find("\n---", 4)
        if end != -1:
            for line in body[4:end].splitlines():
                key, sep, value = line.partition(":")
                if sep and key.strip():
                    meta[key.strip().lower()] = value.strip()
            body = body[end + 4 :]
    tone = body.strip()[:MAX_TONE_CHARS]
    if not tone:
        raise ValueError(f"persona {name!r} has no tone instructions after its front matter")
    return Persona(
        name=name,
        tone=tone,
        description=meta.get("description", ""),
        no_results=meta.get("no_results", DEFAULT_NO_RESULTS),
        declined=meta.get("declined", DEFAULT_DECLINED),
        builtin=builtin,
        texts=tuple(sorted((k, v) for k, v in meta.items() if "." in k and v)),
        framing="fun" if meta.get("framing", "").lower() == "fun" else "regular",
    )


class Personas:
    """Built-in personas overlaid with the user's ``personas_dir``."""

    def __init__(self, personas: dict[str, Persona]) -> None:
        if "regular" not in personas:
            raise ValueError("the 'regular' persona must exist: it is the default mode")
        self._personas = dict(personas)

    @classmethod
    def load(cls, user_dir: Path | None = None) -> Personas:
        found: dict[str, Persona] = {}
        for entry in resources.files("townsquare.answer").joinpath("personas").iterdir():
            if entry.name.endswith(".md"):
                name = entry.name[:-3]
                found[name] = parse_persona(name, entry.read_text(encoding="utf-8"), True)
        if user_dir is not None and user_dir.is_dir():
            for path in sorted(user_dir.glob("*.md")):
                name = path.stem.lower()
                if NAME_RE.match(name):
                    found[name] = parse_persona(name, path.read_text(encoding="utf-8"))
        return cls(found)

    def names(self) -> list[str]:
        return sorted(self._personas)

    def get(self, name: str | None) -> Persona:
        key = (name or "regular").strip().lower()
        try:
            return self._personas[key]
        except KeyError:
            raise UnknownPersona(
                f"unknown mode {name!r}; available: {', '.join(self.names())} "
                "(add your own as <home>/personas/NAME.md)"
            ) from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._personas
