"""What every network source shares: options, a health record, and batching.

A network source never gives up on its upstream: it logs, records the error
for the status page, waits a jittered backoff and tries again. The pieces for
that live here so the three network sources (``rss``, ``jetstream``,
``mastodon``) differ only in how they talk to their upstream.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from townsquare.model import Batch
from townsquare.retry import backoff_delays
from townsquare.sources.base import Source, SourceError
from townsquare.timeutil import utcnow

T = TypeVar("T")
OptT = TypeVar("OptT", bound="NetOptions")

log = logging.getLogger(__name__)


class NetOptions(BaseModel):
    """Options every network source accepts; a typo'd option fails loudly."""

    model_config = ConfigDict(extra="forbid")

    #: First reconnect delay ceiling in seconds (doubles per failure, full jitter).
    reconnect_base: float = 0.5
    #: Largest reconnect delay ceiling in seconds.
    reconnect_cap: float = 30.0


def parse_options(kind: str, model: type[OptT], options: dict[str, Any]) -> OptT:
    """Validate constructor options, turning pydantic's error into a SourceError."""
    try:
        return model(**options)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}"
            for err in exc.errors()
        )
        known = ", ".join(sorted(model.model_fields))
        raise SourceError(
            f"bad option for the {kind} source ({problems}); known: {known}"
        ) from None


class NetworkSource(Source):
    """A Source with an upstream that comes and goes.

    ``connected``, ``last_error`` and ``last_event_at`` are what the service's
    status page shows; ``reconnects`` counts how often the link dropped.
    """

    def __init__(self, options: NetOptions) -> None:
        self.connected = False
        self.last_error: str | None = None
        self.last_event_at: datetime | None = None
        self.reconnects = 0
        self._reconnect_base = options.reconnect_base
        self._reconnect_cap = options.reconnect_cap

    async def stream(self, cursor: str | None) -> AsyncIterator[Batch]:
        """Run :meth:`_run`; whatever way it ends, the link is no longer up."""
        try:
            async with aclosing(self._run(cursor)) as batches:
                async for batch in batches:
                    yield batch
        finally:
            self.connected = False

    @abstractmethod
    def _run(self, cursor: str | None) -> AsyncGenerator[Batch, None]:
        """The reconnect-forever loop of one kind of upstream."""

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot of the link's health."""
        return {
            "key": self.key,
            "connected": self.connected,
            "last_error": self.last_error,
            "last_event_at": self.last_event_at.isoformat() if self.last_event_at else None,
            "reconnects": self.reconnects,
        }

    def _delays(self) -> Iterator[float]:
        return backoff_delays(self._reconnect_base, self._reconnect_cap)

    def _mark_up(self) -> None:
        if not self.connected:
            log.info("%s: connected", self.describe())
        self.connected = True
        self.last_error = None

    def _mark_down(self, error: BaseException | str) -> None:
        """Record a failure and log it; the caller then waits and retries."""
        text = error if isinstance(error, str) else describe_error(error)
        if self.connected:
            self.reconnects += 1
        self.connected = False
        self.last_error = text
        log.warning("%s: %s (will retry)", self.describe(), text)

    def _mark_event(self) -> None:
        self.last_event_at = utcnow()


def describe_error(exc: BaseException) -> str:
    """``ConnectError: [Errno 111] Connection refused``; never an empty message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(slots=True)
class _Stop:
    error: Exception | None


async def batched(
    messages: AsyncIterator[T], max_items: int, max_wait: float
) -> AsyncGenerator[list[T], None]:
    """Group a live message stream into lists of up to ``max_items``.

    A list is handed out as soon as it is full or ``max_wait`` seconds after
    its first message arrived, whichever comes first, so a quiet stream still
    commits promptly and a busy one commits in large transactions. Messages
    are read by a separate task (reading on while a batch is being
    committed); when the stream ends or fails, what was read is handed out
    first and then the error is raised here.
    """
    queue: asyncio.Queue[T | _Stop] = asyncio.Queue(maxsize=max_items)

    async def pump() -> None:
        try:
            async for message in messages:
                await queue.put(message)
        except Exception as exc:
            await queue.put(_Stop(exc))
        else:
            await queue.put(_Stop(None))
        finally:
            # Close the upstream iterator now (its sockets too), not whenever GC runs.
            aclose = getattr(messages, "aclose", None)
            if aclose is not None:
                await aclose()

    loop = asyncio.get_running_loop()
    task = asyncio.create_task(pump())
    try:
        while True:
            item = await queue.get()
            batch: list[T] = []
            stop = item if isinstance(item, _Stop) else None
            if stop is None:
                batch.append(item)  # type: ignore[arg-type]
                deadline = loop.time() + max_wait
                while len(batch) < max_items:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                    if isinstance(item, _Stop):
                        stop = item
                        break
                    batch.append(item)
            if batch:
                yield batch
            if stop is not None:
                if stop.error is not None:
                    raise stop.error
                return
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


class Bounded(Generic[T]):
    """A dict that forgets its oldest keys past ``limit`` (handles, local ids)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._data: dict[str, T] = {}

    def __setitem__(self, key: str, value: T) -> None:
        self._data.pop(key, None)
        self._data[key] = value
        while len(self._data) > self.limit:
            del self._data[next(iter(self._data))]

    def get(self, key: str) -> T | None:
        return self._data.get(key)

    def pop(self, key: str) -> T | None:
        return self._data.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)
