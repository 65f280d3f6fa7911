"""Citation markers: parsed, renumbered and checked *while* the answer streams.

The model cites prompt numbers (``[4]``); readers should see ``[1]`` for the
first post cited, ``[2]`` for the next new one, and so on, with the citation
list in that order. Renumbering after the fact would make the streamed text
and the final answer disagree, so :class:`CitationStream` rewrites markers on
the fly: text is passed through immediately except from an opening ``[`` (or
``!``) until it is clear what follows, and trailing spaces until the next
non-marker text, which costs at most a few characters of delay.

- ``[3]``, ``[3, 5]``, ``[3][5]``, ``[3-5]``, ``[post 3]``: each number that
  names a prompt post is renumbered; numbers that point nowhere are dropped,
  and a marker left empty disappears with the space before it.
- Bracketed text that is not a marker (``[sic]``, ``[2026]``) passes unchanged.
- Images, markdown ``![alt](url)`` or HTML ``<img src=...>``, are removed: a
  client rendering them would fetch the URL, the classic exfiltration channel
  for injected instructions. Stray ``<post>``/``</posts>`` tags a small model
  copies from the prompt are removed too.
- A sentence the model left uncited that restates a post (an
  :class:`Attributor` finds enough shared words) gets that post's marker
  before its full stop. SmolLM2-135M almost never writes markers itself but
  mostly restates posts, so this is what makes its answers cite; a sentence
  it made up shares too little with any post and stays unmarked.

When nothing is cited at all, :func:`finalize` returns every post that was in
the prompt, flagged ``cited=False``, so the answer still comes with its sources.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from townsquare.answer.prompt import PromptPost
from townsquare.answer.query import content_words
from townsquare.model import iso

_MARKER_BODY = re.compile(
    r"^\s*(?:(?:posts?|sources?|refs?|#)\s*)?(\d{1,2}(?:\s*(?:[,;–-]|and|&)\s*#?\d{1,2})*)\s*$",
    re.IGNORECASE,
)
_RANGE = re.compile(r"(\d{1,2})\s*[–-]\s*(\d{1,2})")
#: Longest bracket we hold back waiting for its ``]`` before giving up.
MAX_MARKER_CHARS = 24
#: Longest markdown image we hold back waiting for its ``)``.
MAX_IMAGE_CHARS = 2048


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


def _numbers(body: str) -> list[int] | None:
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


class Attributor:
    """Finds the post a sentence restates, for sentences the model left uncited.

    A sentence gets a post's number when at least two of its content words,
    and at least half of them, appear in that post (newest post on ties).
    Restating a post is what a small model mostly does; a sentence it made up
    shares too little with any post to get a marker.
    """

    def __init__(self, posts: Sequence[PromptPost]) -> None:
        self._posts = [(p.n, _content(p.post.text) | {p.post.author.lower()}) for p in posts]

    def best(self, sentence: str) -> int | None:
        words = _content(sentence)
        if len(words) < 2:
            return None
        best_n, best_shared = None, 0
        for n, post_words in sorted(self._posts):
            shared = len(words & post_words)
            if shared > best_shared:
                best_n, best_shared = n, shared
        if best_shared >= 2 and best_shared * 2 >= len(words):
            return best_n
        return None


class CitationStream:
    """Feed model text in, get reader text out, with markers renumbered."""

    def __init__(
        self, prompt_numbers: Sequence[int], attributor: Attributor | None = None
    ) -> None:
        self._valid = set(prompt_numbers)
        self._attributor = attributor
        #: prompt number -> reader number, in order of first citation.
        self.mapping: dict[int, int] = {}
        self.dropped = 0
        #: Markers added by the attributor (sentences the model left uncited).
        self.attributed = 0
        self._held = ""
        #: Trailing whitespace not yet shown: dropped if a dangling marker follows.
        self._space = ""
        self._sentence: list[str] = []
        self._sentence_cited = False
        self._out: list[str] = []

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return "".join(self._out)

    def feed(self, delta: str) -> str:
        """Text that can be shown now (possibly empty while a marker is open)."""
        emitted: list[str] = []
        buf = self._space + self._held + delta
        self._held = self._space = ""
        i = 0
        while i < len(buf):
            ch = buf[i]
            if ch == "[":
                end = buf.find("]", i + 1)
                if end == -1:
                    if len(buf) - i <= MAX_MARKER_CHARS:
                        self._held = buf[i:]
                        break
                    self._plain(ch, emitted)
                    i += 1
                    continue
                marker = self._marker(buf[i + 1 : end], emitted)
                if marker.startswith("[") and not marker[1:2].isdigit():
                    self._plain(marker, emitted)
                else:
                    emitted.append(marker)
                i = end + 1
            elif ch == "!" and (i + 1 == len(buf) or buf[i + 1] == "["):
                rest = buf[i:]
                close = _image_end(rest)
                if close is None:
                    if len(rest) <= MAX_IMAGE_CHARS and _could_be_image(rest):
                        self._held = rest
                        break
                    self._plain(ch, emitted)
                    i += 1
                    continue
                if close > 0:
                    i += close  # drop the whole image, and the space before it
                    _strip_last(emitted)
                    continue
                self._plain(ch, emitted)
                i += 1
            elif ch == "<" and _could_be_tag(buf[i:]):
                end = buf.find(">", i)
                if end == -1:
                    if len(buf) - i <= MAX_IMAGE_CHARS:
                        self._held = buf[i:]
                        break
                    self._plain(ch, emitted)
                    i += 1
                    continue
                if _DROP_TAG.match(buf[i : end + 1]):
                    i = end + 1  # an HTML image or a stray prompt tag
                    _strip_last(emitted)
                    continue
                self._plain(ch, emitted)
                i += 1
            elif ch in ".!?\n":
                nxt = buf[i + 1 : i + 2]
                if ch != "\n" and not nxt:
                    self._held = buf[i:]  # a decimal point or a sentence end? wait and see
                    break
                if ch == "\n" or nxt.isspace() or nxt in "\"')":
                    self._end_sentence(emitted)
                self._plain(ch, emitted)
                i += 1
            else:
                j = i + 1
                while j < len(buf) and buf[j] not in "[!<.?\n":
                    j += 1
                self._plain(buf[i:j], emitted)
                i = j
        text = "".join(emitted)
        stripped = text.rstrip()
        self._space = text[len(stripped):]
        self._out.append(stripped)
        return stripped

    def finish(self) -> str:
        """Flush what was held back (an unclosed bracket is just text)."""
        held, self._held = self._held, ""
        if (held.startswith("!") and _could_be_image(held) and "](" in held) or (
            held[:1] == "<" and _could_be_tag(held)
        ):
            held = self._space = ""  # a truncated image link: still not shown
        emitted: list[str] = []
        if held[:1] in (".", "!", "?"):
            self._plain(self._space, emitted)
            self._end_sentence(emitted)
            emitted.append(held)
        else:
            self._plain(self._space + held, emitted)
            if "".join(self._sentence).strip():
                _strip_last(emitted, " \t\n")
                self._end_sentence(emitted)
        self._space = ""
        tail = "".join(emitted)
        self._out.append(tail)
        return tail

    def _plain(self, text: str, emitted: list[str]) -> None:
        emitted.append(text)
        self._sentence.append(text)

    def _end_sentence(self, emitted: list[str]) -> None:
        """Before a sentence's final punctuation: add a marker if it has none."""
        sentence = "".join(self._sentence)
        cited, self._sentence_cited, self._sentence = self._sentence_cited, False, []
        if cited or self._attributor is None:
            return
        n = self._attributor.best(sentence)
        if n is None:
            return
        _strip_last(emitted, " \t")  # "... flood [2]." (what was shown is already stripped)
        emitted.append(" " + self._cite([n]))
        self.attributed += 1

    def _cite(self, numbers: Sequence[int]) -> str:
        out = []
        for n in numbers:
            if n not in self.mapping:
                self.mapping[n] = len(self.mapping) + 1
            out.append(f"[{self.mapping[n]}]")
        return "".join(out)

    def _marker(self, body: str, emitted: list[str]) -> str:
        nums = _numbers(body)
        if nums is None:
            return f"[{body}]"
        kept = [n for n in nums if n in self._valid]
        self.dropped += len(nums) - len(kept)
        if not kept:
            # Drop the marker and the space before it ("fact [9]." -> "fact.").
            _strip_last(emitted, " ")
            return ""
        self._sentence_cited = True
        return self._cite(kept)


