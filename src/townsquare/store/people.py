"""The author directory's shared rules: what an author row holds, and how a batch updates it.

Both stores keep ``authors`` (one row per stable account id) and
``author_words`` (the folded words of each handle and display name) in the
same transaction as the posts, and both use these functions, so they agree
on which handle wins and which words find an account:

- a handle that is only the account id (a Bluesky DID before its identity
  event) never replaces a real handle already known, and posts written
  after the directory knows the handle are shown with it;
- the words of ``jean-dupont.bsky.social`` / "Jean Dupont" are ``jean``,
  ``dupont``, ``jean-dupont`` and ``jean-dupont.bsky.social`` (provider
  suffixes like ``bsky.social`` name nobody).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from townsquare.model import Post, iso
from townsquare.text import fold, words


@dataclass(slots=True)
class Author:
    """One account as the directory knows it (``posts``, ``last_seen``: from stored posts)."""

    id: str
    source: str
    handle: str
    display_name: str | None
    first_seen: datetime
    last_seen: datetime
    posts: int

    @property
    def resolved(self) -> bool:
        """Whether a handle is known (not just the account id)."""
        return self.handle != self.id or not self.id.startswith("did:")

    def public_dict(self) -> dict[str, Any]:
        return {
            "object": "author",
            "id": self.id,
            "handle": self.handle,
            "display_name": self.display_name,
            "source": self.source,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "posts": self.posts,
        }


def name_words(handle: str | None, display_name: str | None) -> list[str]:
    """The folded words an account is found by (see the module docstring)."""
    out: dict[str, None] = {}
    handle = handle or ""
    if handle and not handle.startswith("did:"):
        full = fold(handle.lstrip("@"))
        out[full] = None
        local = full.split("@", 1)[0].split(".", 1)[0]
        out[local] = None
        for w in words(local):
            out[w] = None
    for w in words(display_name):
        out[w] = None
    return [w for w in out if len(w) >= 2 and len(w) <= 200]


@dataclass(slots=True)
class DirectoryUpdate:
    """What one run of posts changes in the directory: usually nothing.

    Only accounts seen for the first time (``new``) and accounts whose handle
    or display name changed (``changed``) are written; post counts and the
    last time an account posted are read from ``posts`` when asked (its
    ``author_id`` index), so a batch of known authors costs one lookup.
    """

    #: (id, source, handle, display_name, first_ms)
    new: list[tuple[str, str, str, str | None, int]]
    #: (handle, display_name, id)
    changed: list[tuple[str, str | None, str]]
    #: Accounts whose words must be rewritten: (id, words).
    words: list[tuple[str, list[str]]]


def known_handle(author_id: str, handle: str, known: tuple[str, str | None] | None) -> str:
    """The handle to show: the post's, unless it is only the id and a real one is known."""
    if known is not None and handle == author_id and known[0] != author_id:
        return known[0]
    return handle


def resolve_handles(posts: Sequence[Post], known: dict[str, tuple[str, str | None]]) -> None:
    """Posts by an account known only by id get the handle the directory knows."""
    for p in posts:
        aid = p.author_id or p.author
        if p.author == aid:
            p.author = known_handle(aid, p.author, known.get(aid))


def directory_update(
    posts: Iterable[Post], known: dict[str, tuple[str, str | None]], to_ms: Any
) -> DirectoryUpdate:
    """The directory writes a run of posts needs (``known``: id -> (handle, name) stored)."""
    latest: dict[str, list[Any]] = {}
    for p in posts:  # per post: kept to attribute reads and one dict lookup
        aid = p.author_id or p.author
        row = latest.get(aid)
        if row is None:
            latest[aid] = [p.source, p.author, p.author_name, p.created_at]
        else:
            row[1] = p.author
            if p.author_name:
                row[2] = p.author_name
            if p.created_at < row[3]:
                row[3] = p.created_at
    update = DirectoryUpdate([], [], [])
    for aid, (source, handle, name, first) in latest.items():
        before = known.get(aid)
        handle = known_handle(aid, handle, before)
        if before is None:
            update.new.append((aid, source, handle, name, to_ms(first)))
        else:
            name = name or before[1]
            if before == (handle, name):
                continue
            update.changed.append((handle, name, aid))
        update.words.append((aid, name_words(handle, name)))
    return update


def search_authors(store: Any, query: str, limit: int = 20) -> list[Author]:
    """The directory's answer to ``q``: the exact id or handle first, then name matches.

    ``store`` is a :class:`~townsquare.store.base.Store` (typed loosely: the
    store package imports this module).
    """
    out: dict[str, Author] = {}
    exact = store.get_author(query.strip())
    if exact is not None:
        out[exact.id] = exact
    parts = words(query)
    if parts:
        for author, n in store.find_authors(parts, limit=limit * 2):
            if n >= len(set(parts)):
                out.setdefault(author.id, author)
        if len(out) < limit:  # then accounts matching some of the words
            for author, _ in store.find_authors(parts, limit=limit):
                out.setdefault(author.id, author)
    return list(out.values())[:limit]
