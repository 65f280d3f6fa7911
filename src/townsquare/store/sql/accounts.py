"""API keys, the usage ledger and conversations: the same statements on both engines.

In PostgreSQL they are shared by every replica: a key created on one is
accepted by all, and a monthly quota counts tokens spent through any of them.
Times come from this process's clock on both engines (quota windows are
computed from it too).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from townsquare.store.base import AccountsStore
from townsquare.store.records import (
    ApiKeyRecord,
    Conversation,
    ConversationSummary,
    StoredMessage,
    UsageRow,
)
from townsquare.store.sql.dialect import SqlTables

_KEY_COLS = "id, name, tier, prefix, key_hash, {created}, {revoked}"


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """``'2026-11'`` -> [start, end) in UTC."""
    year, mon = (int(x) for x in month.split("-"))
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=UTC)
    return start, end


class SqlAccounts(SqlTables, AccountsStore):
    """:class:`AccountsStore` over the ``api_keys``, ``usage``, ``conversations`` and
    ``messages`` tables."""

    def _key(self, row: Any) -> ApiKeyRecord:
        t = self.dialect.from_time
        return ApiKeyRecord(
            id=row[0], name=row[1], tier=row[2], prefix=row[3], key_hash=row[4],
            created_at=t(row[5]), revoked_at=t(row[6]) if row[6] is not None else None,
        )

    def create_api_key(self, name: str, tier: str, prefix: str, key_hash: str) -> ApiKeyRecord:
        with self._writing() as conn:
            row = conn.execute(self.dialect.sql(
                "INSERT INTO api_keys(name, tier, prefix, key_hash, {created}) "
                f"VALUES (?,?,?,?,?) RETURNING {_KEY_COLS}"),
                (name, tier, prefix, key_hash, self.dialect.time()),
            ).fetchone()
        return self._key(row)

    def api_keys_by_prefix(self, prefix: str) -> list[ApiKeyRecord]:
        rows = self._read(f"SELECT {_KEY_COLS} FROM api_keys WHERE prefix = ? ORDER BY id",
                          (prefix,))
        return [self._key(r) for r in rows]

    def list_api_keys(self) -> list[ApiKeyRecord]:
        return [self._key(r) for r in self._read(f"SELECT {_KEY_COLS} FROM api_keys ORDER BY id")]

    def revoke_api_key(self, name_or_prefix: str) -> bool:
        return self._write(
            "UPDATE api_keys SET {revoked} = ? WHERE {revoked} IS NULL "
            "AND (name = ? OR prefix = ?)",
            (self.dialect.time(), name_or_prefix, name_or_prefix),
        ) > 0

    def record_usage(
        self,
        key_id: int | None,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        route: str,
        at: datetime | None = None,
    ) -> None:
        self._write(
            "INSERT INTO usage(key_id, model, route, prompt_tokens, completion_tokens, {at}) "
            "VALUES (?,?,?,?,?,?)",
            (key_id, model, route, prompt_tokens, completion_tokens, self.dialect.time(at)),
        )

    def usage_report(self, key_id: int | None = None, month: str | None = None) -> list[UsageRow]:
        where: list[str] = []
        params: list[Any] = []
        if key_id is not None:
            where.append("u.key_id = ?")
            params.append(key_id)
        if month:
            start, end = month_bounds(month)
            where.append("u.{at} >= ? AND u.{at} < ?")
            params += [self.dialect.time(start), self.dialect.time(end)]
        query = (
            "SELECT u.key_id, k.name, u.model, count(*), sum(u.prompt_tokens), "
            "sum(u.completion_tokens) FROM usage u LEFT JOIN api_keys k ON k.id = u.key_id"
        )
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " GROUP BY u.key_id, k.name, u.model ORDER BY u.key_id NULLS FIRST, u.model"
        return [UsageRow(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]))
                for r in self._read(query, params)]

    def tokens_used(self, key_id: int, since: datetime) -> int:
        row = self._read_one(
            "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage "
            "WHERE key_id = ? AND {at} >= ?",
            (key_id, self.dialect.time(since)),
        )
        return int(row[0]) if row else 0

    def create_conversation(self, owner: str | None, mode: str) -> Conversation:
        conv = Conversation(
            id="conv_" + secrets.token_hex(12), owner=owner, mode=mode,
            created_at=datetime.now(UTC),
        )
        self._write("INSERT INTO conversations(id, owner, mode, {created}) VALUES (?,?,?,?)",
                    (conv.id, owner, mode, self.dialect.time(conv.created_at)))
        return conv

    def get_conversation(self, conv_id: str, owner: str | None) -> Conversation | None:
        t, sql = self.dialect.from_time, self.dialect.sql
        with self._reading() as conn:
            row = conn.execute(sql(
                "SELECT id, owner, mode, {created}, title FROM conversations WHERE id = ? "
                "AND owner {same} ?"), (conv_id, owner),
            ).fetchone()
            if row is None:
                return None
            conv = Conversation(id=row[0], owner=row[1], mode=row[2], created_at=t(row[3]),
                                title=row[4])
            for role, content, meta, at in conn.execute(sql(
                "SELECT role, content, meta, {created} FROM messages WHERE conversation_id = ? "
                "ORDER BY id"), (conv_id,),
            ).fetchall():
                conv.messages.append(
                    StoredMessage(role, content, t(at), self.dialect.from_json(meta)))
        return conv

    def add_message(
        self, conv_id: str, role: str, content: str, meta: dict[str, Any] | None = None
    ) -> None:
        self._write(
            "INSERT INTO messages(conversation_id, role, content, meta, {created}) "
            "VALUES (?,?,?,?,?)",
            (conv_id, role, content, self.dialect.json(meta or {}), self.dialect.time()),
        )

    def list_conversations(
        self, owner: str | None, limit: int = 50, before: datetime | None = None
    ) -> list[ConversationSummary]:
        # Activity = the newest message (or the creation, for an empty one).
        query = (
            "SELECT c.id, c.mode, c.title, c.{created}, "
            "coalesce(max(m.{created}), c.{created}) AS active, count(m.id), "
            "(SELECT content FROM messages f WHERE f.conversation_id = c.id AND f.role = 'user' "
            " ORDER BY f.id LIMIT 1) "
            "FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id "
            "WHERE c.owner {same} ? GROUP BY c.id"
        )
        params: list[Any] = [owner]
        if before is not None:
            query += " HAVING coalesce(max(m.{created}), c.{created}) < ?"
            params.append(self.dialect.time(before))
        query += " ORDER BY active DESC, c.id LIMIT ?"
        params.append(limit)
        t = self.dialect.from_time
        return [
            ConversationSummary(id=r[0], mode=r[1], title=r[2], first_question=r[6],
                                created_at=t(r[3]), updated_at=t(r[4]), messages=int(r[5]))
            for r in self._read(query, params)
        ]

    def rename_conversation(self, conv_id: str, owner: str | None, title: str | None) -> bool:
        return self._write("UPDATE conversations SET title = ? WHERE id = ? AND owner {same} ?",
                           (title, conv_id, owner)) > 0

    def delete_conversation(self, conv_id: str, owner: str | None) -> bool:
        sql = self.dialect.sql
        with self._writing() as conn:
            gone = conn.execute(sql("DELETE FROM conversations WHERE id = ? AND owner {same} ?"),
                                (conv_id, owner)).rowcount
            if gone:  # ON DELETE CASCADE too, where the engine enforces it
                conn.execute(sql("DELETE FROM messages WHERE conversation_id = ?"), (conv_id,))
        return gone > 0
