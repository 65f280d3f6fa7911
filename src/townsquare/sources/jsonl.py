"""``jsonl``: posts as JSON Lines from a file, a glob, or ``-`` (stdin).

One JSON object per line. Required: ``id``, ``author``, ``text``,
``created_at`` (ISO 8601 or epoch seconds/ms). Optional: ``url``, ``lang``,
``author_name``, ``reply_to``, ``quote_of``. A line ``{"id": X, "deleted": true}``
deletes post X. Post ids become ``jsonl:<id>``.

The cursor is the byte offset after the last complete line of each file, so a
restart resumes exactly where the last committed batch ended; a line still
being written (no newline yet) is left for the next read. Without
``--follow`` the source stops at the end of its input; with it, it tails the
file(s) like ``tail -f``. Offsets are kept by absolute path, so the same file
named another way (``./x.jsonl``, ``x.jsonl``) resumes rather than re-reads.

Bad input never stops a file: every line that is not a usable record (not
JSON, nested 100,000 deep, fields of the wrong type, longer than
``MAX_LINE_BYTES``) becomes a quarantine record with the reason, and the
lines around it are ingested.
"""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from townsquare.model import QUARANTINE_RAW_CAP, Batch, Delete, Event, Post, Upsert, quarantine
from townsquare.sources import SOURCES
from townsquare.sources import _json as fast_json
from townsquare.sources.base import Source, SourceError
from townsquare.timeutil import parse_time

log = logging.getLogger(__name__)

REQUIRED = ("id", "author", "text", "created_at")
OPTIONAL_STRINGS = ("author_name", "url", "lang")
#: Lines per batch (one transaction): bulk loads amortize the commit; a
#: tailed file's batch holds only what has arrived, so freshness is unaffected.
MAX_BATCH_LINES = 5000
POLL_S = 0.05
#: A line longer than this is quarantined unread (its head kept) and skipped, so
#: one huge line costs neither memory nor minutes; shorter ones are parsed and
#: their text clipped at admission (``max_post_chars``).
MAX_LINE_BYTES = 16 * 1024 * 1024


def parse_line(line: bytes | str, source: str = "jsonl") -> Event:
    """One line -> Upsert, Delete, or Quarantine (with the reason); never raises.

    Whatever a line holds (a 100,000-deep array, an id that is an object, a
    time that is a list), it becomes a quarantine record, never an exception
    that would stop the file.
    """
    try:
        text = line
        if isinstance(line, bytes):
            try:  # decoded once: json.loads and the raw record both take the str
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                text = line  # json.loads reads UTF-16/32 bytes itself, or says why not
        try:
            obj = fast_json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return quarantine(source, line, f"invalid JSON: {exc}")
        if type(obj) is not dict:
            return quarantine(source, line, f"expected a JSON object, got {type(obj).__name__}")
        if float in (type(obj.get("id")), type(obj.get("reply_to")), type(obj.get("quote_of")),
                     type(obj.get("created_at"))):
            obj = fast_json.exact(text)  # an integer beyond 64 bits stays an integer
        get = obj.get
        pid = get("id")
        author: Any = get("author")
        body: Any = get("text")
        if get("deleted") is True and pid not in (None, ""):
            if not _is_id(pid):
                return quarantine(source, line, "field 'id' must be a string or an integer")
            return Delete(id=f"{source}:{pid}")
        author_name, url, lang = get("author_name"), get("url"), get("lang")
        reply_to, quote_of = get("reply_to"), get("quote_of")
        # The common case in one expression; anything else is described below.
        if not (
            type(author) is str and author and type(body) is str and body
            and ((type(pid) is str and pid) or type(pid) is int)
            and (author_name is None or type(author_name) is str)
            and (url is None or type(url) is str) and (lang is None or type(lang) is str)
            and (reply_to is None or type(reply_to) in (str, int))
            and (quote_of is None or type(quote_of) in (str, int))
        ) and (problem := _problem(obj)):
            return quarantine(source, line, problem)
        when = get("created_at")
        if when is None or when == "":
            return quarantine(source, line, "missing required field(s): created_at")
        try:
            created = parse_time(when)
        except ValueError as exc:
            return quarantine(source, line, f"bad created_at: {exc}")
        return Upsert(Post(
            id=f"{source}:{pid}",
            source=source,
            author=author.lstrip("@"),
            author_name=author_name or None,
            text=body,
            created_at=created,
            url=url or None,
            lang=_lang(lang),
            reply_to=f"{source}:{reply_to}" if reply_to not in (None, "") else None,
            quote_of=f"{source}:{quote_of}" if quote_of not in (None, "") else None,
            raw=text if isinstance(text, str) else text.decode("utf-8", "replace"),
        ))
    except Exception as exc:  # RecursionError from deep nesting, anything unforeseen
        return quarantine(source, line, f"unreadable record: {type(exc).__name__}: {exc}")