def _strip_last(emitted: list[str], chars: str = " ") -> None:
    if emitted:
        emitted[-1] = emitted[-1].rstrip(chars)


_WORD = re.compile(r"[^\W_]{3,}", re.UNICODE)
_DROP_TAG = re.compile(r"<(?:img\b[^>]*|/?posts?\s*|/?post\b[^>]*)>", re.IGNORECASE)


def _content(text: str) -> set[str]:
    return {w for w in content_words(" ".join(_WORD.findall(text))) if len(w) >= 3}


def _image_end(text: str) -> int | None:
    """Length of a complete markdown image at the start of ``text``; 0 if it is not one."""
    if not text.startswith("!["):
        return 0 if len(text) > 1 else None
    close = text.find("]", 2)
    if close == -1:
        return None
    if close + 1 >= len(text):
        return None
    if text[close + 1] != "(":
        return 0
    paren = text.find(")", close + 2)
    return None if paren == -1 else paren + 1


def _could_be_tag(text: str) -> bool:
    """``<img ...``, ``<post...``, ``</post...`` or a prefix that more text could complete."""
    low = text[:6].lower()
    for tag in ("<img", "<post", "</post"):
        n = min(len(low), len(tag))
        if low[:n] == tag[:n] and (len(low) >= len(tag) or len(low) == len(text)):
            return True
    return False


def _could_be_image(text: str) -> bool:
    return text == "!" or text.startswith("![")


class _Numbered(Protocol):
    mapping: dict[int, int]


def finalize(stream: _Numbered, posts: Sequence[PromptPost]) -> list[Citation]:
    """The citation list: posts cited, in reader order; or all posts if none were cited.

    ``stream`` is what renumbered the markers: a :class:`CitationStream` or the
    verification :class:`~townsquare.answer.verify.Gate`.
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
    )
