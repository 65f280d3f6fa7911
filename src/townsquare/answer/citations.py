"""Citations: the ``[n]`` marker syntax and the citation list an answer carries.

The model cites prompt numbers (``[4]``); readers see ``[1]`` for the first
post cited, ``[2]`` for the next new one, and so on, with the citation list
in that order. The verification gate (:class:`~townsquare.answer.verify.Gate`)
reads markers with :func:`marker_numbers` as each sentence completes and
renumbers them as it emits the sentence, so streamed text and the final answer
agree. Markers it accepts: ``[3]``, ``[3, 5]``, ``[3][5]``, ``[3-5]``,
``[post 3]``; numbers that name no prompt post are dropped.

When nothing is cited at all, :func:`finalize` returns every post that was in
the prompt, flagged ``cited=False``, so the answer still comes with its sources.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from townsquare.answer.prompt import PromptPost
from townsquare.model import iso

_MARKER_BODY = re.compile(
    r"^\s*(?:(?:posts?|sources?|refs?|#)\s*)?(\d{1,2}(?:\s*(?:[,;–-]|and|&)\s*#?\d{1,2})*)\s*$",
    re.IGNORECASE,
)
_RANGE = re.compile(r"(\d{1,2})\s*[–-]\s*(\d{1,2})")


@dataclass(slots=True)
class Citation:
    n: int
    id: str
    author: str
    url: str | None
    created_at: str
    text: str
    #: False when the model cited nothing and the posts it was given are listed instead.
    cited: bool = True
    #: The author's display name and the post's source, from the post the engine had
    #: (the HTTP API shows them; no second read of the store).
    author_name: str | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "id": self.id,
            "author": self.author,
            "url": self.url,
            "created_at": self.created_at,
            "text": self.text,
            "cited": self.cited,
        }

    def public_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with ``author_name`` and ``source``: the HTTP API's shape."""
        return {**self.to_dict(), "author_name": self.author_name,
                "source": self.source or self.id.partition(":")[0]}


def marker_numbers(body: str) -> list[int] | None:
    """The numbers in a marker body, or None if the body is not a citation marker."""
    m = _MARKER_BODY.match(body)
    if m is None:
        return None
    out: list[int] = []
    spec = m.group(1)
    for a, b in _RANGE.findall(spec):
        lo, hi = int(a), int(b)
        if 0 < hi - lo <= 10:
            out.extend(range(lo, hi + 1))
    spec = _RANGE.sub(" ", spec)
    out.extend(int(x) for x in re.findall(r"\d{1,2}", spec))
    return list(dict.fromkeys(out))


class _Numbered(Protocol):
    mapping: dict[int, int]


def finalize(stream: _Numbered, posts: Sequence[PromptPost]) -> list[Citation]:
    """The citation list: posts cited, in reader order; or all posts if none were cited.

    ``stream`` is what renumbered the markers (the verification
    :class:`~townsquare.answer.verify.Gate`).
    """
    by_n = {p.n: p for p in posts}
    if stream.mapping:
        ordered = sorted(stream.mapping.items(), key=lambda kv: kv[1])
        return [_citation(n_out, by_n[n_in], True) for n_in, n_out in ordered]
    return [_citation(i, p, False) for i, p in enumerate(posts, 1)]


def _citation(n: int, pp: PromptPost, cited: bool) -> Citation:
    post = pp.post
    return Citation(
        n=n,
        id=post.id,
        author=post.author,
        url=post.url,
        created_at=iso(post.created_at),
        text=post.text,
        cited=cited,
        author_name=post.author_name,
        source=post.source,
    )
