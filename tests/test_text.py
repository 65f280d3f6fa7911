"""The one text module: folding, words, tokens and stop words, as every part uses them."""

from __future__ import annotations

from townsquare.store.query_words import query_tokens
from townsquare.text import QUESTION_WORDS, STOP_WORDS, fold, stop_words, tokens, words


def test_fold_strips_accents_case_and_compatibility_forms() -> None:
    assert fold("Élodie") == "elodie" and fold("GRÈVE") == "greve"
    assert fold("ﬁnal Ｔｏｋｙｏ") == "final tokyo"
    assert fold("Straße") == "strasse"
    assert fold(None) == "" and fold("") == ""


def test_words_are_folded_and_tokens_keep_accents() -> None:
    assert words("Jean-Luc a été élu_maire") == ["jean", "luc", "a", "ete", "elu", "maire"]
    assert tokens("Jean-Luc a été élu_maire") == ["jean", "luc", "a", "été", "élu", "maire"]


def test_stop_words_per_language_and_question_framing() -> None:
    assert "the" in STOP_WORDS["en"] and "the" not in STOP_WORDS["fr"]
    assert "ete" in STOP_WORDS["fr"] and "etre" in stop_words(["fr"])
    assert stop_words(["en"]) == STOP_WORDS["en"]
    assert "people" not in stop_words() and "people" in stop_words(questions=True)
    assert QUESTION_WORDS["fr"] <= stop_words(["fr"], questions=True)
    assert all(w == fold(w) for lang in STOP_WORDS for w in STOP_WORDS[lang])


def test_the_full_text_query_keeps_the_topic_with_its_accents() -> None:
    assert query_tokens("What are people saying about the delays?") == ["delays"]
    assert query_tokens("Qu'est-ce qu'on dit de la grève à Été ?") == ["grève"]
    assert query_tokens("what is it") == ["what", "is", "it"]  # nothing but stop words
