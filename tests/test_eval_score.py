"""The answer-quality scorer on hand-written answers: each metric can fail, and does."""

from __future__ import annotations

from typing import Any

import pytest

from townsquare.eval.score import Expectation, score_answer
from townsquare.eval.text import figures, names, sentences

POSTS = [
    {"n": 1, "id": "jsonl:deal", "author": "lemonde_live", "cited": True,
     "text": "Accord trouvé entre la direction de la SNCF et les syndicats : hausse de salaire "
             "de 4,5 %. Le préavis de grève est levé."},
    {"n": 2, "id": "jsonl:renard", "author": "sophie_renard", "cited": True,
     "text": "C'est une victoire pour tous les cheminots. Le travail reprend demain matin."},
    {"n": 3, "id": "jsonl:power", "author": "bzh_news", "cited": True,
     "text": "Update: 45,000 homes in Brittany still without electricity this morning, "
             "Enedis says."},
]
NAMES = {"jsonl:renard": "Sophie Renard", "jsonl:deal": "Le Monde Live"}


AS_OF = "2026-12-03T09:00:00Z"
for _i, _post in enumerate(POSTS):
    _post["created_at"] = f"2026-12-03T0{6 + _i}:00:00Z"  # 3 h, 2 h and 1 h before AS_OF


def answer(text: str, **kw: Any) -> dict[str, Any]:
    return {"answer": text, "citations": POSTS, "declined": None, "as_of": AS_OF, **kw}


def score(text: str, expect: Expectation | None = None, **kw: Any) -> Any:
    return score_answer(answer(text, **kw), expect or Expectation(), NAMES)


def test_a_supported_sentence_passes() -> None:
    s = score("45,000 homes in Brittany are still without electricity [3].")
    assert (s.supported, s.scored) == (1, 1)
    assert s.sentences[0].reasons == []


def test_figures_match_across_notations() -> None:
    s = score("Selon Le Monde Live, la hausse de salaire est de 4.5 % [1].")
    assert s.supported == 1, s.sentences[0].reasons
    assert figures("45 000 foyers, 3,5 %, 12,000 homes") == {"45000", "3.5", "12000"}


def test_item_numbers_are_not_figures() -> None:
    s = score("1. 45,000 homes in Brittany are still without electricity [3].\n"
              "7. Hausse de salaire de 4,5 % [1].")
    assert (s.supported, s.scored) == (2, 2), [x.reasons for x in s.sentences]
    assert score("7. Nothing [1].", Expectation(gold=[["7"]])).facts_found == 0


def test_a_wrong_figure_fails() -> None:
    s = score("120,000 homes in Brittany are still without electricity [3].")
    assert s.supported == 0
    assert "figure 120000" in s.sentences[0].reasons


def test_a_name_absent_from_the_cited_post_fails() -> None:
    s = score("Emmanuel Macron says 45,000 homes are still without electricity [3].")
    assert s.supported == 0
    assert any(r.startswith("name ") for r in s.sentences[0].reasons)


def test_a_claim_the_cited_post_does_not_make_fails() -> None:
    # The example: the strike "has been resolved" while citing a post saying it goes on.
    s = score("The storm caused deaths and looting across Brittany yesterday [3].")
    assert s.supported == 0
    assert s.sentences[0].reasons[0].startswith("words ")


def test_a_sentence_without_citation_is_unsupported_unless_fixed_text() -> None:
    s = score("The strike is over. Nothing about that in the last hour yet.")
    assert s.scored == 1 and s.supported == 0
    assert [x.fixed for x in s.sentences] == [False, True]
    for fixed in ("Je n'ai trouvé aucun message à ce sujet.", "I couldn't find any posts."):
        assert score(fixed).sentences[0].fixed, fixed
    declined = score("That's not something I'll help with.", declined="violence")
    assert declined.scored == 0


def test_citing_the_wrong_post_fails() -> None:
    s = score("45,000 homes in Brittany are still without electricity [2].")
    assert s.supported == 0


def test_a_verbatim_quote_by_its_author_passes() -> None:
    s = score('Sophie Renard: "C\'est une victoire pour tous les cheminots" [2].')
    assert len(s.quotes) == 1
    assert (s.altered, s.misattributed) == (0, 0)
    s = score('@sophie_renard écrit « C’est une victoire pour tous les cheminots » [2].')
    assert (len(s.quotes), s.altered, s.misattributed) == (1, 0, 0)


def test_a_marker_inside_the_quotation_marks_is_not_quoted_text() -> None:
    s = score('Sophie Renard: "C\'est une victoire pour tous les cheminots [2]."')
    assert (len(s.quotes), s.altered, s.misattributed) == (1, 0, 0)


def test_an_altered_quote_fails() -> None:
    s = score('Sophie Renard: "C\'est une grande victoire pour les cheminots" [2].')
    assert (s.altered, s.misattributed) == (1, 0)


def test_a_misattributed_quote_fails() -> None:
    # Verbatim, but put in the mouth of someone who neither wrote nor is named in the post.
    s = score('Jean Castex said "C\'est une victoire pour tous les cheminots" [2].')
    assert (s.altered, s.misattributed) == (0, 1)
    s = score('@lemonde_live wrote "C\'est une victoire pour tous les cheminots" [1][2].')
    assert s.misattributed == 1


