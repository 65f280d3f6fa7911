"""Threads: a post with its parent chain, the post it quotes, its replies and its quotes.

Used by ``GET /v1/posts/{id}/thread``, ``townsquare thread ID`` and the
answer engine ("explain this post <url or id>"). Everything is read back
from the store, so a deleted post is simply absent from its thread.

A post is named by its id (``bluesky:at://…``, ``mastodon:https://…``) or by
the URL people share: ``https://bsky.app/profile/<handle or did>/post/<rkey>``
(a handle is turned into its DID through the author directory), a Mastodon
``https://host/@user/<id>`` (the status URI ``https://host/users/user/statuses/<id>``),
or any post's own ``url`` when it is its id (RSS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from townsquare.model import Post
from townsquare.store.base import Store

#: How far up a reply chain a thread goes.
MAX_ANCESTORS = 20
_BSKY = re.compile(r"^https?://(?:www\.)?bsky\.app/profile/(?P<who>[^/?#]+)/post/(?P<rkey>[^/?#]+)")
_MASTODON = re.compile(r"^(?P<base>https?://[^/?#]+)/@(?P<user>[^/@?#]+)/(?P<id>\d+)\b")
_SOURCES = ("bluesky:", "mastodon:", "rss:", "jsonl:", "demo:")


@dataclass(slots=True)
class Thread:
    post: Post
    #: Root first, the direct parent last.
    ancestors: list[Post] = field(default_factory=list)
    #: The post this one quotes, if stored.
    quoted: Post | None = None
    replies: list[Post] = field(default_factory=list)
    quotes: list[Post] = field(default_factory=list)

    def posts(self) -> list[Post]:
        """Every post of the thread once, in the order a reader needs them: the post,
        its parents (nearest first), what it quotes, its replies, its quotes."""
        seen: set[str] = set()
        out: list[Post] = []
        extra = [self.quoted] if self.quoted else []
        for p in [self.post, *reversed(self.ancestors), *extra, *self.replies, *self.quotes]:
            if p.id not in seen:
                seen.add(p.id)
                out.append(p)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "thread",
            "post": self.post.public_dict(),
            "ancestors": [p.public_dict() for p in self.ancestors],
            "quoted": self.quoted.public_dict() if self.quoted else None,
            "replies": [p.public_dict() for p in self.replies],
            "quotes": [p.public_dict() for p in self.quotes],
        }


def candidate_ids(ref: str, store: Store) -> list[str]:
    """The post ids a reference may mean, most likely first."""
    ref = ref.strip().strip("<>")
    if ref.startswith(_SOURCES):
        return [ref]
    out: list[str] = []
    m = _BSKY.match(ref)
    if m:
        who = m.group("who")
        if not who.startswith("did:"):
            author = store.get_author(who)
            who = author.id if author is not None else who
        out.append(f"bluesky:at://{who}/app.bsky.feed.post/{m.group('rkey')}")
    m = _MASTODON.match(ref)
    if m:
        out.append(f"mastodon:{m.group('base')}/users/{m.group('user')}/statuses/{m.group('id')}")
    out += [f"mastodon:{ref}", f"rss:{ref}", f"jsonl:{ref}"]
    return out


def find_post(ref: str, store: Store) -> Post | None:
    """The stored post a URL or id names, or None."""
    for pid in candidate_ids(ref, store):
        post = store.get_post(pid)
        if post is not None:
            return post
    return None


def gather(store: Store, post: Post, replies: int = 30, quotes: int = 20) -> Thread:
    """The thread around ``post`` (blocking: call it in a thread from async code)."""
    ancestors: list[Post] = []
    seen = {post.id}
    parent_id = post.reply_to
    while parent_id and parent_id not in seen and len(ancestors) < MAX_ANCESTORS:
        seen.add(parent_id)
        parent = store.get_post(parent_id)
        if parent is None:
            break
        ancestors.append(parent)
        parent_id = parent.reply_to
    ancestors.reverse()
    quoted = store.get_post(post.quote_of) if post.quote_of else None
    return Thread(
        post=post,
        ancestors=ancestors,
        quoted=quoted,
        replies=store.related_posts(post.id, "replies", replies),
        quotes=store.related_posts(post.id, "quotes", quotes),
    )
