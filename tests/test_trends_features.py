"""Feature extraction: what a post can make trend, in English and French."""

from __future__ import annotations

from townsquare.trends.features import (
    ENTITY,
    HASHTAG,
    PHRASE,
    STOP_WORDS,
    TERM,
    FeatureExtractor,
    extract_features,
    fold,
    kind_of,
    words_of,
)


def test_kinds_keys_and_display_forms() -> None:
    f = extract_features(
        "RT @JetBlue: Our fleet's on fleek http://t.co/x #DestinationDragons with Imagine Dragons!"
    )
    assert f["#destinationdragons"] == "#DestinationDragons"
    assert f["e:@jetblue"] == "@JetBlue"
    assert f["t:fleek"] == "fleek"
    assert f["p:imagine dragons"] == "imagine dragons"
    assert f["e:imagine dragons"] == "Imagine Dragons"
    assert not any("http" in k or "t.co" in k for k in f), "URLs are stripped"
    assert {kind_of(k) for k in f} == {HASHTAG, TERM, PHRASE, ENTITY}


def test_french_accents_fold_for_matching_but_display_keeps_them() -> None:
    a = extract_features("La grève générale paralyse l'Élysée")
    b = extract_features("la greve generale paralyse l'elysee")
    assert "t:greve" in a and a["t:greve"] == "grève"
    assert a["p:greve generale"] == "grève générale"
    assert a["e:elysee"] == "Élysée"
    assert {k for k in a if not k.startswith("e:")} == set(b)
    assert fold("Élysée ÇA Straße") == "elysee ca strasse"


def test_stop_words_and_numbers_are_never_features() -> None:
    f = extract_features("The cat is on the mat and le chat est sur le tapis, 2015 fois 3")
    terms = {k[2:] for k in f if k.startswith("t:")}
    assert terms == {"cat", "mat", "chat", "tapis", "fois"}
    assert not terms & STOP_WORDS
    # Apostrophes leave clitics behind, which are stop words too.
    assert {k for k in extract_features("don't l'avion c'est qu'il") if k.startswith("t:")} == {
        "t:avion"
    }


def test_phrases_need_adjacent_terms_in_one_clause() -> None:
    f = extract_features("snow storm, delays at the airport. Storm again")
    assert "p:snow storm" in f
    assert "p:storm delays" not in f  # a comma ends the clause
    assert "p:delays airport" not in f  # "at the" sits between
    assert "p:airport storm" not in f  # a sentence ends between


def test_entities_skip_sentence_starts_and_keep_connectors() -> None:
    f = extract_features("Flights to Bank of America Stadium. Tomorrow we see Charles de Gaulle")
    ents = {k for k in f if k.startswith("e:")}
    assert "e:bank of america stadium" in ents
    assert "e:charles de gaulle" in ents
    assert f["e:charles de gaulle"] == "Charles de Gaulle"
    assert "e:flights" not in ents and "e:tomorrow" not in ents  # sentence openers


def test_shouting_and_title_case_give_no_entities() -> None:
    assert not [k for k in extract_features("WORST AIRLINE EVER NEVER AGAIN") if k[:2] == "e:"]
    headline = "Storm Closes Every Major Airport Across The Northeast Tonight"
    assert not [k for k in extract_features(headline) if k[:2] == "e:"]


def test_mentions_cashtags_and_hashtags() -> None:
    f = extract_features("$AAPL up, ask @Alice.bsky.social or @bob@mastodon.social #2015 #Q4 C#")
    assert f["e:$aapl"] == "$AAPL"
    assert "e:@alice.bsky.social" in f
    assert "e:@bob@mastodon.social" in f
    assert "#q4" in f and "#2015" not in f  # all-digit tags are not tags (as in the model)
    assert words_of("e:@alice.bsky.social") == frozenset({"alice.bsky.social"})


def test_html_entities_are_unescaped() -> None:
    assert "t:amp" not in extract_features("bags &amp; delays")


def test_features_per_post_are_bounded() -> None:
    ex = FeatureExtractor(max_features=10)
    text = " ".join(f"word{i}" for i in range(500))
    assert len(ex.extract(text)) == 10


def test_word_cache_is_bounded() -> None:
    ex = FeatureExtractor(cache_size=50)
    for i in range(200):
        ex.extract(f"unique{i} token{i}")
    assert len(ex._words) <= 50
