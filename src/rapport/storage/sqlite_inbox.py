"""In-app inboxes on SQLite (table ``inbox_messages`` of ``rapport_0012_code_pools_inbox.sql``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

import msgspec

from rapport.storage.inbox import InboxMessage, InboxPage, InboxStore, check_page
from rapport.storage.sqlite_db import SqliteDatabase, from_micros, to_micros

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(InboxMessage).decode
_COLUMNS = "seq, read_at, doc"


def _message(row: tuple[int, int | None, bytes]) -> InboxMessage:
    seq, read_at, doc = row
    return msgspec.structs.replace(
        _decode(doc), seq=seq, read_at=None if read_at is None else from_micros(read_at)
    )


def _in(values: Sequence[str]) -> str:
    return ", ".join("?" * len(values))


class SqliteInbox(InboxStore):
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def put_message(self, message: InboxMessage) -> InboxMessage:
        check_page(1, message.created_at)
        doc = _encode(msgspec.structs.replace(message, seq=0, read_at=None))

        def put(conn: sqlite3.Connection) -> InboxMessage:
            conn.execute(
                "INSERT INTO inbox_messages (workspace_id, message_id, profile_id, doc)"
                " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (message.workspace_id, message.id, message.profile_id, doc),
            )
            stored = _get(conn, message.workspace_id, message.id)
            if stored is None:
                raise LookupError(f"inbox message {message.id!r} is missing after its insert")
            return stored

        return await self._db.write(put)

    async def get_message(self, workspace_id: str, message_id: str) -> InboxMessage | None:
        return await self._db.read(lambda conn: _get(conn, workspace_id, message_id))

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
        if not profile_ids:
            return InboxPage([], None)
        sql = (
            f"SELECT {_COLUMNS} FROM inbox_messages"
            f" WHERE workspace_id = ? AND profile_id IN ({_in(profile_ids)}) AND seq < ?"
            + (" AND read_at IS NULL" if unread_only else "")
            + " ORDER BY seq DESC LIMIT ?"
        )
        params = (workspace_id, *profile_ids, before or 2**63 - 1, limit + 1)

        def listed(conn: sqlite3.Connection) -> InboxPage:
            found = [_message(row) for row in conn.execute(sql, params).fetchall()]
            page = found[:limit]
            return InboxPage(page, page[-1].seq if len(found) > limit else None)

        return await self._db.read(listed)

    async def mark_read(
        self, workspace_id: str, message_id: str, now: datetime
    ) -> InboxMessage | None:
        check_page(1, now)
        read_at = to_micros(now)

        def mark(conn: sqlite3.Connection) -> InboxMessage | None:
            conn.execute(
                "UPDATE inbox_messages SET read_at = ?"
                " WHERE workspace_id = ? AND message_id = ? AND read_at IS NULL",
                (read_at, workspace_id, message_id),
            )
            return _get(conn, workspace_id, message_id)

        return await self._db.write(mark)

    async def unread_count(self, workspace_id: str, profile_ids: Sequence[str]) -> int:
        if not profile_ids:
            return 0
        sql = (
            "SELECT count(*) FROM inbox_messages WHERE workspace_id = ?"
            f" AND profile_id IN ({_in(profile_ids)}) AND read_at IS NULL"
        )

        def count(conn: sqlite3.Connection) -> int:
            return int(conn.execute(sql, (workspace_id, *profile_ids)).fetchone()[0])

        return await self._db.read(count)


def _get(conn: sqlite3.Connection, workspace_id: str, message_id: str) -> InboxMessage | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM inbox_messages WHERE workspace_id = ? AND message_id = ?",
        (workspace_id, message_id),
    ).fetchone()
    return None if row is None else _message(row)
