"""Several processes opening one new SQLite file at the same moment.

``townsquare ingest`` and ``townsquare search`` started together (or two
workers) must all find a fully migrated file: none may fail with "table
already exists" or "no such table" while another is still creating it.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from pathlib import Path

from townsquare.store import open_store
from townsquare.store.sqlite.migrations import MIGRATIONS


def _open_and_search(path: str, read_only: bool, barrier: object) -> str:
    barrier.wait()  # type: ignore[attr-defined]
    try:
        store = open_store(path, Path(path).parent, read_only=read_only)
        try:
            store.stats()
        finally:
            store.close()
    except Exception as exc:  # reported to the parent, which asserts on it
        return f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    return "ok"


def test_simultaneous_openers_all_find_a_migrated_file(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    for attempt in range(3):
        path = str(tmp_path / f"race{attempt}.db")
        modes = [False, True, False, True, True, False]
        with ctx.Manager() as manager:
            barrier = manager.Barrier(len(modes))
            with ctx.Pool(len(modes)) as pool:
                results = pool.starmap(
                    _open_and_search, [(path, ro, barrier) for ro in modes]
                )
        assert results == ["ok"] * len(modes)
        store = open_store(path, tmp_path, read_only=True)
        try:
            rows = store.db.reader().execute(  # type: ignore[attr-defined]
                "SELECT name FROM _migrations ORDER BY name"
            ).fetchall()
        finally:
            store.close()
        assert [r[0] for r in rows] == sorted(fn.__name__ for fn in MIGRATIONS)
