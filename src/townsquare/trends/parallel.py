"""Feature extraction in worker processes, so counting gets a core to itself.

A post's features depend on its text alone, so extraction (a third to a half
of the per-post cost) can run in other processes while the detector, which
owns all the state, counts in this one: on two cores, one worker extracts
and the main process counts. Batches of texts go out and feature dicts come
back in order; a few batches are kept in flight so neither side waits.

    with ParallelExtractor(workers=1) as px:
        for post, features in px.map(posts):
            detector.add(post, features=features)
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import Any

from townsquare.model import Post
from townsquare.trends.features import FeatureExtractor

_worker: FeatureExtractor | None = None


def _init(options: dict[str, Any]) -> None:
    global _worker
    _worker = FeatureExtractor(**options)


def _extract(texts: list[str]) -> list[dict[str, str]]:
    assert _worker is not None
    extract = _worker.extract
    return [extract(t) for t in texts]


class ParallelExtractor:
    """``map(posts)`` yields ``(post, features)`` in input order, extracted by workers."""

    def __init__(self, workers: int = 1, batch: int = 1000, **extractor_options: Any) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.batch = batch
        self._options = extractor_options
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ParallelExtractor:
        # spawn, not fork: the parent may run threads (the service does).
        self._pool = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(self._options,),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def map(self, posts: Iterable[Post]) -> Iterator[tuple[Post, dict[str, str]]]:
        if self._pool is None:
            raise RuntimeError("use ParallelExtractor as a context manager")
        it = iter(posts)
        pending: deque[tuple[list[Post], Future[list[dict[str, str]]]]] = deque()
        ahead = 2 * self.workers + 1
        while True:
            while len(pending) < ahead:
                chunk = list(islice(it, self.batch))
                if not chunk:
                    break
                pending.append((chunk, self._pool.submit(_extract, [p.text for p in chunk])))
            if not pending:
                return
            chunk, future = pending.popleft()
            yield from zip(chunk, future.result(), strict=True)
