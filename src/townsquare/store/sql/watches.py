"""Standing queries in the store: one table of watches, one of claimed items.

A watch row is its id, owner (API key id), creation time, signing secret and
its definition as JSON (``spec``): :mod:`townsquare.watches` owns what the
definition means, the store only keeps it, so every replica on the store
lists, matches and deletes the same watches.

``watch_claims`` records what was reported for a watch (``post:<id>``,
``story:<id>``). A claim is an insert that does nothing if the pair exists,
so when two replicas match the same post, one of them wins the claim and
only that one sends the webhook; story watches use their claims to report a
story once across restarts and replicas. Claims are dropped with their watch
and aged out by :meth:`forget_watch_claims`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from townsquare.store.base import WatchesStore
from townsquare.store.records import StoredWatch
from townsquare.store.sql.dialect import SqlTables

_COLS = "id, owner, {created}, secret, spec"


class SqlWatches(SqlTables, WatchesStore):
    """:class:`WatchesStore` over ``watches`` and ``watch_claims``."""

    def _watch(self, row: Sequence[Any]) -> StoredWatch:
        return StoredWatch(id=row[0], owner=int(row[1]), created_at=self.dialect.from_time(row[2]),
                           secret=row[3], spec=self.dialect.from_json(row[4]))

    def add_watch(self, watch: StoredWatch) -> bool:
        return self._write(
            f"INSERT INTO watches({_COLS}) VALUES (?,?,?,?,?) ON CONFLICT (id) DO NOTHING",
            (watch.id, watch.owner, self.dialect.time(watch.created_at), watch.secret,
             self.dialect.json(watch.spec)),
        ) > 0

    def watches(self, owner: int | None = None) -> list[StoredWatch]:
        if owner is None:
            rows = self._read(f"SELECT {_COLS} FROM watches ORDER BY {{created}}, id")
        else:
            rows = self._read(f"SELECT {_COLS} FROM watches WHERE owner = ? "
                              "ORDER BY {created}, id", (owner,))
        return [self._watch(r) for r in rows]

    def get_watch(self, watch_id: str, owner: int) -> StoredWatch | None:
        row = self._read_one(f"SELECT {_COLS} FROM watches WHERE id = ? AND owner = ?",
                             (watch_id, owner))
        return self._watch(row) if row else None

    def delete_watch(self, watch_id: str, owner: int) -> bool:
        sql = self.dialect.sql
        with self._writing() as conn:
            gone = conn.execute(sql("DELETE FROM watches WHERE id = ? AND owner = ?"),
                                (watch_id, owner)).rowcount
            if gone:
                conn.execute(sql("DELETE FROM watch_claims WHERE watch_id = ?"), (watch_id,))
        return gone > 0

    def set_watch_secret(self, watch_id: str, owner: int, secret: str) -> bool:
        return self._write("UPDATE watches SET secret = ? WHERE id = ? AND owner = ?",
                           (secret, watch_id, owner)) > 0

    def claim_watch_items(
        self, claims: Sequence[tuple[str, str]], at: datetime | None = None
    ) -> list[tuple[str, str]]:
        if not claims:
            return []
        won: list[tuple[str, str]] = []
        stamp = self.dialect.time(at)
        insert = self.dialect.sql(
            "INSERT INTO watch_claims(watch_id, item, {at}) VALUES (?,?,?) "
            "ON CONFLICT (watch_id, item) DO NOTHING")
        with self._writing() as conn:
            for watch_id, item in dict.fromkeys(claims):
                if conn.execute(insert, (watch_id, item, stamp)).rowcount > 0:
                    won.append((watch_id, item))
        return won

    def watch_claims(self, watch_ids: Sequence[str], prefix: str = "") -> set[tuple[str, str]]:
        ids = list(dict.fromkeys(watch_ids))
        out: set[tuple[str, str]] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows = self._read(
                f"SELECT watch_id, item FROM watch_claims WHERE watch_id IN "
                f"({','.join('?' * len(chunk))}) AND substr(item, 1, ?) = ?",
                [*chunk, len(prefix), prefix])
            out.update((r[0], r[1]) for r in rows)
        return out

    def forget_watch_claims(self, before: datetime) -> int:
        return self._write("DELETE FROM watch_claims WHERE {at} < ?", (self.dialect.time(before),))
