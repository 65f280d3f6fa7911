"""Events as bus messages: versioned JSON, with a message id JetStream de-duplicates on.

One message per event, ``{"v": 1, "op": ..., ...}``:

- ``upsert``: the whole normalized post (``raw`` included, for audit); message
  id ``<post id>#<digest>`` where the digest covers the fields an edit may
  change. Republishing the same post (a publisher restarted from an older
  cursor, a Jetstream rewind) reuses the id and JetStream drops it within the
  duplicate window; an *edit* of the post has a new digest and goes through.
  A bare post id would make JetStream drop every edit made within the window.
- ``delete``: ``delete:<post id>``; ``identity``: ``identity:<did>:<handle>``;
  ``quarantine`` (input the publisher could not parse, kept with its reason):
  ``quarantine:<sha256>``.

Ids that could break a header (control characters, very long) are replaced
by their SHA-256. Decoding validates everything and raises
:class:`DecodeError` with a reason, which the index worker turns into a
quarantine record: one bad message never blocks the stream.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from townsquare.errors import DataError
from townsquare.model import Delete, Engage, Event, Identity, Post, Quarantine, Upsert, iso
from townsquare.timeutil import parse_time

VERSION = 1
MSG_ID_HEADER = "Nats-Msg-Id"
_MAX_ID = 256


class DecodeError(DataError, ValueError):
    """A message that is not a townsquare event; the text says why."""


@dataclass(frozen=True, slots=True)
class Envelope:
    msg_id: str
    data: bytes
    op: str


def _safe_id(text: str) -> str:
    if len(text) > _MAX_ID or not text.isprintable():
        return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text


def _digest(p: Post) -> str:
    fields = (p.text, iso(p.created_at), p.author, p.author_name, p.url, p.lang, p.reply_to,
              p.quote_of, " ".join(p.hashtags), p.likes, p.reposts, p.replies, p.quotes)
    return hashlib.blake2b(json.dumps(fields).encode(), digest_size=8).hexdigest()


def _raw(raw: Any) -> Any:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    return raw


def post_dict(p: Post, with_raw: bool = True) -> dict[str, Any]:
    out = p.public_dict()
    out.pop("indexed_at", None)
    if with_raw and p.raw is not None:
        out["raw"] = _raw(p.raw)
    return out


def _dumps(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: escaped, so the receiver can say what it is
        return json.dumps(obj, separators=(",", ":"), default=str).encode()


def encode(event: Event, max_bytes: int) -> Envelope:
    """The message for one event; a post too large for the bus loses its ``raw`` first."""
    if isinstance(event, Upsert):
        p = event.post
        msg_id = _safe_id(f"{p.id}#{_digest(p)}")
        data = _dumps({"v": VERSION, "op": "upsert", "post": post_dict(p)})
        if len(data) > max_bytes:
            data = _dumps({"v": VERSION, "op": "upsert", "post": post_dict(p, with_raw=False)})
        if len(data) > max_bytes:
            return encode(Quarantine(p.source, data[:16384],
                                     f"post larger than the bus's {max_bytes} byte limit"),
                          max_bytes)
        return Envelope(msg_id, data, "upsert")
    if isinstance(event, Delete):
        return Envelope(_safe_id(f"delete:{event.id}"),
                        _dumps({"v": VERSION, "op": "delete", "id": event.id}), "delete")
    if isinstance(event, Identity):
        return Envelope(
            _safe_id(f"identity:{event.did}:{event.handle}"),
            _dumps({"v": VERSION, "op": "identity", "did": event.did, "handle": event.handle,
                    "display_name": event.display_name}),
            "identity",
        )
    if isinstance(event, Engage):
        return Envelope(
            _safe_id(f"engage:{event.post_id}:{event.record or _digest_engage(event)}"),
            _dumps({"v": VERSION, "op": "engage", "post_id": event.post_id,
                    "likes": event.likes, "reposts": event.reposts, "record": event.record}),
            "engage",
        )
    digest = hashlib.sha256(event.raw + b"\0" + event.reason.encode()).hexdigest()
    return Envelope(
        f"quarantine:{digest}",
        _dumps({"v": VERSION, "op": "quarantine", "source": event.source,
                "reason": event.reason, "raw": base64.b64encode(event.raw).decode()}),
        "quarantine",
    )


def decode(data: bytes) -> Event:
    """The event a message carries, or :class:`DecodeError` saying what is wrong.

    Nothing else escapes: a message nested 100,000 deep or holding values of
    unexpected types is a DecodeError too, so the worker quarantines it. The
    post's bounds (time, size, Unicode) are checked where every source's are,
    at admission in the ingest pipeline.
    """
    try:
        return _decode(data)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"unreadable message: {type(exc).__name__}: {exc}") from None


def _decode(data: bytes) -> Event:
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("v") != VERSION:
        raise DecodeError(f"unsupported message version {obj.get('v')!r} (expected {VERSION})")
    op = obj.get("op")
    if op == "upsert":
        return Upsert(_post(obj.get("post")))
    if op == "delete":
        return Delete(id=_str(obj, "id"))
    if op == "identity":
        return Identity(did=_str(obj, "did"), handle=_str(obj, "handle"),
                        display_name=_opt(obj, "display_name"))
    if op == "engage":
        return Engage(post_id=_str(obj, "post_id"), likes=_int(obj, "likes"),
                      reposts=_int(obj, "reposts"), record=_opt(obj, "record") or "")
    if op == "quarantine":
        try:
            raw = base64.b64decode(_str(obj, "raw", empty=True), validate=True)
        except ValueError as exc:
            raise DecodeError(f"quarantine raw is not base64: {exc}") from None
        return Quarantine(source=_str(obj, "source"), raw=raw, reason=_str(obj, "reason"))
    raise DecodeError(f"unknown op {op!r}")


def _str(obj: dict[str, Any], key: str, empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or (not value and not empty):
        raise DecodeError(f"field {key!r} must be a non-empty string")
    return value


def _opt(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise DecodeError(f"field {key!r} must be a string or null")
    return value


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"field {key!r} must be an integer")
    return value


def _count(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DecodeError(f"field {key!r} must be a count or null")
    return value


def _digest_engage(event: Engage) -> str:
    return hashlib.sha256(f"{event.post_id}:{event.likes}:{event.reposts}".encode()).hexdigest()


def _tags(obj: dict[str, Any], key: str) -> list[str]:
    value = obj.get(key) or []
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise DecodeError(f"field {key!r} must be a list of strings")
    return value


def _post(obj: Any) -> Post:
    if not isinstance(obj, dict):
        raise DecodeError("upsert without a post object")
    pid, source, author = _str(obj, "id"), _str(obj, "source"), _str(obj, "author")
    when = obj.get("created_at")
    if isinstance(when, bool) or not isinstance(when, str | int | float):
        raise DecodeError("field 'created_at' must be an ISO 8601 string or epoch seconds")
    try:
        created = parse_time(when)
    except ValueError as exc:
        raise DecodeError(f"bad created_at: {exc}") from None
    return Post(
        id=pid,
        source=source,
        author=author,
        text=_str(obj, "text", empty=True),
        created_at=created,
        author_name=_opt(obj, "author_name"),
        author_id=_opt(obj, "author_id"),
        url=_opt(obj, "url"),
        lang=_opt(obj, "lang"),
        hashtags=_tags(obj, "hashtags"),
        mentions=_tags(obj, "mentions"),
        reply_to=_opt(obj, "reply_to"),
        quote_of=_opt(obj, "quote_of"),
        raw=obj.get("raw"),
        likes=_count(obj, "likes"),
        reposts=_count(obj, "reposts"),
        replies=_count(obj, "replies"),
        quotes=_count(obj, "quotes"),
    )
