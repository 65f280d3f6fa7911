"""Sources as supervised background tasks inside ``serve``.

Each configured source runs through the one :class:`~townsquare.ingest.Ingestor`
(embedding and the SQLite commit happen in worker threads, so the event loop
keeps serving requests) as its own asyncio task. A source that raises is
restarted after a capped, jittered exponential backoff, reset once it has
committed something again; a :class:`~townsquare.sources.SourceError` (a bad
path or URL) is a configuration problem and is not retried. Network sources
also reconnect by themselves, and report that through their ``connected``
and ``last_error`` attributes, which the status here folds in:

- ``connecting``: started, not connected yet, no error so far;
- ``running``: connected (file sources always are);
- ``unreachable``: not connected and the last attempt failed (the network is
  down, the port closed), retrying;
- ``failed``: crashed (restarting after a backoff) or misconfigured (not);
- ``stopped``: a finite source reached its end, or the server is stopping.

The server keeps serving what it has whatever the sources do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from townsquare.index.embedder import Embedder
from townsquare.ingest import Ingestor, IngestStats, Limits
from townsquare.ingest.pipeline import Listener
from townsquare.retry import backoff_delays
from townsquare.sources import Source, SourceError, source_from_spec
from townsquare.store.base import Store
from townsquare.timeutil import utcnow

log = logging.getLogger(__name__)

DEFAULT_SOURCES = ["jetstream"]
#: How far back the posts/s figure looks.
RATE_WINDOW_S = 10.0


#: What ``serve`` gives a source unless its spec says otherwise: a file is followed
#: (as ``ingest --follow`` does), not read once.
SERVE_DEFAULTS: dict[str, dict[str, Any]] = {"jsonl": {"follow": True}}

SourceSpec = str | Mapping[str, Any]


def parse_spec(spec: SourceSpec) -> tuple[str, dict[str, Any]]:
    """A source spec -> (``KIND[:TARGET]``, options).

    Two forms, one meaning:

    - a string, the options as ``key=value`` words after the target:
      ``"rss:https://example.org/feed.xml interval=60"``,
      ``"mastodon:https://mastodon.social timeline=hashtag:climate token=..."``;
    - a table (``config.toml``): ``{spec = "rss:https://...", interval = 60}``.

    Values are validated by the source itself (a typo'd option or a bad value
    is a :class:`SourceError` naming the options it knows).
    """
    if isinstance(spec, Mapping):
        options = {str(k).replace("-", "_"): v for k, v in spec.items()}
        target = options.pop("spec", None)
        if not isinstance(target, str) or not target.strip():
            raise SourceError(f"a source table needs spec = \"KIND[:TARGET]\" (got {dict(spec)})")
        if len(target.split()) > 1:
            raise SourceError(f"a source table's spec has no options in it: {target!r}")
        return target.strip(), options
    words = str(spec).split()
    if not words:
        return "", {}
    options = {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise SourceError(f"source option {word!r} in {words[0]!r}: use key=value")
        options[key.replace("-", "_")] = value
    return words[0], options


def build_sources(specs: Iterable[SourceSpec]) -> list[tuple[str, Source]]:
    """Specs -> named sources (``demo`` is the shipped sample stream).

    The name (shown on the page and in /metrics) is ``KIND[:TARGET]`` alone:
    options such as a token never appear there.
    """
    out: list[tuple[str, Source]] = []
    seen: set[str] = set()
    for spec in specs:
        name, options = parse_spec(spec)
        if not name or name in seen:
            continue
        seen.add(name)
        kind = name.partition(":")[0]
        if kind == "demo":
            import townsquare.sources.demo  # noqa: F401 - registers the demo source
        if kind == "mastodon" and "token" not in options:
            token = os.environ.get("TOWNSQUARE_MASTODON_TOKEN")
            if token:
                options["token"] = token
        if kind == "jsonl" and isinstance(options.get("follow"), str):
            options["follow"] = _flag(options["follow"], name)
        out.append((name, source_from_spec(name, **{**SERVE_DEFAULTS.get(kind, {}),
                                                    **options})))
    return out


def _flag(value: str, name: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SourceError(f"{name}: follow must be true or false, not {value!r}")


@dataclass(slots=True)
class SourceStatus:
    """One source as the status page and /metrics show it."""

    name: str
    kind: str
    status: str
    connected: bool
    posts_per_s: float
    posts: int
    newest_post_age_s: float | None
    lag_s: float | None
    last_error: str | None
    restarts: int = 0
    quarantined: int = 0
    deleted: int = 0

    def public(self) -> dict[str, Any]:
        """The ``/v1/live`` shape."""
        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "connected": self.connected,
            "posts_per_s": round(self.posts_per_s, 2),
            "posts": self.posts,
            "newest_post_age_s": _round(self.newest_post_age_s),
            "lag_s": _round(self.lag_s),
            "last_error": self.last_error,
            "restarts": self.restarts,
            "quarantined": self.quarantined,
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


@dataclass
class Supervised:
    name: str
    source: Source
    stats: IngestStats
    state: str = "connecting"  # connecting | running | backoff | failed | stopped
    crash_status: str = "failed"  # how a backoff shows: unreachable or failed
    error: str | None = None
    restarts: int = 0
    task: asyncio.Task[None] | None = None
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    def status(self, now_mono: float) -> SourceStatus:
        connected = self.source.connected
        source_error = self.source.last_error
        if self.state in ("failed", "stopped"):
            status, connected = self.state, False
        elif self.state == "backoff":
            status, connected = self.crash_status, False
        elif connected:
            status = "running"
        elif source_error:
            status = "unreachable"
        else:
            status = "connecting"
        newest = self.stats.newest_post_at
        return SourceStatus(
            name=self.name,
            kind=type(self.source).kind,
            status=status,
            connected=connected,
            posts_per_s=self.rate(now_mono),
            posts=self.stats.posts,
            newest_post_age_s=(
                max(0.0, (utcnow() - newest).total_seconds()) if newest is not None else None
            ),
            lag_s=self.stats.lag_s,
            last_error=source_error or self.error,
            restarts=self.restarts,
            quarantined=self.stats.quarantined,
            deleted=self.stats.deletes,
        )

    def sample(self, now_mono: float) -> None:
        self.samples.append((now_mono, self.stats.posts))

    def rate(self, now_mono: float) -> float:
        """Posts per second over the last :data:`RATE_WINDOW_S` seconds."""
        posts = self.stats.posts
        start = None
        for t, n in self.samples:
            if now_mono - t <= RATE_WINDOW_S:
                start = (t, n)
                break
        if start is None or now_mono - start[0] < 0.5:
            return 0.0
        return max(0.0, (posts - start[1]) / (now_mono - start[0]))


class Supervisor:
    """Runs sources into the store until stopped; restarts what fails.

    ``embedder`` may be a zero-argument callable: it is then called (in a
    worker thread) by :meth:`start`, so a server can answer while a model
    loads or distills.
    """

    def __init__(
        self,
        store: Store,
        embedder: Embedder | Callable[[], Embedder | None] | None,
        sources: Iterable[tuple[str, Source]],
        listeners: list[Listener] | None = None,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        own_loop: bool = True,
        limits: Limits | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.limits = limits
        self.listeners: list[Listener] = list(listeners or [])
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        #: Run the sources on an event loop in a thread of their own, so that a
        #: source parsing a big batch never holds up the loop serving requests
        #: (the interpreter then switches threads every few milliseconds).
        self.own_loop = own_loop
        self.sources = [
            Supervised(name, src, IngestStats(stream_key=src.key)) for name, src in sources
        ]
        self._stop: asyncio.Event | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._ingestor: Ingestor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.started = False

    def add_listener(self, listener: Listener) -> None:
        """Hear committed posts (trends, standing queries); call before :meth:`start`."""
        self.listeners.append(listener)
        if self._ingestor is not None:
            self._ingestor.listeners.append(listener)

    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        # The Ingestor records the embedder in the store: a write, so off the loop.
        self._ingestor = await asyncio.to_thread(self._make_ingestor)
        if not self.own_loop:
            self._launch()
            return
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="townsquare-sources", daemon=True
        )
        self._thread.start()
        await asyncio.to_thread(ready.wait)

    def _make_ingestor(self) -> Ingestor:
        embedder = self.embedder() if callable(self.embedder) else self.embedder
        return Ingestor(self.store, embedder, self.listeners, self.limits)

    def _launch(self) -> None:
        """Start the source tasks on the running loop (the caller's or our thread's)."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sup in self.sources:
            sup.task = asyncio.create_task(self._run(sup), name=f"source:{sup.name}")
        self._ticker = asyncio.create_task(self._tick(), name="source-rates")

    def _thread_main(self, ready: threading.Event) -> None:
        async def main() -> None:
            self._launch()
            ready.set()
            assert self._stop is not None
            await self._stop.wait()
            await self._cancel_all()

        try:
            asyncio.run(main())
        finally:
            ready.set()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop every source now.

        Cancelling is safe: the ingestor shields a commit in flight (a batch
        and its cursor land together or not at all), and a network source
        idling on its upstream would otherwise never notice a stop flag.
        """
        if self._thread is not None:
            if self._loop is not None and self._stop is not None and self._thread.is_alive():
                with suppress(RuntimeError):  # the loop already closed
                    self._loop.call_soon_threadsafe(self._stop.set)
            await asyncio.to_thread(self._thread.join, grace_s)
            if self._thread.is_alive():
                log.warning("sources did not stop within %.0fs", grace_s)
            self._thread = None
        elif self._stop is not None:
            self._stop.set()
            await self._cancel_all(grace_s)
        for sup in self.sources:
            if sup.state != "failed":
                sup.state = "stopped"
        self.started = False

    async def _cancel_all(self, grace_s: float = 10.0) -> None:
        tasks = [s.task for s in self.sources if s.task is not None and not s.task.done()]
        if self._ticker is not None:
            tasks.append(self._ticker)
        for task in tasks:
            task.cancel()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                log.warning("source task %s did not stop within %.0fs", task.get_name(), grace_s)
            for task in done:
                with suppress(asyncio.CancelledError, Exception):
                    task.result()

    def statuses(self) -> list[SourceStatus]:
        now = time.monotonic()
        return [sup.status(now) for sup in self.sources]

    def __iter__(self) -> Iterator[Supervised]:
        return iter(self.sources)

    async def _tick(self) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            now = time.monotonic()
            for sup in self.sources:
                sup.sample(now)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)

    async def _run(self, sup: Supervised) -> None:
        assert self._ingestor is not None and self._stop is not None
        delays = backoff_delays(self.backoff_base, self.backoff_cap)
        while not self._stop.is_set():
            sup.state = "running"
            committed_before = sup.stats.batches
            try:
                await self._ingestor.run(sup.source, stop=self._stop, stats=sup.stats)
            except asyncio.CancelledError:
                sup.state = "stopped"
                raise
            except SourceError as exc:
                sup.state, sup.error = "failed", str(exc)
                log.error("source %s is misconfigured, not restarting: %s", sup.name, exc)
                return
            except Exception as exc:
                sup.error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                sup.crash_status = (
                    "unreachable" if isinstance(exc, OSError | TimeoutError) else "failed"
                )
                sup.restarts += 1
                if sup.stats.batches > committed_before:
                    delays = backoff_delays(self.backoff_base, self.backoff_cap)
                delay = next(delays)
                log.warning("source %s failed (%s); restarting in %.1fs", sup.name,
                            sup.error, delay)
                sup.state = "backoff"
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                continue
            else:
                sup.state = "stopped"
                sup.error = None
                log.info("source %s reached its end", sup.name)
                return
        sup.state = "stopped"
