"""Bluesky handles for accounts known only by DID: the public identity lookup.

Jetstream names a post's author by DID, and its identity events give the
handle only when a handle changes, so most authors reach the directory as
``did:plc:…``. :class:`IdentityLookup` asks the public AppView
(``app.bsky.actor.getProfiles``, no account needed) for those, and commits
what it learns as :class:`~townsquare.model.Identity` events through the
store's ordinary ``apply``: the directory and every stored post of that
account then show the handle, and new posts are written with it.

- **Batched**: up to 25 DIDs a request (the endpoint's limit), most
  recently active authors first.
- **Cached**: the directory is the cache. A DID that was looked up (found or
  not) is not asked again for ``retry_s`` (default a day); identity events
  from the stream count as looked up.
- **Rate-limited**: at most ``rate`` requests a second, and a ``429`` or
  ``5xx`` waits (``Retry-After`` when given) before the next one.

It runs in ``serve`` when a Jetstream source does (setting
``identity_lookup``: ``auto``, ``on``, ``off``); tests point ``base_url`` at
a loopback server replaying recorded responses.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from townsquare.model import Identity
from townsquare.retry import parse_retry_after
from townsquare.store.base import Store
from townsquare.timeutil import utcnow

log = logging.getLogger(__name__)

DEFAULT_URL = "https://public.api.bsky.app"
PROFILES_PATH = "/xrpc/app.bsky.actor.getProfiles"
#: getProfiles takes at most this many actors per call.
MAX_BATCH = 25
STREAM_KEY = "bluesky:identity-lookup"
INVALID_HANDLE = "handle.invalid"


@dataclass(slots=True)
class LookupResult:
    asked: int = 0
    resolved: int = 0
    requests: int = 0


class IdentityLookup:
    """Resolves DIDs the directory holds without a handle; see the module docstring."""

    def __init__(
        self,
        store: Store,
        base_url: str = DEFAULT_URL,
        rate: float = 2.0,
        retry_s: float = 86_400.0,
        batch: int = MAX_BATCH,
        timeout_s: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.store = store
        self.url = base_url.rstrip("/") + PROFILES_PATH
        self.min_gap = 1.0 / rate if rate > 0 else 0.0
        self.retry = timedelta(seconds=retry_s)
        self.batch = max(1, min(batch, MAX_BATCH))
        self._client = client or httpx.AsyncClient(
            timeout=timeout_s, headers={"User-Agent": "townsquare (identity lookup)"}
        )
        self._owns_client = client is None
        self._next_at = 0.0
        self.total = LookupResult()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def resolve_once(self, max_batches: int = 4) -> LookupResult:
        """Look up pending DIDs (at most ``max_batches`` requests); commit what was found."""
        result = LookupResult()
        now = utcnow()
        pending = await asyncio.to_thread(
            self.store.authors_to_look_up, "bluesky", self.batch * max_batches, now - self.retry
        )
        for i in range(0, len(pending), self.batch):
            dids = pending[i : i + self.batch]
            profiles = await self._fetch(dids)
            result.requests += 1
            if profiles is None:  # refused or failed: try these again next round
                break
            events = [
                Identity(did=p["did"], handle=p["handle"],
                         display_name=p.get("displayName") or None)
                for p in profiles
                if p.get("did") in dids and _usable(p.get("handle"))
            ]
            if events:
                await asyncio.to_thread(
                    self.store.apply, STREAM_KEY, events, now.isoformat()
                )
            await asyncio.to_thread(self.store.mark_looked_up, dids, now)
            result.asked += len(dids)
            result.resolved += len(events)
        self.total.asked += result.asked
        self.total.resolved += result.resolved
        self.total.requests += result.requests
        return result

    async def run(self, every_s: float = 5.0) -> None:
        """Forever: a round, then a pause (the caller cancels the task to stop)."""
        while True:
            try:
                await self.resolve_once()
            except Exception:  # a store hiccup must not end the loop
                log.exception("identity lookup round failed")
            await asyncio.sleep(every_s)

    async def _fetch(self, dids: list[str]) -> list[dict[str, Any]] | None:
        loop = asyncio.get_running_loop()
        wait = self._next_at - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._next_at = loop.time() + self.min_gap
        try:
            resp = await self._client.get(self.url, params=[("actors", d) for d in dids])
        except httpx.HTTPError as exc:
            log.warning("identity lookup: %s", exc)
            self._next_at = loop.time() + 30.0
            return None
        if resp.status_code == 429 or resp.status_code >= 500:
            self._next_at = loop.time() + _retry_after(resp.headers.get("Retry-After"))
            log.warning("identity lookup: HTTP %s, waiting", resp.status_code)
            return None
        if resp.status_code != 200:
            log.warning("identity lookup: HTTP %s: %s", resp.status_code, resp.text[:200])
            return []  # a bad batch (e.g. an invalid DID): marked, not retried at once
        try:
            profiles = resp.json().get("profiles")
        except ValueError:
            return []
        return [p for p in profiles if isinstance(p, dict)] if isinstance(profiles, list) else []


def _usable(handle: Any) -> bool:
    return isinstance(handle, str) and bool(handle) and handle != INVALID_HANDLE


def _retry_after(value: str | None, default: float = 60.0) -> float:
    wait = parse_retry_after(value)
    return default if wait is None else max(1.0, min(wait, 3600.0))


def lookup_wanted(setting: str, source_kinds: list[str]) -> bool:
    """``auto``: when a Jetstream source runs; ``on``/``off`` as said."""
    if setting == "on":
        return True
    return setting == "auto" and "jetstream" in source_kinds


__all__ = ["DEFAULT_URL", "IdentityLookup", "LookupResult", "lookup_wanted"]
