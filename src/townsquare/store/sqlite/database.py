"""One SQLite file: a single serialized writer and per-thread read-only readers.

datasette's discipline: every write goes through one connection inside
``BEGIN IMMEDIATE`` under a lock, so writers never fight over the WAL and
``SQLITE_BUSY`` cannot happen between our own threads; reads use separate
connections opened ``mode=ro``, one per thread, which WAL lets run while the
writer commits. Another process (``townsquare search`` while ``ingest`` runs)
reads the same file the same way.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from townsquare.store.base import url_host
from townsquare.store.sqlite.migrations import migrate, pending
from townsquare.text import fold

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # NORMAL in WAL mode: a committed transaction survives the process being
    # killed (it is in the WAL); only an OS crash/power cut can drop the last
    # few. TOWNSQUARE_SQLITE_SYNC=FULL trades throughput for that too.
    "PRAGMA synchronous={sync}",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-65536",
    # Checkpoint every ~40 MB of WAL instead of 4 MB: pages rewritten by many
    # commits (B-tree interiors, FTS5 segments being merged) are copied back
    # to the database once instead of ten times. Ingest: ~15% faster.
    "PRAGMA wal_autocheckpoint=10000",
)


def _enter_wal(conn: sqlite3.Connection, wait_s: float = 10.0) -> None:
    """Switch a new file to WAL; wait out another process doing the same.

    Changing the journal mode needs an exclusive lock and answers
    ``SQLITE_BUSY`` at once, without the busy handler, while another
    connection (a second process opening the new file) holds any lock.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


class Database:
    """Connections to one SQLite file."""

    def __init__(self, path: Path, read_only: bool = False, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._sync = synchronous if synchronous in ("NORMAL", "FULL", "OFF") else "NORMAL"
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self.write_lock = threading.RLock()
        self._writer: sqlite3.Connection | None = None
        if not read_only or not self._fully_migrated():
            # Even a read-only opener must find a migrated file: it may be the
            # first to open it, or another process may be mid-way through
            # creating it (``migrate`` waits for that and skips what is done).
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect(writable=True)
            migrate(conn)
            if read_only:
                conn.close()
            else:
                self._writer = conn

    def _fully_migrated(self) -> bool:
        if not self.path.exists():
            return False
        conn = self._connect(writable=False)
        try:
            return not pending(conn)
        except sqlite3.Error:
            return False
        finally:
            conn.close()

    def _connect(self, writable: bool) -> sqlite3.Connection:
        if writable:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10
            )
        else:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                check_same_thread=False, timeout=10,
            )
        for pragma in _PRAGMAS:
            if "journal_mode" in pragma:
                if writable:
                    _enter_wal(conn)
                continue
            conn.execute(pragma.format(sync=self._sync))
        if not writable:
            conn.execute("PRAGMA mmap_size=268435456")
        # Domain filters compare the host of posts' URLs (SQLite has no URL parser).
        conn.create_function("url_host", 1, url_host, deterministic=True)
        conn.create_function("fold", 1, fold, deterministic=True)
        return conn

    @property
    def writer(self) -> sqlite3.Connection:
        if self._writer is None:
            raise PermissionError(f"{self.path} is open read-only")
        return self._writer

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` on the one writer; commit on success, roll back on error."""
        with self.write_lock:
            conn = self.writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(writable=False)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def close(self) -> None:
        # Readers belong to their threads, and one may be mid-query in a worker thread
        # (the live feed's poll, a trend warm-up) when the owner closes the store:
        # closing its connection from here crashed SQLite (a segfault). Dropping our
        # references lets each close when its last user lets go of it.
        with self._readers_lock:
            self._readers.clear()
        self._local = threading.local()
        with self.write_lock:
            if self._writer is not None:
                try:
                    self._writer.execute("PRAGMA optimize")
                except sqlite3.Error:
                    pass
                self._writer.close()
                self._writer = None
