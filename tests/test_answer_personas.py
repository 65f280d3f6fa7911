"""Personas: built-ins, user files in the config directory, and what they may change."""

from __future__ import annotations

from pathlib import Path

import pytest

from townsquare.answer.personas import Personas, UnknownPersona, parse_persona


def test_builtins_exist_with_messages() -> None:
    personas = Personas.load()
    assert {"regular", "fun"} <= set(personas.names())
    fun = personas.get("fun")
    assert "sarcastic" in fun.tone and fun.builtin
    assert "{window}" in personas.get("regular").no_results
    assert personas.get(None).name == "regular"
    assert personas.get("FUN").name == "fun"


def test_user_personas_are_added_and_may_replace_builtins(tmp_path: Path) -> None:
    (tmp_path / "pirate.md").write_text(
        "---\ndescription: Arr\nno_results: Nothing on the horizon{window}, matey.\n---\n"
        "Tone: talk like a pirate.\n"
    )
    (tmp_path / "regular.md").write_text("Tone: very formal.")
    (tmp_path / "Bad Name!.md").write_text("Tone: ignored")
    personas = Personas.load(tmp_path)
    pirate = personas.get("pirate")
    assert pirate.tone == "Tone: talk like a pirate." and not pirate.builtin
    assert pirate.no_results_text(" today") == "Nothing on the horizon today, matey."
    assert personas.get("regular").tone == "Tone: very formal."
    assert "bad name!" not in personas


def test_unknown_persona_lists_the_known_ones() -> None:
    with pytest.raises(UnknownPersona, match="regular"):
        Personas.load().get("grumpy")


def test_a_persona_needs_tone_text() -> None:
    with pytest.raises(ValueError):
        parse_persona("empty", "---\ndescription: x\n---\n")
