"""The saved watches: the store's, read through a short cache for matching.

Watches live in the store (:class:`~townsquare.store.base.WatchesStore`), so
every replica on one PostgreSQL database or one SQLite file lists, matches
and deletes the same ones. Requests (list, read, delete, the event stream's
checks) read the store; matching, which runs on every committed batch, reads
a copy refreshed every ``refresh_s`` seconds and at once after a change made
through this object, so a watch created on another replica starts matching
here within that time.

Before watches were in the store they were ``<home>/watches.json``;
:func:`import_watch_file` moves such a file's watches (and the stories they
already reported) into the store once, and sets the file aside.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from townsquare.store.base import WatchesStore
from townsquare.watches.model import Watch
from townsquare.watches.webhooks import new_secret

log = logging.getLogger(__name__)

#: How stale the matching copy may be: a watch made or deleted on another replica.
WATCHES_REFRESH_S = 2.0


class SavedWatches:
    """One store's watches, as :class:`Watch` objects."""

    def __init__(self, store: WatchesStore, refresh_s: float = WATCHES_REFRESH_S) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._copy: tuple[float, list[Watch]] | None = None

    def all(self) -> list[Watch]:
        """Every watch, oldest first (the matching copy: at most ``refresh_s`` old)."""
        with self._lock:
            copy = self._copy
        now = time.monotonic()
        if copy is not None and now - copy[0] < self.refresh_s:
            return copy[1]
        watches = [Watch.from_stored(w) for w in self.store.watches()]
        with self._lock:
            self._copy = (now, watches)
        return watches

    def of(self, owner: int) -> list[Watch]:
        return [Watch.from_stored(w) for w in self.store.watches(owner)]

    def get(self, owner: int, watch_id: str) -> Watch | None:
        row = self.store.get_watch(watch_id, owner)
        return Watch.from_stored(row) if row is not None else None

    def add(self, watch: Watch) -> Watch:
        """Save it; the watch as the store gives it back (what every later read shows)."""
        self.store.add_watch(watch.stored())
        self._changed()
        return self.get(watch.owner, watch.id) or watch

    def rotate_secret(self, watch: Watch) -> str:
        watch.secret = new_secret()
        self.store.set_watch_secret(watch.id, watch.owner, watch.secret)
        self._changed()
        return watch.secret

    def remove(self, watch_id: str, owner: int) -> bool:
        gone = self.store.delete_watch(watch_id, owner)
        self._changed()
        return gone

    def _changed(self) -> None:
        with self._lock:
            self._copy = None

    def claim(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Claim (watch id, item) pairs; the ones this call won (nobody reported them yet)."""
        return set(self.store.claim_watch_items(pairs)) if pairs else set()

    def claimed(self, watch_ids: Sequence[str], prefix: str) -> set[tuple[str, str]]:
        return self.store.watch_claims(watch_ids, prefix) if watch_ids else set()


def import_watch_file(path: Path, store: WatchesStore) -> int:
    """Move the watches of a ``watches.json`` into the store once; how many were new.

    The stories each watch had reported become its claims, so none is
    reported again. The file is then renamed ``watches.json.imported`` (kept
    private: it holds the signing secrets); one that cannot be read is set
    aside as ``watches.json.unreadable`` for a human, and serving goes on.
    Watches already in the store (another replica imported the same file)
    are left as they are.
    """
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return 0
    except (ValueError, UnicodeDecodeError) as exc:
        _set_aside(path, ".unreadable", exc)
        return 0
    added = 0
    try:
        for item in items:
            notified = [str(s) for s in item.pop("notified", [])]
            if not item.get("secret"):
                item["secret"] = new_secret()  # a watch saved before secrets gets one now
            watch = Watch(**item)
            added += store.add_watch(watch.stored())
            store.claim_watch_items([(watch.id, "story:" + s) for s in notified],
                                    at=datetime.now(UTC))
    except (TypeError, AttributeError) as exc:
        _set_aside(path, ".unreadable", exc)
        return added
    try:
        os.replace(path, path.with_name(path.name + ".imported"))
    except FileNotFoundError:
        pass  # another process on this home imported it at the same time
    log.info("imported %d watch(es) from %s into the store", added, path)
    return added


def _set_aside(path: Path, suffix: str, exc: Exception) -> None:
    aside = path.with_name(path.name + suffix)
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    log.error("could not read %s (%s); moved it to %s", path, exc, aside)
