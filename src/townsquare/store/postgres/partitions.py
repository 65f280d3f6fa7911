"""Daily partitions of ``posts``: created on demand, dropped for retention.

Why daily: a live deployment searches the last hours and keeps weeks, so a
``since 24h`` query touches two partitions and a retention of 30 days keeps
about 32; at the X firehose's ~6,000 posts/s a day is already ~500M rows.

- A post whose day lies between ``MIN_DAY`` and tomorrow (UTC) lands in that
  day's partition ``posts_dYYYYMMDD``, created the first time it is needed.
  Anything else (a clock in 1970, a post dated next year) lands in
  ``posts_default``, so a bad date never creates a stray partition. When a day
  that already has rows in the default partition gets its own partition, those
  rows are moved in the same transaction.
- Creation runs in its own short transaction *before* the write transaction
  that needs it: ``ATTACH PARTITION`` takes only a SHARE UPDATE EXCLUSIVE lock
  on ``posts`` (readers and writers go on), and doing it outside the write
  transaction means two writers can never deadlock on it. If it cannot get
  its locks in time the rows simply go to the default partition for now, and
  a later creation moves them.
- Retention drops whole partitions older than a cutoff (rounded down to a
  day), removes older rows from the default partition, then deletes their
  ``post_ids`` rows in batches (their vectors go with them by cascade). The
  write path tolerates a ``post_ids`` row whose post is already gone, so the
  order is safe if retention is interrupted.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

import psycopg
from psycopg import sql

from townsquare.store.postgres.database import Database, lock_key
from townsquare.store.records import RetentionResult

log = logging.getLogger(__name__)

MIN_DAY = date(2000, 1, 1)
_NAME_RE = re.compile(r"^posts_d(\d{8})$")
#: Columns copied when rows move out of the default partition (all but generated ``tsv``).
POST_COLUMNS = (
    "key, id, source, author, author_id, author_name, text, created_at, indexed_at, url, lang, "
    "hashtags, mentions, reply_to, quote_of, raw"
)
DELETE_BATCH = 50_000


def partition_name(day: date) -> str:
    return f"posts_d{day:%Y%m%d}"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


class Partitions:
    """Knows which day partitions exist (cached per process) and makes new ones."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._known: set[date] | None = None
        self._lock = threading.Lock()

    def home_day(self, created_at: datetime, today: date | None = None) -> date | None:
        """The day partition a post belongs in, or None for the default partition."""
        day = created_at.astimezone(UTC).date()
        today = today or datetime.now(UTC).date()
        return day if MIN_DAY <= day <= today + timedelta(days=1) else None

    def existing(self) -> list[date]:
        """Days that have a partition, oldest first (asks the server)."""
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'posts'::regclass"
            ).fetchall()
        days = []
        for (name,) in rows:
            m = _NAME_RE.match(name)
            if m:
                days.append(datetime.strptime(m.group(1), "%Y%m%d").date())
        return sorted(days)

    def ensure(self, created: Iterable[datetime]) -> None:
        """Make sure every in-window day among ``created`` (and today, tomorrow) has a partition."""
        today = datetime.now(UTC).date()
        wanted = {today, today + timedelta(days=1)}
        for dt in created:
            day = self.home_day(dt, today)
            if day is not None:
                wanted.add(day)
        with self._lock:
            if self._known is None:
                self._known = set(self.existing())
            missing = sorted(wanted - self._known)
        for day in missing:
            if self.create(day):
                with self._lock:
                    assert self._known is not None
                    self._known.add(day)

    def create(self, day: date) -> bool:
        """Create and attach one day's partition; False if it must wait for later."""
        name = partition_name(day)
        lo, hi = day_start(day), day_start(day + timedelta(days=1))
        ident = sql.Identifier(name)
        try:
            with self.db.transaction() as conn:
                conn.execute("SET LOCAL lock_timeout = '5s'")
                conn.execute(
                    "SELECT pg_advisory_xact_lock(%s)", (lock_key(self.db.schema, "partitions"),)
                )
                if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() != (None,):
                    return True  # another process made it
                conn.execute(sql.SQL(
                    "CREATE TABLE {} (LIKE posts INCLUDING DEFAULTS INCLUDING GENERATED)"
                ).format(ident))
                moved = conn.execute(
                    sql.SQL(
                        "INSERT INTO {} ({cols}) SELECT {cols} FROM posts_default "
                        "WHERE created_at >= %s AND created_at < %s"
                    ).format(ident, cols=sql.SQL(POST_COLUMNS)),
                    (lo, hi),
                ).rowcount
                if moved:
                    conn.execute(
                        "DELETE FROM posts_default WHERE created_at >= %s AND created_at < %s",
                        (lo, hi),
                    )
                conn.execute(
                    sql.SQL("ALTER TABLE posts ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})")
                    .format(ident, sql.Literal(lo), sql.Literal(hi))
                )
            return True
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
            log.warning("partition %s not created yet (%s); its posts wait in posts_default",
                        name, exc)
            return False

    def drop_before(self, cutoff: datetime, dry_run: bool = False) -> RetentionResult:
        """Drop every day partition entirely older than ``cutoff`` (rounded down to a day)."""
        boundary = day_start(cutoff.astimezone(UTC).date())
        result = RetentionResult(cutoff=boundary)
        old = [d for d in self.existing() if d < boundary.date()]
        result.partitions = [partition_name(d) for d in old]
        if dry_run:
            with self.db.connection() as conn:
                row = conn.execute(
                    "SELECT count(*) FROM post_ids WHERE created_at < %s", (boundary,)
                ).fetchone()
            result.posts_deleted = int(row[0]) if row else 0
            return result
        for day in old:
            with self.db.transaction() as conn:
                conn.execute(
                    "SELECT pg_advisory_xact_lock(%s)", (lock_key(self.db.schema, "partitions"),)
                )
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(
                    sql.Identifier(partition_name(day))))
            with self._lock:
                if self._known is not None:
                    self._known.discard(day)
        with self.db.connection() as conn:
            conn.execute("DELETE FROM posts_default WHERE created_at < %s", (boundary,))
            while True:
                n = conn.execute(
                    "DELETE FROM post_ids WHERE id IN (SELECT id FROM post_ids "
                    "WHERE created_at < %s LIMIT %s)",
                    (boundary, DELETE_BATCH),
                ).rowcount
                result.posts_deleted += max(0, n)
                if n < DELETE_BATCH:
                    break
        return result
