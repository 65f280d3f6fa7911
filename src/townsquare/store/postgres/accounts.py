"""API keys, the usage ledger and conversations in PostgreSQL (same semantics as SQLite's).

Shared by every replica: a key created on one is accepted by all, and a
monthly quota counts tokens spent through any of them.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from townsquare.store.base import (
    ApiKeyRecord,
    Conversation,
    ConversationSummary,
    StoredMessage,
    UsageRow,
)

if TYPE_CHECKING:
    from townsquare.store.postgres.database import Database

_KEY_COLS = "id, name, tier, prefix, key_hash, created_at, revoked_at"


def _key(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row[0], name=row[1], tier=row[2], prefix=row[3], key_hash=row[4],
        created_at=row[5], revoked_at=row[6],
    )


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """``'2026-11'`` -> [start, end) in UTC."""
    year, mon = (int(x) for x in month.split("-"))
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=UTC)
    return start, end


class AccountsMixin:
    """The service's tables; mixed into :class:`PostgresStore`."""

    db: Database

    def create_api_key(self, name: str, tier: str, prefix: str, key_hash: str) -> ApiKeyRecord:
        with self.db.connection() as conn:
            row = conn.execute(
                "INSERT INTO api_keys(name, tier, prefix, key_hash, created_at) "
                f"VALUES (%s, %s, %s, %s, %s) RETURNING {_KEY_COLS}",
                (name, tier, prefix, key_hash, _now()),
            ).fetchone()
        return _key(row)

    def api_keys_by_prefix(self, prefix: str) -> list[ApiKeyRecord]:
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT {_KEY_COLS} FROM api_keys WHERE prefix = %s ORDER BY id", (prefix,)
            ).fetchall()
        return [_key(r) for r in rows]

    def list_api_keys(self) -> list[ApiKeyRecord]:
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT {_KEY_COLS} FROM api_keys ORDER BY id").fetchall()
        return [_key(r) for r in rows]

    def revoke_api_key(self, name_or_prefix: str) -> bool:
        with self.db.connection() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = %s WHERE revoked_at IS NULL "
                "AND (name = %s OR prefix = %s)",
                (_now(), name_or_prefix, name_or_prefix),
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
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO usage(key_id, model, route, prompt_tokens, completion_tokens, at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (key_id, model, route, prompt_tokens, completion_tokens, at or _now()),
            )

    def usage_report(self, key_id: int | None = None, month: str | None = None) -> list[UsageRow]:
        where: list[str] = []
        params: list[Any] = []
        if key_id is not None:
            where.append("u.key_id = %s")
            params.append(key_id)
        if month:
            start, end = month_bounds(month)
            where.append("u.at >= %s AND u.at < %s")
            params += [start, end]
        query = (
            "SELECT u.key_id, k.name, u.model, count(*), sum(u.prompt_tokens), "
            "sum(u.completion_tokens) FROM usage u LEFT JOIN api_keys k ON k.id = u.key_id"
        )
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " GROUP BY u.key_id, k.name, u.model ORDER BY u.key_id NULLS FIRST, u.model"
        with self.db.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [UsageRow(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5])) for r in rows]

    def tokens_used(self, key_id: int, since: datetime) -> int:
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage "
                "WHERE key_id = %s AND at >= %s",
                (key_id, since),
            ).fetchone()
        return int(row[0]) if row else 0

    def create_conversation(self, owner: str | None, mode: str) -> Conversation:
        conv = Conversation(
            id="conv_" + secrets.token_hex(12), owner=owner, mode=mode,
            created_at=datetime.now(UTC),
        )
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO conversations(id, owner, mode, created_at) VALUES (%s, %s, %s, %s)",
                (conv.id, owner, mode, conv.created_at),
            )
        return conv

    def get_conversation(self, conv_id: str, owner: str | None) -> Conversation | None:
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT id, owner, mode, created_at, title FROM conversations WHERE id = %s "
                "AND owner IS NOT DISTINCT FROM %s",
                (conv_id, owner),
            ).fetchone()
            if row is None:
                return None
            conv = Conversation(id=row[0], owner=row[1], mode=row[2], created_at=row[3],
                                title=row[4])
            for role, content, meta, at in conn.execute(
                "SELECT role, content, meta, created_at FROM messages WHERE conversation_id = %s "
                "ORDER BY id",
                (conv_id,),
            ):
                conv.messages.append(StoredMessage(role, content, at, dict(meta)))
        return conv

    def add_message(
        self, conv_id: str, role: str, content: str, meta: dict[str, Any] | None = None
    ) -> None:
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO messages(conversation_id, role, content, meta, created_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (conv_id, role, content, Jsonb(meta or {}, dumps=_dumps), _now()),
            )


    def list_conversations(
        self, owner: str | None, limit: int = 50, before: datetime | None = None
    ) -> list[ConversationSummary]:
        query = (
            "SELECT c.id, c.mode, c.title, c.created_at, "
            "coalesce(max(m.created_at), c.created_at) AS active, count(m.id), "
            "(SELECT content FROM messages f WHERE f.conversation_id = c.id AND f.role = 'user' "
            " ORDER BY f.id LIMIT 1) "
            "FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id "
            "WHERE c.owner IS NOT DISTINCT FROM %s GROUP BY c.id"
        )
        params: list[Any] = [owner]
        if before is not None:
            query += " HAVING coalesce(max(m.created_at), c.created_at) < %s"
            params.append(before)
        query += " ORDER BY active DESC, c.id LIMIT %s"
        params.append(limit)
        with self.db.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [
            ConversationSummary(id=r[0], mode=r[1], title=r[2], first_question=r[6],
                                created_at=r[3], updated_at=r[4], messages=int(r[5]))
            for r in rows
        ]

    def rename_conversation(self, conv_id: str, owner: str | None, title: str | None) -> bool:
        with self.db.connection() as conn:
            cur = conn.execute(
                "UPDATE conversations SET title = %s WHERE id = %s "
                "AND owner IS NOT DISTINCT FROM %s",
                (title, conv_id, owner),
            )
            return cur.rowcount > 0

    def delete_conversation(self, conv_id: str, owner: str | None) -> bool:
        # The messages go with it (ON DELETE CASCADE).
        with self.db.connection() as conn:
            cur = conn.execute(
                "DELETE FROM conversations WHERE id = %s AND owner IS NOT DISTINCT FROM %s",
                (conv_id, owner),
            )
            return cur.rowcount > 0


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


def _now() -> datetime:
    """This process's clock, as the SQLite store uses: quota windows are computed from it too."""
    return datetime.now(UTC)