def _problem(obj: dict[str, Any]) -> str | None:
    """What makes a record unusable, the first thing found (None: nothing)."""
    missing = [k for k in REQUIRED if obj.get(k) in (None, "")]
    if missing:
        return f"missing required field(s): {', '.join(missing)}"
    bad = [k for k in ("author", "text") if not isinstance(obj[k], str)]
    bad += [k for k in OPTIONAL_STRINGS if not isinstance(obj.get(k), str | None)]
    if bad:
        return f"field(s) must be strings: {', '.join(bad)}"
    bad = [k for k in ("id", "reply_to", "quote_of") if not _is_id(obj.get(k), k != "id")]
    if bad:
        return f"field(s) must be strings or integers: {', '.join(bad)}"
    return None


def _is_id(value: Any, optional: bool = False) -> bool:
    """An id is a string or an integer (not a bool, a float, an object...)."""
    if value is None or value == "":
        return optional
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _lang(value: Any) -> str | None:
    """Primary subtag, lower-cased (``en-US`` -> ``en``), as the other sources store it."""
    if isinstance(value, str) and len(value) == 2 and value.isalpha() and value.islower():
        return value  # already a bare lower-case code: the common case
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().replace("_", "-").split("-")[0].lower()


class JsonlSource(Source):
    kind = "jsonl"

    def __init__(self, target: str | None, follow: bool = False, **options: Any) -> None:
        if options:
            raise SourceError(f"jsonl does not take option(s): {', '.join(options)}")
        if not target:
            raise SourceError("jsonl needs a file, a glob, or - for stdin")
        self.target = target
        self.follow = follow
        self.connected = True
        self.last_error: str | None = None
        #: Paths whose current line is overlong: read on to its end, unparsed.
        self._skipping: set[str] = set()
        if not follow and target != "-" and not self._paths():
            raise SourceError(f"no files match: {target}")

    @property
    def key(self) -> str:
        if self.target == "-":
            return "jsonl:-"
        return f"jsonl:{os.path.abspath(self.target)}"

    def _paths(self) -> list[str]:
        """The files to read, as absolute paths: ``x.jsonl``, ``./x.jsonl`` and
        ``/abs/x.jsonl`` are one file, under one cursor offset."""
        if self.target == "-":
            return ["-"]
        if any(c in self.target for c in "*?["):
            return sorted(os.path.abspath(p) for p in glob.glob(self.target))
        if not Path(self.target).exists() and not self.follow:
            raise SourceError(f"no such file: {self.target}")
        return [os.path.abspath(self.target)]

    async def stream(self, cursor: str | None) -> AsyncIterator[Batch]:
        offsets = _read_offsets(cursor)
        if self.target == "-":
            async for batch in self._stream_stdin():
                yield batch
            return
        handles: dict[str, IO[bytes]] = {}
        pending: dict[str, bytes] = {}
        try:
            while True:
                progressed = False
                for path in self._paths():
                    fh = handles.get(path)
                    if fh is None:
                        try:
                            fh = open(path, "rb")  # noqa: SIM115 - kept open while tailing
                        except FileNotFoundError:
                            continue
                        size = os.fstat(fh.fileno()).st_size
                        start = offsets.get(path, 0)
                        fh.seek(start if start <= size else 0)  # truncated: start over
                        offsets[path] = fh.tell()
                        handles[path] = fh
                        pending[path] = b""
                    async for batch in self._drain(path, fh, offsets, pending):
                        progressed = True
                        yield batch
                if not self.follow:
                    return
                if not progressed:
                    await asyncio.sleep(POLL_S)
        finally:
            for fh in handles.values():
                fh.close()

    async def _drain(
        self, path: str, fh: IO[bytes], offsets: dict[str, int], pending: dict[str, bytes]
    ) -> AsyncIterator[Batch]:
        while True:
            events: list[Event] = []
            while len(events) < MAX_BATCH_LINES:
                line = fh.readline(MAX_LINE_BYTES + 1)
                if not line:
                    break
                if path in self._skipping:  # the rest of an overlong line
                    offsets[path] += len(line)
                    if line.endswith(b"\n"):
                        self._skipping.discard(path)
                    continue
                if not line.endswith(b"\n"):
                    if len(pending[path]) + len(line) > MAX_LINE_BYTES:
                        head = (pending[path] or line)[:QUARANTINE_RAW_CAP]
                        offsets[path] += len(pending[path]) + len(line)
                        pending[path] = b""
                        self._skipping.add(path)
                        events.append(_overlong(head))
                        continue
                    if self.follow:
                        # A writer is mid-line: keep the fragment, don't advance.
                        pending[path] += line
                        break
                    line += b"\n"
                if pending[path]:
                    line, pending[path] = pending[path] + line, b""
                offsets[path] += len(line)
                stripped = line.strip()
                if stripped:
                    events.append(parse_line(stripped))
            if not events:
                return
            yield Batch(events, json.dumps({"offsets": offsets}), source_time=None)
            await asyncio.sleep(0)

    async def _stream_stdin(self) -> AsyncIterator[Batch]:
        loop = asyncio.get_running_loop()
        stdin = sys.stdin.buffer
        count = 0
        while True:
            lines = await loop.run_in_executor(None, _read_lines, stdin, MAX_BATCH_LINES)
            if not lines:
                return
            events = [_overlong(x) if overlong else parse_line(x.strip())
                      for x, overlong in lines if overlong or x.strip()]
            count += len(lines)
            yield Batch(events, json.dumps({"offsets": {"-": count}}))


