"""Per-key limits: requests/min, tokens/min, concurrent requests, monthly tokens.

Requests and tokens per minute are sliding windows (a log of recent
amounts), so a client can never burst twice its limit across a minute
boundary the way fixed windows allow. A request is refused when the
requests window is full, or, for token-consuming routes, when the tokens
window already holds the limit (the tokens of a completion are only known
after it ran, so they are charged then). Concurrency is a counter per key.
The monthly quota starts from the usage ledger in the store and counts this
process's charges on top; it is re-read every ``refresh_s`` seconds.

These limits are kept in process unless ``redis_url`` is set: then
:class:`townsquare.service.gate.shared_limits.RedisRateLimiter` keeps the same
windows and concurrency leases in Redis, so every ``serve`` replica sharing it
enforces one budget per key. Without Redis, several replicas behind a load
balancer each enforce the full per-minute and concurrency limits on the
requests they see (a key gets up to N times its tier across N replicas). The
monthly quota is shared through the ledger either way, up to ``refresh_s`` of lag.

Every answer carries the ``x-ratelimit-*`` headers OpenAI sends, and a
refusal carries ``Retry-After`` (and ``retry-after-ms``), which stock
OpenAI clients obey when they back off.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from townsquare.config import Tier
from townsquare.service.gate.auth import Principal
from townsquare.store.base import Store

WINDOW_S = 60.0


class Window:
    """The sum of amounts added during the last ``span`` seconds."""

    __slots__ = ("_log", "_sum", "span")

    def __init__(self, span: float = WINDOW_S) -> None:
        self.span = span
        self._log: deque[tuple[float, int]] = deque()
        self._sum = 0

    def _trim(self, now: float) -> None:
        edge = now - self.span
        log = self._log
        while log and log[0][0] <= edge:
            self._sum -= log.popleft()[1]

    def used(self, now: float) -> int:
        self._trim(now)
        return self._sum

    def add(self, now: float, amount: int) -> None:
        if amount > 0:
            self._log.append((now, amount))
            self._sum += amount

    def wait(self, now: float, limit: int) -> float:
        """Seconds until the window holds less than ``limit`` (0 if it already does)."""
        self._trim(now)
        if self._sum < limit:
            return 0.0
        excess = self._sum - limit + 1
        for t, n in self._log:
            excess -= n
            if excess <= 0:
                return max(0.0, t + self.span - now)
        return self.span

    def reset_in(self, now: float) -> float:
        """Seconds until the oldest amount leaves the window."""
        self._trim(now)
        return max(0.0, self._log[0][0] + self.span - now) if self._log else 0.0


@dataclass(slots=True)
class KeyState:
    requests: Window = field(default_factory=Window)
    tokens: Window = field(default_factory=Window)
    in_flight: int = 0


@dataclass(slots=True)
class Refusal:
    """Why a request was refused, and when to come back."""

    kind: str  # requests | tokens | concurrency | insufficient_quota
    message: str
    retry_after: float
    retryable: bool = True


@dataclass(slots=True)
class Admission:
    """The gate's answer for one request: refused (and why), or admitted with a ticket."""

    refusal: Refusal | None
    ticket: str | None = None


class Limiter(Protocol):
    """What the gate needs of a rate limiter (in process, or shared through Redis)."""

    async def admit(self, who: Principal, uses_tokens: bool) -> Admission: ...

    async def leave(self, who: Principal, admission: Admission) -> None: ...

    def charge_tokens(self, who: Principal, tokens: int) -> None: ...

    def headers(self, who: Principal) -> dict[str, str]: ...

    async def aclose(self) -> None: ...


