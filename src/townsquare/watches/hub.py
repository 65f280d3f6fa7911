"""The fan-out: committed posts and refreshed stories matched against the watches,
and each match sent to the watch's live subscribers and its webhook.

- Posts: :meth:`WatchHub.listener` hears every committed batch (the live
  feed: this server's sources and another process's ingest) and runs in the
  committing thread. Every replica matches every post for its own event
  streams; the webhook goes out from the replica that first *claims* the
  (watch, post) pair in the store, so once however many replicas run.
- Stories: the story loop hands each window's stories to
  :meth:`WatchHub.new_stories` and :meth:`WatchHub.push_stories`; a story is
  claimed in the store before it is pushed, so each is reported once per
  watch, across refreshes, restarts and replicas.

Event streams are per process: a subscriber is an asyncio queue on the
subscribing request's loop, fed thread-safely; one too far behind loses
events rather than memory. Webhooks go through
:class:`~townsquare.watches.webhooks.WebhookDispatcher` (one queue per
destination, timeouts, retries, a circuit breaker): ingest never waits on a
webhook. A revoked key's watches stay saved but neither match nor push.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from townsquare.model import Post
from townsquare.watches.matcher import post_matches, story_matches, tokens
from townsquare.watches.model import Watch
from townsquare.watches.saved import SavedWatches
from townsquare.watches.webhooks import WebhookDispatcher

if TYPE_CHECKING:
    from townsquare.trends.stories import Story

log = logging.getLogger(__name__)

#: Events a slow SSE subscriber may have pending before new ones are dropped for it.
SUBSCRIBER_BACKLOG = 1000
#: How often the hub re-reads which keys are live: a key revoked (by
#: ``townsquare keys revoke``, maybe in another process) stops its watches
#: within this many seconds.
LIVE_KEYS_REFRESH_S = 10.0
#: Claims older than this are forgotten (checked at most hourly): a story or a
#: post this old is not matched again.
CLAIMS_KEPT = timedelta(days=7)


@dataclass(eq=False)
class Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]]


class WatchHub:
    """Matches committed posts and new stories against the watches and fans the matches out."""

    def __init__(
        self,
        saved: SavedWatches,
        live_keys: Callable[[], set[int]] | None = None,
        live_keys_refresh_s: float | None = None,
        webhooks: WebhookDispatcher | None = None,
    ) -> None:
        self.saved = saved
        self.webhooks = webhooks or WebhookDispatcher()
        self._live_keys = live_keys
        self._live_refresh_s = live_keys_refresh_s
        self._live: tuple[float, set[int]] | None = None
        self._subs: dict[str, set[Subscriber]] = {}
        self._subs_lock = threading.Lock()
        self._next_forget = 0.0

    # --- whose watches run -----------------------------------------------------

    def owner_live(self, owner: int) -> bool:
        """Whether ``owner``'s key is unrevoked (re-read every few seconds)."""
        if self._live_keys is None:
            return True
        now = time.monotonic()
        every = LIVE_KEYS_REFRESH_S if self._live_refresh_s is None else self._live_refresh_s
        if self._live is None or now - self._live[0] >= every:
            try:
                self._live = (now, self._live_keys())
            except Exception:  # keep the last answer rather than stop every watch
                log.exception("watches: could not read the live keys")
                if self._live is None:
                    return True
        return owner in self._live[1]

    def _running(self, kind: str) -> list[Watch]:
        return [w for w in self.saved.all() if w.kind == kind and self.owner_live(w.owner)]

    # --- posts (an ingest listener: runs in the committing thread) -----------------

    def listener(self, posts: list[Post], _deleted: list[str]) -> None:
        watches = self._running("posts")
        if not watches or not posts:
            return
        folded = [(p, tokens(p.text)) for p in posts]
        hooked: list[tuple[Watch, str, dict[str, Any]]] = []
        for watch in watches:
            for post, post_tokens in folded:
                if post_matches(watch, post, post_tokens):
                    event = {"watch_id": watch.id, "post": post.public_dict()}
                    self._stream(watch.id, event)
                    if watch.webhook_url:
                        hooked.append((watch, "post:" + post.id, event))
        if hooked:
            won = self.saved.claim([(w.id, item) for w, item, _ in hooked])
            for watch, item, event in hooked:
                if (watch.id, item) in won:
                    self._hook(watch, event)
            self._forget_old()

    # --- stories (called by the story loop after each refresh) ---------------------

    def story_windows(self) -> set[str]:
        """The windows some story watch looks at."""
        return {w.window for w in self._running("stories")}

    def new_stories(
        self, window: str, stories: list[Story], text_of: Callable[[Story], str]
    ) -> list[tuple[Watch, Story]]:
        """(watch, story) pairs to report: matching, big enough, not reported before."""
        watches = [w for w in self._running("stories") if w.window == window]
        if not watches or not stories:
            return []
        told = self.saved.claimed([w.id for w in watches], "story:")
        texts = {s.id: text_of(s) for s in stories}
        return [(w, s) for w in watches for s in stories
                if (w.id, "story:" + s.id) not in told and story_matches(w, s, texts[s.id])]

    def push_stories(self, found: list[tuple[Watch, dict[str, Any]]]) -> None:
        """Claim each (watch, story), then send the ones this process won."""
        won = self.saved.claim([(w.id, "story:" + str(story["id"])) for w, story in found])
        for watch, story in found:
            if (watch.id, "story:" + str(story["id"])) in won:
                event = {"watch_id": watch.id, "story": story}
                self._stream(watch.id, event)
                self._hook(watch, event)
        if found:
            self._forget_old()

    def _hook(self, watch: Watch, event: dict[str, Any]) -> None:
        if watch.webhook_url:
            self.webhooks.submit(watch.owner, watch.webhook_url, watch.secret, event)

    def _forget_old(self) -> None:
        now = time.monotonic()
        if now < self._next_forget:
            return
        self._next_forget = now + 3600
        try:
            self.saved.store.forget_watch_claims(datetime.now(UTC) - CLAIMS_KEPT)
        except Exception:
            log.warning("watches: could not forget old claims", exc_info=True)

    # --- event-stream subscribers ----------------------------------------------------

    def _stream(self, watch_id: str, event: dict[str, Any]) -> None:
        with self._subs_lock:
            subs = list(self._subs.get(watch_id, ()))
        for sub in subs:
            sub.loop.call_soon_threadsafe(_offer, sub.queue, event)

    def subscribe(self, watch_id: str) -> Subscriber:
        sub = Subscriber(asyncio.get_running_loop(), asyncio.Queue(SUBSCRIBER_BACKLOG))
        with self._subs_lock:
            self._subs.setdefault(watch_id, set()).add(sub)
        return sub

    def unsubscribe(self, watch_id: str, sub: Subscriber) -> None:
        with self._subs_lock:
            subs = self._subs.get(watch_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[watch_id]

    def subscribers(self, watch_id: str) -> int:
        with self._subs_lock:
            return len(self._subs.get(watch_id, ()))

    @property
    def delivered(self) -> int:
        return self.webhooks.stats.delivered

    @property
    def failed(self) -> int:
        return self.webhooks.stats.failed

    def close(self) -> None:
        self.webhooks.close()


def _offer(q: asyncio.Queue[dict[str, Any]], event: dict[str, Any]) -> None:
    try:
        q.put_nowait(event)
    except asyncio.QueueFull:
        pass  # a subscriber this far behind loses events rather than memory
