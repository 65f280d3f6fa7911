"""API keys, the usage ledger and conversations, in the same SQLite file."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from townsquare.store.base import (
    ApiKeyRecord,
    Conversation,
    ConversationSummary,
    StoredMessage,
    UsageRow,
)

if TYPE_CHECKING:
    from townsquare.store.sqlite.database import Database


def _ms(dt: datetime | None = None) -> int:
    return int((dt.timestamp() if dt else time.time()) * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _key(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row[0], name=row[1], tier=row[2], prefix=row[3], key_hash=row[4],
        created_at=_dt(row[5]), revoked_at=_dt(row[6]) if row[6] else None,
    )


def month_bounds(month: str) -> tuple[int, int]:
    """``'2026-11'`` -> [start, end) in epoch ms, UTC."""
    year, mon = (int(x) for x in month.split("-"))
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=UTC)
    return _ms(start), _ms(end)


class AccountsMixin:
    """The service's tables; mixed into :class:`SQLiteStore`."""

    db: Database

    def create_api_key(self, name: str, tier: str, prefix: str, key_hash: str) -> ApiKeyRecord:
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO api_keys(name, tier, prefix, key_hash, created_ms) "
                "VALUES (?,?,?,?,?) RETURNING id, name, tier, prefix, key_hash, created_ms, "
                "revoked_ms",
                (name, tier, prefix, key_hash, _ms()),
            )
            return _key(cur.fetchone())

    def api_keys_by_prefix(self, prefix: str) -> list[ApiKeyRecord]:
        rows = self.db.reader().execute(
            "SELECT id, name, tier, prefix, key_hash, created_ms, revoked_ms FROM api_keys "
            "WHERE prefix = ?",
            (prefix,),
        )
        return [_key(r) for r in rows]

    def list_api_keys(self) -> list[ApiKeyRecord]:
        rows = self.db.reader().execute(
            "SELECT id, name, tier, prefix, key_hash, created_ms, revoked_ms FROM api_keys "
            "ORDER BY id"
        )
        return [_key(r) for r in rows]

    def revoke_api_key(self, name_or_prefix: str) -> bool:
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_ms = ? WHERE revoked_ms IS NULL "
                "AND (name = ? OR prefix = ?)",
                (_ms(), name_or_prefix, name_or_prefix),
            )
            return cur.rowcount > 0

    def record_usage(
        self,
        key_id: int | None,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        route: str,
        at: datetime | None = None,
    ) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO usage(key_id, model, route, prompt_tokens, completion_tokens, at_ms) "
                "VALUES (?,?,?,?,?,?)",
                (key_id, model, route, prompt_tokens, completion_tokens, _ms(at)),
            )

    def usage_report(self, key_id: int | None = None, month: str | None = None) -> list[UsageRow]:
        where, params = [], []  # type: ignore[var-annotated]
        if key_id is not None:
            where.append("u.key_id = ?")
            params.append(key_id)
        if month:
            start, end = month_bounds(month)
            where.append("u.at_ms >= ? AND u.at_ms < ?")
            params += [start, end]
        sql = (
            "SELECT u.key_id, k.name, u.model, count(*), sum(u.prompt_tokens), "
            "sum(u.completion_tokens) FROM usage u LEFT JOIN api_keys k ON k.id = u.key_id"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " GROUP BY u.key_id, k.name, u.model ORDER BY u.key_id, u.model"
        return [UsageRow(*row) for row in self.db.reader().execute(sql, params)]

    def tokens_used(self, key_id: int, since: datetime) -> int:
        row = self.db.reader().execute(
            "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage "
            "WHERE key_id = ? AND at_ms >= ?",
            (key_id, _ms(since)),
        ).fetchone()
        return int(row[0])

    def create_conversation(self, owner: str | None, mode: str) -> Conversation:
        conv = Conversation(
            id="conv_" + secrets.token_hex(12), owner=owner, mode=mode,
            created_at=datetime.now(UTC),
        )
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO conversations(id, owner, mode, created_ms) VALUES (?,?,?,?)",
                (conv.id, owner, mode, _ms(conv.created_at)),
            )
        return conv

    def get_conversation(self, conv_id: str, owner: str | None) -> Conversation | None:
        conn = self.db.reader()
        row = conn.execute(
            "SELECT id, owner, mode, created_ms, title FROM conversations WHERE id = ? "
            "AND owner IS ?",
            (conv_id, owner),
        ).fetchone()
        if row is None:
            return None
        conv = Conversation(id=row[0], owner=row[1], mode=row[2], created_at=_dt(row[3]),
                            title=row[4])
        for role, content, meta, ms in conn.execute(
            "SELECT role, content, meta, created_ms FROM messages WHERE conversation_id = ? "
            "ORDER BY id",
            (conv_id,),
        ):
            conv.messages.append(StoredMessage(role, content, _dt(ms), json.loads(meta)))
        return conv

    def add_message(
        self, conv_id: str, role: str, content: str, meta: dict[str, Any] | None = None
    ) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO messages(conversation_id, role, content, meta, created_ms) "
                "VALUES (?,?,?,?,?)",
                (conv_id, role, content, json.dumps(meta or {}, default=str), _ms()),
            )

    def list_conversations(
        self, owner: str | None, limit: int = 50, before: datetime | None = None
    ) -> list[ConversationSummary]:
        # Activity = the newest message (or the creation, for an empty one).
        sql = (
            "SELECT c.id, c.mode, c.title, c.created_ms, "
            "coalesce(max(m.created_ms), c.created_ms) AS active, count(m.id), "
            "(SELECT content FROM messages f WHERE f.conversation_id = c.id AND f.role = 'user' "
            " ORDER BY f.id LIMIT 1) "
            "FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id "
            "WHERE c.owner IS ? GROUP BY c.id"
        )
        params: list[Any] = [owner]
        if before is not None:
            sql += " HAVING active < ?"
            params.append(_ms(before))
        sql += " ORDER BY active DESC, c.id LIMIT ?"
        params.append(limit)
        return [
            ConversationSummary(id=r[0], mode=r[1], title=r[2], first_question=r[6],
                                created_at=_dt(r[3]), updated_at=_dt(r[4]), messages=r[5])
            for r in self.db.reader().execute(sql, params)
        ]

    def rename_conversation(self, conv_id: str, owner: str | None, title: str | None) -> bool:
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE conversations SET title = ? WHERE id = ? AND owner IS ?",
                (title, conv_id, owner),
            )
        return cur.rowcount > 0

    def delete_conversation(self, conv_id: str, owner: str | None) -> bool:
        with self.db.transaction() as conn:
            found = conn.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND owner IS ?", (conv_id, owner)
            ).fetchone()
            if found is None:
                return False
            conn.execute("DELETE FROM messages WHERE conversation_id = ?", (conv_id,))
            conn.execute("DELETE FROM conversations WHERE id = ?", (conv_id,))
        return True