def _overlong(head: bytes) -> Event:
    return quarantine("jsonl", head, f"line longer than {MAX_LINE_BYTES:,} bytes: not read "
                      f"(the first {min(len(head), QUARANTINE_RAW_CAP):,} are kept here)")


def _read_offsets(cursor: str | None) -> dict[str, int]:
    """The saved byte offsets, keyed by absolute path (older cursors kept the path
    as it was typed: resolved here against the working directory, as it was then)."""
    if not cursor:
        return {}
    try:
        saved = json.loads(cursor)["offsets"]
        return {k if k == "-" else os.path.abspath(k): int(v) for k, v in saved.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        log.warning("jsonl: ignoring unreadable cursor %r; reading from the start", cursor[:200])
        return {}


def _read_lines(fh: IO[bytes], n: int) -> list[tuple[bytes, bool]]:
    """Up to ``n`` lines (fewer once ``POLL_S`` has passed); an overlong line comes
    back as its head, flagged, the rest of it read and dropped."""
    out = []
    deadline = time.monotonic() + POLL_S
    for _ in range(n):
        line = fh.readline(MAX_LINE_BYTES + 1)
        if not line:
            break
        overlong = len(line) > MAX_LINE_BYTES and not line.endswith(b"\n")
        if overlong:
            line = line[:QUARANTINE_RAW_CAP]
            while (rest := fh.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
        out.append((line, overlong))
        if time.monotonic() > deadline:
            break
    return out


@SOURCES.register("jsonl")
def _create(target: str | None, **options: Any) -> JsonlSource:
    return JsonlSource(target, **options)
