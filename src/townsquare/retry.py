"""One retry policy: capped exponential backoff with jitter, for every loop that tries again.

Everything in townsquare that waits and tries again takes its delays from here:
network sources reconnecting to their upstream, the ingest supervisor
restarting a crashed source, the bus worker backing off a store that is down
(and the redelivery delay it asks JetStream for), webhook delivery, and a
PostgreSQL transaction that lost a deadlock. One exception, on purpose: the
``openai`` LLM backend leaves retries to the OpenAI SDK (``max_retries``), which
already does this for the requests it sends.

A :class:`Backoff` says how long to wait before try ``n``: ``base * 2**n``,
capped at ``cap``, then jittered (the AWS architecture blog's "Exponential
Backoff And Jitter"):

- ``full``: uniform(0, d). Many clients reconnecting to one upstream that just
  came back spread out the most; the default.
- ``equal``: uniform(d/2, d). One client retrying one request never retries
  at once.
- ``none``: exactly d. A delay handed to someone else (JetStream's
  redelivery), which spreads messages out by itself.

A :class:`Retry` adds how many tries in all, an optional deadline, and which
errors are worth another try; :meth:`Retry.call` and :meth:`Retry.acall` run a
function under it, and :meth:`Retry.tries` / :meth:`Retry.atries` hand out the
try numbers (sleeping in between) for loops that decide by themselves whether
a try failed (an HTTP status, not an exception).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal, TypeVar

T = TypeVar("T")
Jitter = Literal["full", "equal", "none"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays growing from ``base`` seconds, doubling per try, never above ``cap``."""

    base: float = 0.5
    cap: float = 30.0
    jitter: Jitter = "full"

    def ceiling(self, n: int) -> float:
        """The un-jittered delay after ``n`` failures in a row (``n`` from 0)."""
        return min(self.cap, self.base * 2.0 ** min(max(n, 0), 64))

    def delay(self, n: int, rng: random.Random | None = None) -> float:
        """How long to wait after the ``n``-th failure in a row (``n`` from 0)."""
        d = self.ceiling(n)
        if self.jitter == "none":
            return d
        r = (rng or random).random()
        return d * r if self.jitter == "full" else d * (0.5 + r / 2)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The delays after 1, 2, 3... failures in a row, forever (reset: ask again)."""
        n = 0
        while True:
            yield self.delay(n, rng)
            n += 1


def backoff_delays(
    base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Full-jitter delays forever: what a reconnect-forever loop sleeps between tries."""
    return Backoff(base, cap, "full").delays(rng)


@dataclass(frozen=True, slots=True)
class Retry:
    """At most ``attempts`` tries (the first included), no try started later than
    ``deadline_s`` after the first; ``retry_on`` are the errors worth another."""

    attempts: int = 3
    backoff: Backoff = Backoff()
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    deadline_s: float | None = None

    def tries(self) -> Tries:
        """Try numbers 0, 1, 2... for a ``for`` loop, sleeping (blocking) before each retry."""
        return Tries(self)

    def atries(self) -> AsyncTries:
        """Try numbers for an ``async for`` loop, sleeping (``asyncio``) before each retry."""
        return AsyncTries(self)

    def call(
        self, fn: Callable[[], T], on_retry: Callable[[BaseException, int], None] | None = None
    ) -> T:
        """``fn()``, tried again on ``retry_on`` errors; the last error is raised."""
        tries = self.tries()
        for n in tries:
            try:
                return fn()
            except self.retry_on as exc:
                if not tries.more():
                    raise
                if on_retry is not None:
                    on_retry(exc, n + 1)
        raise AssertionError("unreachable: a Retry always allows one try")

    async def acall(
        self,
        fn: Callable[[], Awaitable[T]],
        on_retry: Callable[[BaseException, int], None] | None = None,
    ) -> T:
        """``await fn()``, tried again on ``retry_on`` errors; the last error is raised."""
        tries = self.atries()
        async for n in tries:
            try:
                return await fn()
            except self.retry_on as exc:
                if not tries.more():
                    raise
                if on_retry is not None:
                    on_retry(exc, n + 1)
        raise AssertionError("unreachable: a Retry always allows one try")


class Tries:
    """The try numbers of one operation under a :class:`Retry` (sync)."""

    def __init__(self, policy: Retry) -> None:
        self.policy = policy
        self._n = 0
        self._start: float | None = None
        self._wait: float | None = None

    def more(self) -> bool:
        """Whether another try is allowed (attempts left, and it starts before the deadline)."""
        p = self.policy
        if self._n >= max(1, p.attempts):
            return False
        if self._n == 0 or self._start is None:
            return True
        if self._wait is None:
            self._wait = p.backoff.delay(self._n - 1)
        return p.deadline_s is None or (
            time.monotonic() + self._wait - self._start <= p.deadline_s
        )

    def set_wait(self, seconds: float) -> None:
        """Wait this long before the next try instead (the server said how long)."""
        self._wait = max(0.0, seconds)

    def _advance(self) -> tuple[int, float]:
        if not self.more():
            raise _Done
        n, wait = self._n, self._wait or 0.0
        self._n, self._wait = n + 1, None
        if self._start is None:
            self._start = time.monotonic()
        return n, wait

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        try:
            n, wait = self._advance()
        except _Done:
            raise StopIteration from None
        if wait > 0:
            time.sleep(wait)
        return n


class AsyncTries(Tries):
    """The try numbers of one operation under a :class:`Retry` (``async for``)."""

    def __aiter__(self) -> AsyncIterator[int]:
        return self

    async def __anext__(self) -> int:
        try:
            n, wait = self._advance()
        except _Done:
            raise StopAsyncIteration from None
        if wait > 0:
            await asyncio.sleep(wait)
        return n

    def __next__(self) -> int:  # a blocking sleep in async code would stall the loop
        raise TypeError("use 'async for' with Retry.atries()")


class _Done(Exception):
    pass


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds (``"120"`` or an HTTP date); None if absent
    or unreadable."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
