"""The sliding windows trends are computed over, and the burst score.

A window is a number of time buckets ending at the detector's "now". Each
window compares what it holds against a baseline that decays with its own
time constant: the 5-minute window against roughly the last hour, the hour
against the last day, the day against the last week. The comparison is of
*shares* (a feature's author-minutes over all author-minutes), so a stream
that doubles its volume at lunch does not make every word burst.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One sliding window.

    ``min_expected`` floors the expected count: a feature never seen before
    has an expectation near zero, and without a floor three mentions of a
    typo would outrank a real event.
    """

    name: str
    seconds: int
    baseline_tau_s: float
    min_expected: float = 1.0


DEFAULT_WINDOWS: tuple[WindowSpec, ...] = (
    WindowSpec("5m", 5 * 60, 3600.0, 1.0),
    WindowSpec("1h", 3600, 86400.0, 2.0),
    WindowSpec("24h", 86400, 7 * 86400.0, 3.0),
)


def burst_score(count: float, expected: float) -> float:
    """Signed-root Poisson deviance of ``count`` against ``expected``; 0 when not above it.

    Reads like a z-score (about 3 is notable, 10 is a lot) but stays honest
    for the small counts a 5-minute window holds, where ``(c - e) / sqrt(e)``
    explodes.
    """
    if count <= expected or expected <= 0.0:
        return 0.0
    return math.sqrt(2.0 * (count * math.log(count / expected) - (count - expected)))
