"""Citation markers rewritten while streaming: renumbered, dangling ones dropped, images gone."""

from __future__ import annotations

from datetime import timedelta

import pytest

from answer_helpers import make_post
from townsquare.answer.citations import Attributor, CitationStream, finalize
from townsquare.answer.prompt import PromptPost


def run(chunks: list[str], valid: tuple[int, ...] = (1, 2, 3, 4)) -> tuple[str, CitationStream]:
    stream = CitationStream(valid)
    shown = "".join(stream.feed(c) for c in chunks) + stream.finish()
    assert shown == stream.text, "what was streamed must be the final text"
    return shown, stream


CASES = [
    ("The bridge is closed [3]. It reopened [1][2].",
     "The bridge is closed [1]. It reopened [2][3]."),
    ("Both [3, 1] agree; see also [post 3].", "Both [1][2] agree; see also [1]."),
    ("Range [2-4] cited.", "Range [1][2][3] cited."),
    ("Nothing here [9]. Or here [7, 8].", "Nothing here. Or here."),
    ("Keep [9, 2] half.", "Keep [1] half."),
    ("Brackets [sic] and years [2026] stay.", "Brackets [sic] and years [2026] stay."),
    ("Look ![pic](https://evil.example/x?q=secret) there [1].", "Look there [1]."),
    ("Wow! ![a] b [1]!", "Wow! ![a] b [1]!"),
    ("Unclosed [1 at the end", "Unclosed [1 at the end"),
    ("Truncated image ![x](https://evil.example/", "Truncated image"),
    ("Pixel <img src='https://evil.example/p.gif?d=1'> here [2].", "Pixel here [1]."),
    ("Math: 1 < 2 and <b>bold</b> [1]", "Math: 1 < 2 and <b>bold</b> [1]"),
    ("Cut <IMG src=x", "Cut"),
]


@pytest.mark.parametrize(("model_text", "shown"), CASES)
def test_every_split_into_chunks_gives_the_same_text(model_text: str, shown: str) -> None:
    assert run([model_text])[0] == shown
    for i in range(len(model_text) + 1):
        assert run([model_text[:i], model_text[i:]])[0] == shown, i
    for i in range(0, len(model_text), 3):  # three-way splits, and one char at a time
        j = min(len(model_text), i + 5)
        assert run([model_text[:i], model_text[i:j], model_text[j:]])[0] == shown
    assert run(list(model_text))[0] == shown


def test_mapping_is_in_order_of_first_citation() -> None:
    _text, stream = run(["A [4] B [2] C [4] D [9]"])
    assert stream.mapping == {4: 1, 2: 2}
    assert stream.dropped == 1


def test_markers_are_released_as_soon_as_they_close() -> None:
    stream = CitationStream([1, 2])
    assert stream.feed("The bridge [") == "The bridge"
    assert stream.feed("2] is open") == " [1] is open"


def _posts() -> list[PromptPost]:
    return [PromptPost(n, make_post(str(n), f"user{n}", f"text {n}", timedelta(hours=n)), False)
            for n in (1, 2, 3)]


def test_finalize_lists_cited_posts_in_reader_order() -> None:
    _text, stream = run(["Second [2], third [3]."], valid=(1, 2, 3))
    cites = finalize(stream, _posts())
    assert [(c.n, c.id, c.cited) for c in cites] == [(1, "jsonl:2", True), (2, "jsonl:3", True)]
    assert cites[0].text == "text 2" and cites[0].url == "https://example.org/2"
    assert cites[0].created_at.endswith("Z")


def test_an_answer_that_cites_nothing_still_returns_the_posts_used() -> None:
    _text, stream = run(["A tiny model answer without markers."], valid=(1, 2, 3))
    cites = finalize(stream, _posts())
    assert [(c.n, c.id, c.cited) for c in cites] == [
        (1, "jsonl:1", False), (2, "jsonl:2", False), (3, "jsonl:3", False)
    ]


ATTRIB_POSTS = [
    PromptPost(1, make_post("n", "bob", "Main street bridge reopened this afternoon",
                            timedelta(hours=1)), False),
    PromptPost(2, make_post("o", "alice", "The Main street bridge is closed after the flood",
                            timedelta(hours=5)), False),
]

ATTRIB_CASES = [
    # A restated post gets its marker before the full stop; made-up sentences get none.
    ("The bridge reopened this afternoon. The mayor resigned.",
     "The bridge reopened this afternoon [1]. The mayor resigned."),
    ("It was closed after the flood! Now open [1].",
     "It was closed after the flood [1]! Now open [2]."),
    ("Version 2.5 of the bridge reopened this afternoon",
     "Version 2.5 of the bridge reopened this afternoon [1]"),
    ("Closed after the flood [2]. Closed after the flood.",
     "Closed after the flood [1]. Closed after the flood [1]."),
]


@pytest.mark.parametrize(("model_text", "shown"), ATTRIB_CASES)
def test_uncited_sentences_that_restate_a_post_are_attributed(
    model_text: str, shown: str
) -> None:
    def go(chunks: list[str]) -> str:
        stream = CitationStream([1, 2], Attributor(ATTRIB_POSTS))
        out = "".join(stream.feed(c) for c in chunks) + stream.finish()
        assert out == stream.text
        return out

    assert go([model_text]) == shown
    for i in range(len(model_text) + 1):
        assert go([model_text[:i], model_text[i:]]) == shown, i
    assert go(list(model_text)) == shown


def test_attributed_posts_are_cited_in_the_final_list() -> None:
    stream = CitationStream([1, 2], Attributor(ATTRIB_POSTS))
    stream.feed("The bridge was closed after the flood, now it reopened.")
    stream.finish()
    cites = finalize(stream, ATTRIB_POSTS)
    assert [c.id for c in cites] == ["jsonl:o"] and cites[0].cited
    assert stream.attributed == 1
