"""Field types shared by the request models."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _encodable(value: str) -> str:
    """Reject text that is not valid Unicode (JSON allows lone surrogates; SQLite does not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogate escapes)") from None
    return value


#: A string that can be stored and searched: valid UTF-8 once encoded.
Text = Annotated[str, AfterValidator(_encodable)]
