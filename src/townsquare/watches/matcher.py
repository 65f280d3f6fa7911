"""The matching rule: cheap, lexical, the same for posts and stories.

The query and the text are case- and accent-folded and split into word
tokens; the text matches when at least ``min_terms`` of the query's distinct
tokens occur in it (default: all of them). A post must also pass every given
filter (``authors`` compared folded, ``sources``, ``langs``); a story's text
is its title, features and its first posts, and it must have ``min_posts``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from townsquare.model import Post
from townsquare.text import fold

if TYPE_CHECKING:
    from townsquare.trends.stories import Story
    from townsquare.watches.model import Watch

_TOKEN_RE = re.compile(r"\w+")


def tokens(text: str) -> set[str]:
    """The folded word tokens of a text (``Grève`` -> ``greve``)."""
    return set(_TOKEN_RE.findall(fold(text)))


def post_matches(watch: Watch, post: Post, post_tokens: set[str]) -> bool:
    """Whether a post passes the watch's filters and has enough of its words."""
    if watch.authors and fold(post.author) not in {fold(a) for a in watch.authors}:
        return False
    if watch.sources and post.source not in watch.sources:
        return False
    if watch.langs and (post.lang or "") not in watch.langs:
        return False
    return len(watch.terms & post_tokens) >= watch.min_terms


def story_matches(watch: Watch, story: Story, text: str) -> bool:
    """Whether a story is big enough and its text has enough of the watch's words."""
    if story.size < watch.min_posts:
        return False
    return len(watch.terms & tokens(text)) >= watch.min_terms
