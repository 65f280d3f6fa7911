"""Standing queries (watches): saved queries that push new posts or new stories.

The domain, apart from HTTP (``service/watches.py`` serves the routes):

- :mod:`~townsquare.watches.model`: :class:`Watch`, what one is and how the
  store keeps it;
- :mod:`~townsquare.watches.matcher`: the matching rule;
- :mod:`~townsquare.watches.saved`: the watches in the store, shared by every
  replica, and the one-time import of an old ``watches.json``;
- :mod:`~townsquare.watches.hub`: matching committed posts and refreshed
  stories, fanning matches out to event streams and webhooks;
- :mod:`~townsquare.watches.webhooks` and :mod:`~townsquare.watches.guard`:
  signed webhook delivery, and where a webhook may be sent.

:func:`open_hub` builds the whole of it for one store.
"""

from __future__ import annotations

from pathlib import Path

from townsquare.store.base import Store
from townsquare.watches.guard import DestinationGuard, DestinationRefused
from townsquare.watches.hub import WatchHub
from townsquare.watches.matcher import post_matches, story_matches, tokens
from townsquare.watches.model import MAX_WATCHES_PER_KEY, STORY_WINDOWS, Watch, WatchKind
from townsquare.watches.saved import SavedWatches, import_watch_file
from townsquare.watches.webhooks import WebhookDispatcher, new_secret, sign, verify


def open_hub(store: Store, home: Path | None = None,
             webhook_allow: list[str] | None = None) -> WatchHub:
    """The watch hub over ``store``: watches of revoked keys stay silent, webhooks
    go only where ``webhook_allow`` or the public internet lets them, and an
    old ``<home>/watches.json`` is imported first."""
    if home is not None:
        import_watch_file(home / "watches.json", store)

    def live_keys() -> set[int]:
        return {k.id for k in store.list_api_keys() if k.revoked_at is None}

    guard = DestinationGuard(webhook_allow or [])
    return WatchHub(SavedWatches(store), live_keys, webhooks=WebhookDispatcher(guard))


__all__ = [
    "MAX_WATCHES_PER_KEY", "STORY_WINDOWS", "DestinationGuard", "DestinationRefused",
    "SavedWatches", "Watch", "WatchHub", "WatchKind", "WebhookDispatcher", "import_watch_file",
    "new_secret", "open_hub", "post_matches", "sign", "story_matches", "tokens", "verify",
]
