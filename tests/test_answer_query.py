"""Query understanding: time phrases (en/fr), @handles, #hashtags, follow-ups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from townsquare.answer.query import entities, is_followup, parse_time_phrases, understand
from townsquare.store.base import SearchFilters, StoredMessage

NOW = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)  # a Wednesday
MIDNIGHT = datetime(2026, 11, 25, tzinfo=UTC)
MONDAY = datetime(2026, 11, 23, tzinfo=UTC)


@pytest.mark.parametrize(
    ("question", "since", "until", "rest"),
    [
        ("what happened today in Lyon?", MIDNIGHT, None, "what happened in Lyon?"),
        ("news in the last hour", NOW - timedelta(hours=1), None, "news"),
        ("train strike over the past 3 days", NOW - timedelta(days=3), None, "train strike"),
        ("posts from the last 24h about rain", NOW - timedelta(hours=24), None,
         "posts from about rain"),
        ("what did they say yesterday", MIDNIGHT - timedelta(days=1), MIDNIGHT,
         "what did they say"),
        ("anything since yesterday?", MIDNIGHT - timedelta(days=1), None, "anything ?"),
        ("what's trending this week", MONDAY, None, "what's trending"),
        ("recap of last week", MONDAY - timedelta(weeks=1), MONDAY, "recap of"),
        ("earthquake two hours ago", NOW - timedelta(hours=2), None, "earthquake"),
        ("qu'est-ce qui se passe aujourd'hui à Paris ?", MIDNIGHT, None,
         "qu'est-ce qui se passe à Paris ?"),
        ("les grèves cette semaine", MONDAY, None, "les grèves"),
        ("la météo d'hier", MIDNIGHT - timedelta(days=1), MIDNIGHT, "la météo d'"),
        ("quoi de neuf depuis deux heures", NOW - timedelta(hours=2), None, "quoi de neuf"),
        ("manifestations dans la dernière heure", NOW - timedelta(hours=1), None,
         "manifestations"),
        ("les 24 dernières heures en bourse", NOW - timedelta(hours=24), None, "en bourse"),
        ("la semaine dernière au Sénat", MONDAY - timedelta(weeks=1), MONDAY, "au Sénat"),
        ("ce matin sur le périph", MIDNIGHT, None, "sur le périph"),
        ("what about the match", None, None, "what about the match"),
    ],
)
def test_time_phrases_become_a_window_and_leave_the_text(
    question: str, since: datetime | None, until: datetime | None, rest: str
) -> None:
    text, got_since, got_until, label = parse_time_phrases(question, NOW)
    assert (got_since, got_until) == (since, until)
    assert text == rest
    assert bool(label) == (since is not None)


def test_handles_filter_authors_unless_they_are_the_topic() -> None:
    plan = understand("what did @alice.bsky.social post about the bridge?", NOW)
    assert plan.filters.authors == ["alice.bsky.social"]
    assert "alice" not in plan.search_text and "bridge" in plan.search_text
    topic = understand("what are people saying about @bob?", NOW)
    assert topic.filters.authors == []
    assert "bob" in topic.search_text


def test_hashtags_filter_and_stay_searchable() -> None:
    plan = understand("latest on #Greve today", NOW)
    assert plan.filters.hashtags == ["greve"]
    assert plan.filters.since == MIDNIGHT
    assert plan.search_text == "greve"
    assert plan.window == " today"


def test_explicit_filters_win_over_the_question() -> None:
    explicit = SearchFilters(since=NOW - timedelta(hours=2), authors=["carol"], langs=["fr"])
    plan = understand("what did @dave say yesterday", NOW, explicit)
    assert plan.filters.since == NOW - timedelta(hours=2)
    assert plan.filters.until is None
    assert plan.filters.authors == ["carol", "dave"]
    assert plan.filters.langs == ["fr"]
    assert plan.window == ""


def test_small_talk_skips_search_in_auto_mode_only() -> None:
    assert not understand("thanks!", NOW).retrieve
    assert understand("thanks!", NOW, search="on").retrieve
    assert not understand("what about the strike", NOW, search="off").retrieve
    assert understand("what about the strike", NOW).retrieve


def _turn(question: str, answer: str, now: datetime = NOW) -> list[StoredMessage]:
    first = understand(question, now)
    return [
        StoredMessage("user", question, now, {"plan": first.to_meta()}),
        StoredMessage("assistant", answer, now),
    ]


def test_pronoun_follow_up_is_rewritten_with_the_person_from_the_last_turn() -> None:
    history = _turn("What is Jean Dupont saying about the pension reform?",
                    "He says the reform is unfair [1].")
    plan = understand("and what about him?", NOW, history=history)
    assert plan.followup
    assert "jean" in plan.search_text and "dupont" in plan.search_text
    assert "pension" in plan.search_text and "reform" in plan.search_text


def test_follow_up_inherits_time_window_and_author_filters() -> None:
    history = _turn("what did @alice post about trains today?", "She posted about delays [1].")
    plan = understand("and about buses?", NOW, history=history)
    assert plan.followup
    assert plan.filters.authors == ["alice"]
    assert plan.filters.since == MIDNIGHT
    assert "buses" in plan.search_text and "trains" in plan.search_text
    # A follow-up that sets its own window replaces the inherited one.
    plan = understand("and yesterday?", NOW, history=history)
    assert plan.filters.since == MIDNIGHT - timedelta(days=1)
    assert plan.filters.until == MIDNIGHT


def test_french_follow_up_and_new_questions() -> None:
    history = _turn("Que disent les gens sur la grève SNCF ?", "La grève continue [1].")
    plan = understand("et hier ?", NOW, history=history)
    assert plan.followup and "grève" in plan.search_text and "sncf" in plan.search_text
    fresh = understand("What are people saying about the Champions League final?", NOW,
                       history=history)
    assert not fresh.followup
    assert "grève" not in fresh.search_text


def test_followup_detection_needs_history() -> None:
    assert not is_followup("and what about him?", has_history=False)
    assert is_followup("and what about him?", has_history=True)
    assert is_followup("why?", has_history=True)
    assert not is_followup("What is happening with the Artemis launch?", has_history=True)


def test_entities_are_handles_and_names() -> None:
    assert entities("What did @Alice say to Jean Dupont in Paris?") == [
        "@alice", "Jean Dupont", "Paris"
    ]
