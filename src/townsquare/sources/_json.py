"""JSON for the ingest hot path: orjson where it reads a document as the standard library does.

Sources parse one JSON document per post (a JSONL line, a Jetstream
message); the standard library's parser is the largest single cost of a
line after the store. ``orjson`` reads the same documents about 2-3x
faster. It refuses some that :func:`json.loads` accepts (``NaN``, lone
surrogate escapes, nesting past 1,024 levels); those, and every document it
cannot read, go to :func:`json.loads`, so what is accepted, what it becomes
and the error a quarantine record quotes are the standard library's.

One difference remains: orjson reads an integer beyond 64 bits as a float
where :func:`json.loads` gives an ``int``. A caller that needs an integer
field exact re-reads the document with :func:`exact` when that field comes
back a float.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: str | bytes) -> Any:
    """``json.loads(data)``, faster for the documents orjson reads (see the module)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def exact(data: str | bytes) -> Any:
    """``json.loads(data)``: integers of any size stay integers."""
    return json.loads(data)


__all__ = ["exact", "loads"]
