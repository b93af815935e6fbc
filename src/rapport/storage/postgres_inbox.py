"""In-app inboxes on PostgreSQL (table ``inbox_messages`` of ``0012_code_pools_inbox.sql``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from rapport.storage.inbox import InboxMessage, InboxPage, InboxStore, check_page

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(InboxMessage).decode
_COLUMNS = "seq, read_at, doc"
_GET_SQL = f"SELECT {_COLUMNS} FROM inbox_messages WHERE workspace_id = $1 AND message_id = $2"
_LIST_SQL = f"""
SELECT {_COLUMNS} FROM inbox_messages
WHERE workspace_id = $1 AND profile_id = ANY($2::text[]) AND seq < $3
  AND (NOT $4 OR read_at IS NULL)
ORDER BY seq DESC LIMIT $5
"""
_MARK_SQL = """
UPDATE inbox_messages SET read_at = $3
WHERE workspace_id = $1 AND message_id = $2 AND read_at IS NULL
"""
_UNREAD_SQL = """
SELECT count(*) FROM inbox_messages
WHERE workspace_id = $1 AND profile_id = ANY($2::text[]) AND read_at IS NULL
"""


def _message(row: asyncpg.Record) -> InboxMessage:
    return msgspec.structs.replace(_decode(row["doc"]), seq=row["seq"], read_at=row["read_at"])


class PostgresInbox(InboxStore):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def put_message(self, message: InboxMessage) -> InboxMessage:
        check_page(1, message.created_at)
        doc = _encode(msgspec.structs.replace(message, seq=0, read_at=None))
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO inbox_messages (workspace_id, message_id, profile_id, doc)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                message.workspace_id,
                message.id,
                message.profile_id,
                doc,
            )
            row = await conn.fetchrow(_GET_SQL, message.workspace_id, message.id)
        if row is None:
            raise LookupError(f"inbox message {message.id!r} is missing after its insert")
        return _message(row)

    async def get_message(self, workspace_id: str, message_id: str) -> InboxMessage | None:
        row = await self._pool.fetchrow(_GET_SQL, workspace_id, message_id)
        return None if row is None else _message(row)

    async def list_messages(
        self,
        workspace_id: str,
        profile_ids: Sequence[str],
        limit: int,
        before: int | None = None,
        *,
        unread_only: bool = False,
    ) -> InboxPage:
        check_page(limit)
        rows = await self._pool.fetch(
            _LIST_SQL,
            workspace_id,
            list(profile_ids),
            before or 2**63 - 1,
            unread_only,
            limit + 1,
        )
        found = [_message(row) for row in rows]
        page = found[:limit]
        return InboxPage(page, page[-1].seq if len(found) > limit else None)

    async def mark_read(
        self, workspace_id: str, message_id: str, now: datetime
    ) -> InboxMessage | None:
        check_page(1, now)
        async with self._pool.acquire() as conn:
            await conn.execute(_MARK_SQL, workspace_id, message_id, now)
            row = await conn.fetchrow(_GET_SQL, workspace_id, message_id)
        return None if row is None else _message(row)

    async def unread_count(self, workspace_id: str, profile_ids: Sequence[str]) -> int:
        count: int = await self._pool.fetchval(_UNREAD_SQL, workspace_id, list(profile_ids))
        return count
