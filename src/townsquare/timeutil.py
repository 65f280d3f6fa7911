"""Parsing the many ways times arrive: ISO 8601, epoch seconds, and relative spans.

``since``/``until`` filters accept absolute times (``2026-11-20``,
``2026-11-20T10:00:00Z``, epoch seconds) or relative ones (``90s``, ``15m``,
``2h``, ``3d``, ``1w``), which mean "that long before now".
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_REL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|w)\s*$", re.IGNORECASE)
_EPOCH_RE = re.compile(r"-?\d+(\.\d+)?")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "w": 604800}


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_duration(text: str) -> timedelta:
    """``'2h'`` -> 2 hours. Raises ValueError with the accepted forms."""
    m = _REL_RE.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 2h, 3d, 1w)")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_time(value: str | int | float | datetime) -> datetime:
    """Parse an absolute time (ISO 8601 or epoch seconds) into aware UTC.

    Raises ValueError, whatever is wrong (a JSON array, a year out of range,
    an epoch beyond what a datetime holds), so callers catch one thing.
    """
    if type(value) is str and "-" in value[1:]:
        # The common case (extended ISO 8601), first and cheaply: ingest parses
        # one per post. Python 3.11's fromisoformat takes a trailing "Z" too.
        # Digit-only strings never get here, so they stay epoch seconds.
        try:
            dt = datetime.fromisoformat(value)
            return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
        except (ValueError, OverflowError):
            pass  # the general path below says why
    try:
        return _parse_time(value)
    except (OverflowError, OSError) as exc:
        raise ValueError(f"not a time: {value!r:.80} ({exc})") from None


def _parse_time(value: str | int | float | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return _from_epoch(float(value))
    if not isinstance(value, str):  # JSON hands us lists and objects too
        raise ValueError(f"not a time: a JSON {_json_type(value)}, not a string or a number")
    text = value.strip()
    if _EPOCH_RE.fullmatch(text):
        return _from_epoch(float(text))
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not a time: {value!r:.200} (use ISO 8601 like 2026-11-20T10:00:00Z, "
            "or epoch seconds)"
        ) from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _from_epoch(x: float) -> datetime:
    # Accept milliseconds and microseconds too: sources disagree.
    if abs(x) > 1e14:
        x /= 1e6
    elif abs(x) > 1e11:
        x /= 1e3
    if x != x:  # NaN: fromtimestamp's own message ("Invalid value NaN") says less
        raise ValueError("not a time: NaN")
    return datetime.fromtimestamp(x, UTC)


def parse_since(value: str | datetime | None, now: datetime | None = None) -> datetime | None:
    """A filter bound: relative (``'2h'`` = two hours ago) or absolute."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return parse_time(value)
    if _REL_RE.match(value):
        return (now or utcnow()) - parse_duration(value)
    return parse_time(value)


def humanize_age(dt: datetime, now: datetime | None = None) -> str:
    """'42s', '5m', '3h', '2d': the age shown beside a cited post."""
    secs = max(0, int(((now or utcnow()) - dt).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"
