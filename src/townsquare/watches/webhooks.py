"""Webhook delivery: how each delivery is checked, signed and sent.

Every connection, and every redirect hop (followed by hand, at most 3), goes
through :class:`~townsquare.watches.guard.DestinationGuard`: the host
is resolved, every address checked, and the request sent to the checked
address (the original name goes in ``Host`` and in TLS SNI, so certificates
are still verified against it). A name that resolves to a public address at
creation and to ``127.0.0.1`` later (DNS rebinding) is refused then.

:class:`WebhookDispatcher` delivers from one background event loop, with a
queue and a worker **per destination** (the owning key and the URL's
origin): a receiver that stalls holds up only its own deliveries, never
another key's. Each attempt has a total deadline (``timeout_s``, whatever
the receiver trickles), failures are retried with exponential backoff and
jitter, a 4xx other than 408/429 is not retried, and a circuit breaker per
destination stops trying after ``breaker_failures`` failed deliveries in a
row: events for it are dropped (and counted) for a cooldown that doubles
while it keeps failing, then one delivery is tried again.

Every delivery is signed (see ``docs/SECURITY.md``)::

    X-Townsquare-Event-Id:   evt_<hex>        (the same across retries)
    X-Townsquare-Timestamp:  <unix seconds>   (of this attempt)
    X-Townsquare-Signature:  v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

with the watch's own secret (``whsec_...``, returned when the watch is created).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from townsquare import __version__
from townsquare.retry import Backoff, Retry
from townsquare.watches.guard import DestinationGuard, DestinationRefused, Target

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Townsquare-Signature"
TIMESTAMP_HEADER = "X-Townsquare-Timestamp"
EVENT_ID_HEADER = "X-Townsquare-Event-Id"
MAX_REDIRECTS = 3

def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Townsquare-Signature`` value for one attempt."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance_s: float = 300.0,
           now: float | None = None) -> bool:
    """What a receiver does (see docs/SECURITY.md): check the MAC and the timestamp's age."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        timestamp = int(lower[TIMESTAMP_HEADER.lower()])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body)
    given = lower.get(SIGNATURE_HEADER.lower(), "")
    return any(hmac.compare_digest(expected, part.strip()) for part in given.split(","))


@dataclass
class _Destination:
    key: tuple[Any, ...]
    queue: asyncio.Queue[tuple[str, str, bytes, str]]
    task: asyncio.Task[None] | None = None
    failures: int = 0  # deliveries failed in a row
    open_until: float = 0.0
    cooldown_s: float = 0.0


@dataclass
class DispatcherStats:
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    refused: int = 0
    per_destination: dict[str, int] = field(default_factory=dict)


