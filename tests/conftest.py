"""Shared fixtures: an isolated data directory per test, helpers to find ../shared, and
server-sent events read with httpx-sse (the decoder the Mastodon source uses)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent

# Real-engine fixtures (PostgreSQL schema, NATS names, per-engine parametrization).
from backends import nats_url, pg_url, store_backend, store_url  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(sub: str) -> Path:
    """A folder of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"{path} not found: conformance data lives in ../shared/data beside the repo")
    return path


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own TOWNSQUARE_HOME; fast test defaults for the heavy parts."""
    h = tmp_path / "home"
    h.mkdir()
    for var in list(os.environ):
        if var.startswith("TOWNSQUARE_") and not var.startswith("TOWNSQUARE_TEST_"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TOWNSQUARE_HOME", str(h))
    monkeypatch.setenv("TOWNSQUARE_EMBEDDER", os.environ.get("TOWNSQUARE_TEST_EMBEDDER", "hash"))
    monkeypatch.setenv("TOWNSQUARE_LLM", "fake")
    # The story loop would otherwise spend scripted LLM responses on summaries in the
    # background; tests of that loop turn it back on.
    monkeypatch.setenv("TOWNSQUARE_STORY_SUMMARIES", "0")
    # No test reaches the internet: the Bluesky identity lookup runs only where a test
    # points it at a loopback server.
    monkeypatch.setenv("TOWNSQUARE_IDENTITY_LOOKUP", "off")
    yield h


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    with path.open("a", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def ago(**kw: float) -> str:
    return (datetime.now(UTC) - timedelta(**kw)).isoformat()


def sse_events(body: httpx.Response | str) -> list[ServerSentEvent]:
    """The server-sent events of a whole response (or of an event-stream text)."""
    if isinstance(body, str):
        body = httpx.Response(200, headers={"content-type": "text/event-stream"}, text=body)
    return list(EventSource(body).iter_sse())