def format_reset(seconds: float) -> str:
    """OpenAI's duration style for ``x-ratelimit-reset-*``: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{secs}s"


class RateLimiter:
    """Per-minute windows and concurrency for every key this process has seen."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._keys: dict[int, KeyState] = {}

    def state(self, key_id: int) -> KeyState:
        st = self._keys.get(key_id)
        if st is None:
            st = self._keys[key_id] = KeyState()
        return st

    def acquire(self, who: Principal, uses_tokens: bool) -> Refusal | None:
        """Admit a request (count it, take a concurrency slot) or say why not."""
        tier, st, now = who.tier, self.state(who.key_id), self.clock()
        if tier.concurrent_requests and st.in_flight >= tier.concurrent_requests:
            return Refusal(
                "concurrency",
                f"Too many concurrent requests for key {who.name!r} on tier "
                f"{who.tier_name!r}: limit {tier.concurrent_requests}. Wait for one to finish.",
                1.0,
            )
        if tier.requests_per_minute:
            wait = st.requests.wait(now, tier.requests_per_minute)
            if wait > 0:
                return Refusal(
                    "requests",
                    f"Rate limit reached for key {who.name!r} on requests per min (RPM): "
                    f"limit {tier.requests_per_minute}. Please try again in "
                    f"{format_reset(wait)}.",
                    wait,
                )
        if uses_tokens and tier.tokens_per_minute:
            wait = st.tokens.wait(now, tier.tokens_per_minute)
            if wait > 0:
                return Refusal(
                    "tokens",
                    f"Rate limit reached for key {who.name!r} on tokens per min (TPM): "
                    f"limit {tier.tokens_per_minute}. Please try again in {format_reset(wait)}.",
                    wait,
                )
        if tier.requests_per_minute:
            st.requests.add(now, 1)
        st.in_flight += 1
        return None

    async def admit(self, who: Principal, uses_tokens: bool) -> Admission:
        """:meth:`acquire`, in the interface the gate shares with the Redis limiter."""
        return Admission(self.acquire(who, uses_tokens))

    async def leave(self, who: Principal, admission: Admission) -> None:
        self.release(who)

    async def aclose(self) -> None:
        """Nothing to release in process."""

    def release(self, who: Principal) -> None:
        st = self.state(who.key_id)
        st.in_flight = max(0, st.in_flight - 1)

    def charge_tokens(self, who: Principal, tokens: int) -> None:
        if who.tier.tokens_per_minute:
            self.state(who.key_id).tokens.add(self.clock(), tokens)

    def headers(self, who: Principal) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers for this key now (omitted for unlimited figures)."""
        tier, st, now = who.tier, self.state(who.key_id), self.clock()
        out: dict[str, str] = {}
        if tier.requests_per_minute:
            used = st.requests.used(now)
            out["x-ratelimit-limit-requests"] = str(tier.requests_per_minute)
            out["x-ratelimit-remaining-requests"] = str(max(0, tier.requests_per_minute - used))
            out["x-ratelimit-reset-requests"] = format_reset(st.requests.reset_in(now))
        if tier.tokens_per_minute:
            used = st.tokens.used(now)
            out["x-ratelimit-limit-tokens"] = str(tier.tokens_per_minute)
            out["x-ratelimit-remaining-tokens"] = str(max(0, tier.tokens_per_minute - used))
            out["x-ratelimit-reset-tokens"] = format_reset(st.tokens.reset_in(now))
        return out


def month_start(now: datetime) -> datetime:
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def next_month_start(now: datetime) -> datetime:
    return datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class _Quota:
    month: datetime
    base: int  # tokens in the ledger when last read
    base_mark: int  # `charged` at that read
    charged: int  # tokens charged by this process (monotonic)
    read_at: float


class MonthlyQuota:
    """Tokens used this calendar month (UTC) per key: ledger total + local charges.

    ``flush`` (the ledger's) runs before each read so that this process's own
    charges are in the total it reads; charges landing during the read may be
    counted twice until the next read, which errs on the side of the quota.
    """

    def __init__(
        self,
        store: Store,
        flush: Callable[[], object] | None = None,
        refresh_s: float = 60.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.flush = flush
        self.refresh_s = refresh_s
        self.now = now
        self.clock = clock
        self._keys: dict[int, _Quota] = {}

    def _read(self, key_id: int, since: datetime) -> int:
        if self.flush is not None:
            self.flush()
        return self.store.tokens_used(key_id, since)

    async def used(self, key_id: int) -> int:
        month = month_start(self.now())
        q = self._keys.get(key_id)
        if q is None or q.month != month or self.clock() - q.read_at > self.refresh_s:
            charged = q.charged if q is not None and q.month == month else 0
            base = await asyncio.to_thread(self._read, key_id, month)
            q = self._keys.get(key_id)  # another request may have read meanwhile
            if q is None or q.month != month:
                q = self._keys[key_id] = _Quota(month, base, charged, charged, self.clock())
            else:
                q.base, q.base_mark, q.read_at = base, charged, self.clock()
        return q.base + q.charged - q.base_mark

    def charge(self, key_id: int, tokens: int) -> None:
        q = self._keys.get(key_id)
        if q is not None:
            q.charged += tokens

    async def check(self, who: Principal) -> Refusal | None:
        limit = who.tier.monthly_tokens
        if not limit:
            return None
        used = await self.used(who.key_id)
        if used < limit:
            return None
        now = self.now()
        return Refusal(
            "insufficient_quota",
            f"You exceeded your monthly quota of {limit:,} tokens (tier {who.tier_name!r}); "
            f"it renews on {next_month_start(now):%Y-%m-%d} (UTC).",
            (next_month_start(now) - now).total_seconds(),
            retryable=False,
        )


def tier_summary(tier: Tier) -> dict[str, int]:
    return {
        "requests_per_minute": tier.requests_per_minute,
        "tokens_per_minute": tier.tokens_per_minute,
        "concurrent_requests": tier.concurrent_requests,
        "monthly_tokens": tier.monthly_tokens,
    }