def test_a_composed_quote_with_the_post_age_is_one_supported_sentence() -> None:
    s = score("@lemonde_live (il y a 3 h) : « Accord trouvé entre la direction de la SNCF et "
              "les syndicats : hausse de salaire de 4,5 %. Le préavis de grève est levé. » [1]")
    assert [x.supported for x in s.sentences] == [True]
    assert (len(s.quotes), s.altered, s.misattributed) == (1, 0, 0)
    wrong_age = score("@bzh_news, 5 hours ago: 45,000 homes are still without electricity [3].")
    assert wrong_age.supported == 0
    assert any(r.startswith("age") for r in wrong_age.sentences[0].reasons)
    assert score("@bzh_news, 1 hour ago: 45,000 homes still without electricity [3].").supported


def test_scare_quotes_are_not_quotes() -> None:
    assert score('The so-called "hoax" talk is absent [3].').quotes == []


def test_repeated_sentences_count() -> None:
    text = ("45,000 homes are still without electricity [3]. The deal is done [1]. "
            "45,000 homes are still without electricity [3].\n"
            "- 45 000 homes are still without electricity.")
    assert score(text).repeated == 2
    assert score("45,000 homes are without power [3]. The deal is done [1].").repeated == 0


def test_language_is_detected_and_a_wrong_one_fails() -> None:
    fr = Expectation(lang="fr")
    ok = score("La hausse de salaire est de 4,5 % et le préavis de grève est levé [1].", fr)
    assert ok.lang_detected == "fr" and ok.lang_ok is True
    wrong = score("The pay rise is 4.5% and the strike notice has been lifted [1].", fr)
    assert wrong.lang_detected == "en" and wrong.lang_ok is False
    # A French quote inside an English answer does not make the answer French.
    en = score('Sophie Renard says: "C\'est une victoire pour tous les cheminots" and work '
               "resumes tomorrow morning [2].", Expectation(lang="en"))
    assert en.lang_ok is True


def test_fact_recall_uses_alternatives_and_figure_forms() -> None:
    expect = Expectation(gold=[["deal", "accord"], ["4.5"], ["45000"], ["victory"]])
    s = score("Un accord : 4,5 % de hausse [1]. Encore 45 000 foyers sans courant [3].", expect)
    assert (s.facts_found, s.facts_total) == (3, 4)
    assert s.missing_facts == ["victory"]
    assert score("Only 4 homes [3].", Expectation(gold=[["45"]])).facts_found == 0


def test_forbidden_claims_count_only_when_asserted() -> None:
    expect = Expectation(forbidden=["hoax", "strike continues"])
    assert score("No post says the storm was a hoax [3].", expect).forbidden_asserted == []
    assert score("Rien n'indique un hoax [3].", expect).forbidden_asserted == []
    assert score("The storm was a hoax [3].", expect).forbidden_asserted == ["hoax"]
    assert score("The strike continues [1].", expect).forbidden_asserted == ["strike continues"]
    assert score("Hoax claims are false [3].", expect).forbidden_asserted == []
    # A negation in another clause does not take the claim back.
    assert score("The post was a hoax made by a group, but it wasn't real [3].",
                 expect).forbidden_asserted == ["hoax"]
    assert score("There is no deal yet [1].", Expectation(forbidden=["no deal"])
                 ).forbidden_asserted == ["no deal"]


def test_newest_relevant_post_must_be_cited_first() -> None:
    expect = Expectation(latest=["jsonl:deal"])
    assert score("A deal was reached [1]. Work resumes [2].", expect).latest_ok is True
    assert score("Work resumes [2]. A deal was reached [1].", expect).latest_ok is False
    assert score("A deal was reached.", expect).latest_ok is False
    assert score("Anything [2].").latest_ok is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. [1] Two [2].", ["One. [1]", "Two [2]."]),
        ("It rose to 3.5 points [1]. Then fell!", ["It rose to 3.5 points [1].", "Then fell!"]),
        ("- item one [1]\n- item two [2]", ["- item one [1]", "- item two [2]"]),
        ("1. First [1]. 2. Second [2].", ["1. First [1].", "2. Second [2]."]),
        ('X wrote: "A deal. Trains run." [1] Next.', ['X wrote: "A deal. Trains run." [1]',
                                                    "Next."]),
    ],
)
def test_sentences_keep_their_markers(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


def test_names_skip_clause_starts_but_keep_handles_and_acronyms() -> None:
    assert names("The RATP says @bob_x met Marie Dupont in Lyon.") == [
        "RATP", "@bob_x", "Marie", "Dupont", "Lyon"]
    assert names("Storm hits.") == []


def test_a_faithful_quote_is_reported_speech_not_a_claim_of_the_answer() -> None:
    # "demain matin" is the post's; a clock time or a tag inside a verbatim quote is
    # not a figure, age or name the answer claims. What is outside the quote still is.
    s = score('@sophie_renard (Sophie Renard) writes: « Le travail reprend demain matin » [2].')
    assert (s.supported, s.scored) == (1, 1), s.sentences[0].reasons
    s = score('@sophie_renard writes, 3 days ago: « Le travail reprend demain matin » [2].')
    assert s.supported == 0 and any("age" in r for r in s.sentences[0].reasons)
    s = score('Sophie Renard says the 12 unions won: « Le travail reprend demain matin » [2].')
    assert s.supported == 0 and "figure 12" in s.sentences[0].reasons


def test_a_forbidden_phrase_only_inside_a_faithful_quote_is_not_asserted() -> None:
    expect = Expectation(forbidden=["victoire pour tous"])
    assert score("Sophie Renard: « C'est une victoire pour tous les cheminots » [2].",
                 expect).forbidden_asserted == []
    assert score("C'est une victoire pour tous [2].", expect).forbidden_asserted == [
        "victoire pour tous"]
    # An altered quote is the answer's own words: it still counts.
    assert score("Sophie Renard: « C'est une victoire pour tous les syndicats » [2].",
                 expect).forbidden_asserted == ["victoire pour tous"]
