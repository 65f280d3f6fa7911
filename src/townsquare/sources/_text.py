"""Turning what upstreams publish (HTML, language tags) into what we index.

Feeds and Mastodon deliver HTML; the index wants plain text with sensible
line breaks: paragraphs become blank lines, ``<br>`` a newline, scripts and
styles vanish, entities are decoded. Mastodon hides parts of long links in
``<span class="invisible">``; keeping every span's text restores the full URL.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_PARAGRAPH = frozenset({"p", "blockquote", "pre", "ul", "ol", "table", "h1", "h2", "h3", "h4",
                        "h5", "h6", "figure", "section", "article", "header", "footer"})
_LINE = frozenset({"div", "li", "tr", "dd", "dt", "hr", "figcaption", "address"})
_SKIP = frozenset({"script", "style", "template", "noscript", "head"})
_SPACES = re.compile(r"[^\S\n]+")
_WS = re.compile(r"\s+")
_LANG = re.compile(r"^[a-z]{2,8}$")
_BR = -1  # a <br>: each one counts, unlike block boundaries which merge


class _TextExtractor(HTMLParser):
    """Collects text runs and line breaks; ``int`` parts are breaks (newline counts)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str | int] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skipping += 1
        elif tag == "br":
            self.parts.append(_BR)
        elif tag in _PARAGRAPH:
            self.parts.append(2)
        elif tag in _LINE:
            self.parts.append(1)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _PARAGRAPH:
            self.parts.append(2)
        elif tag in _LINE:
            self.parts.append(1)

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            # Newlines inside HTML text are just whitespace.
            self.parts.append(_WS.sub(" ", data))

    def text(self) -> str:
        """Adjacent block boundaries merge (``</li><li>`` is one newline);
        each ``<br>`` counts, so ``<br><br>`` still leaves a blank line."""
        out: list[str] = []
        pending = 0
        for part in self.parts:
            if isinstance(part, int):
                pending = pending + 1 if part == _BR else max(pending, part)
            elif part.strip():
                if out and pending:
                    out.append("\n" * min(pending, 2))
                pending = 0
                out.append(part)
            elif not pending:
                out.append(part)
        return "".join(out)


def html_to_text(html: str) -> str:
    """Plain text from an HTML fragment; tolerant of broken markup."""
    if "<" not in html and "&" not in html:
        return normalize_space(html)
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return tidy_lines(parser.text())


def normalize_space(text: str) -> str:
    """Collapse all whitespace (newlines included) into single spaces."""
    return _WS.sub(" ", text.replace("\u00a0", " ")).strip()


def tidy_lines(text: str) -> str:
    """Trim each line, collapse runs of spaces and of blank lines."""
    lines = [_SPACES.sub(" ", line.replace("\u00a0", " ")).strip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word boundary with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit * 0.8:
        cut = cut[:space]
    return cut.rstrip() + "…"


def primary_lang(tag: object) -> str | None:
    """``'en-US'``/``'en_us'``/``'EN'`` -> ``'en'``; anything unusable -> None.

    Every source stores the primary language subtag only, so a ``langs=["pt"]``
    filter matches ``pt-BR`` feeds and Bluesky's ``pt`` posts alike.
    """
    if not isinstance(tag, str):
        return None
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    return primary if _LANG.match(primary) else None
