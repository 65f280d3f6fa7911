"""The one retry policy: delays, tries, which errors are retried, Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from itertools import islice

import pytest

from townsquare.retry import Backoff, Retry, backoff_delays, parse_retry_after


def test_delays_double_up_to_the_cap_within_their_jitter() -> None:
    rng = random.Random(7)
    full = Backoff(base=0.5, cap=4.0, jitter="full")
    equal = Backoff(base=0.5, cap=4.0, jitter="equal")
    none = Backoff(base=0.5, cap=4.0, jitter="none")
    assert [none.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for n in range(8):
        ceiling = none.delay(n)
        assert 0 <= full.delay(n, rng) <= ceiling
        assert ceiling / 2 <= equal.delay(n, rng) <= ceiling
    assert none.delay(10_000) == 4.0  # no overflow after a very long outage
    assert all(0 <= d <= 2.0 for d in islice(backoff_delays(0.1, 2.0, rng), 50))


def test_call_retries_retryable_errors_then_raises_the_last() -> None:
    calls: list[int] = []
    retried: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("blip")
        return "ok"

    policy = Retry(attempts=3, backoff=Backoff(0.001, 0.002), retry_on=(ConnectionError,))
    assert policy.call(flaky, on_retry=lambda exc, n: retried.append(n)) == "ok"
    assert len(calls) == 3 and retried == [1, 2]

    calls.clear()
    with pytest.raises(ConnectionError):
        Retry(attempts=2, backoff=Backoff(0.001), retry_on=(ConnectionError,)).call(flaky)
    assert len(calls) == 2


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        Retry(attempts=5, backoff=Backoff(0.001), retry_on=(ConnectionError,)).call(broken)
    assert len(calls) == 1


async def test_async_tries_stop_at_the_deadline() -> None:
    seen = [n async for n in Retry(attempts=100, backoff=Backoff(0.02, 0.02, "none"),
                                   deadline_s=0.05).atries()]
    assert seen == [0, 1, 2]  # tries at about 0, 0.02 and 0.04 s; 0.06 is past it

    async def fails() -> None:
        raise TimeoutError

    with pytest.raises(TimeoutError):
        await Retry(attempts=3, backoff=Backoff(0.001), retry_on=(TimeoutError,)).acall(fails)


async def test_async_tries_refuse_a_blocking_for_loop() -> None:
    with pytest.raises(TypeError):
        for _ in Retry().atries():  # type: ignore[attr-defined]
            pass


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True),
                             now) == 90.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