class WebhookDispatcher:
    """Signs and delivers webhook events, one independent worker per destination."""

    def __init__(
        self,
        guard: DestinationGuard | None = None,
        timeout_s: float = 5.0,
        attempts: int = 3,
        backoff_s: float = 0.5,
        breaker_failures: int = 5,
        breaker_cooldown_s: float = 30.0,
        backlog: int = 1000,
        idle_s: float = 30.0,
    ) -> None:
        self.guard = guard or DestinationGuard()
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.breaker_failures = breaker_failures
        self.breaker_cooldown_s = breaker_cooldown_s
        self.backlog = backlog
        self.idle_s = idle_s
        self.stats = DispatcherStats()
        self._dests: dict[tuple[Any, ...], _Destination] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None
        self._lock = threading.Lock()

    # --- any thread ---------------------------------------------------------------

    def submit(self, owner: Any, url: str, secret: str, event: dict[str, Any]) -> None:
        """Queue one event for ``url`` (never blocks: ingest calls this)."""
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        event_id = "evt_" + secrets.token_hex(12)
        try:
            origin = urlsplit(url)._replace(path="", query="", fragment="").geturl()
        except ValueError:
            origin = url
        loop = self._ensure_loop()
        loop.call_soon_threadsafe(self._enqueue, (owner, origin), url, secret, body, event_id)

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(5)
        except Exception:  # pragma: no cover - a stuck shutdown must not stop the server's
            log.exception("webhooks: shutdown")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)

    async def _shutdown(self) -> None:
        tasks = [d.task for d in self._dests.values() if d.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    try:
                        loop.run_forever()
                    finally:
                        loop.close()

                self._thread = threading.Thread(target=run, name="townsquare-webhooks",
                                                daemon=True)
                self._thread.start()
                ready.wait(5)
                self._loop = loop
            return self._loop

    # --- the delivery loop --------------------------------------------------------

    def _enqueue(self, key: tuple[Any, ...], url: str, secret: str, body: bytes,
                 event_id: str) -> None:
        dest = self._dests.get(key)
        if dest is None:
            dest = self._dests[key] = _Destination(key, asyncio.Queue(self.backlog))
        try:
            dest.queue.put_nowait((url, secret, body, event_id))
        except asyncio.QueueFull:
            self.stats.dropped += 1
            log.warning("webhook backlog full for %s; dropped an event", key[1])
            return
        if dest.task is None or dest.task.done():
            dest.task = asyncio.get_running_loop().create_task(self._worker(dest))

    async def _worker(self, dest: _Destination) -> None:
        while True:
            try:
                url, secret, body, event_id = await asyncio.wait_for(dest.queue.get(),
                                                                     self.idle_s)
            except TimeoutError:
                return
            now = time.monotonic()
            if now < dest.open_until:
                self.stats.dropped += 1  # the breaker is open: do not pile up on a dead host
                continue
            ok = await self._deliver(url, secret, body, event_id)
            if ok:
                dest.failures, dest.cooldown_s = 0, 0.0
                self.stats.delivered += 1
                self.stats.per_destination[dest.key[1]] = (
                    self.stats.per_destination.get(dest.key[1], 0) + 1)
                continue
            self.stats.failed += 1
            dest.failures += 1
            if dest.failures >= self.breaker_failures:
                dest.cooldown_s = min(600.0, (dest.cooldown_s * 2) or self.breaker_cooldown_s)
                dest.open_until = time.monotonic() + dest.cooldown_s
                log.warning("webhook %s failed %d times in a row: paused %.0f s",
                            dest.key[1], dest.failures, dest.cooldown_s)

    async def _deliver(self, url: str, secret: str, body: bytes, event_id: str) -> bool:
        retry = Retry(self.attempts, Backoff(self.backoff_s, jitter="equal"))
        async for attempt in retry.atries():
            try:
                status = await asyncio.wait_for(
                    self._post(url, secret, body, event_id), self.timeout_s)
            except DestinationRefused as exc:
                self.stats.refused += 1
                log.warning("webhook refused: %s", exc)
                return False
            except (httpx.HTTPError, TimeoutError, OSError) as exc:
                log.info("webhook %s failed (attempt %d): %s", url, attempt + 1, exc)
            else:
                if 200 <= status < 300:
                    return True
                if status < 500 and status not in (408, 429):
                    log.warning("webhook %s answered %s", url, status)
                    return False  # a 4xx will not get better by retrying
        log.warning("webhook %s: gave up after %d attempts", url, self.attempts)
        return False

    async def _post(self, url: str, secret: str, body: bytes, event_id: str) -> int:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                             timeout=self.timeout_s)
        for _ in range(MAX_REDIRECTS + 1):
            target = await asyncio.to_thread(self.guard.check, url)
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"townsquare-webhooks/{__version__}",
                EVENT_ID_HEADER: event_id,
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(secret, timestamp, body),
                "Host": _host_header(target),
            }
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            resp = await self._client.post(_pinned(target), content=body, headers=headers,
                                           extensions=extensions)
            location = resp.headers.get("location")
            if resp.is_redirect and location:
                url = urljoin(url, location)  # checked again at the top of the loop
                continue
            return resp.status_code
        raise httpx.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def _pinned(target: Target) -> str:
    """The URL with its host replaced by the checked address (no second DNS lookup)."""
    parts = urlsplit(target.url)
    address = f"[{target.address}]" if ":" in target.address else target.address
    return parts._replace(netloc=f"{address}:{target.port}").geturl()
