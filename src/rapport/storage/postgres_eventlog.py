"""The event log on PostgreSQL: ordered, durable, deduplicated appends.

The ordering and dedup logic lives in the ``event_log_append`` SQL function
(``migrations/postgres/0001_initial.sql``) so an append of a whole batch is
one round trip and one transaction; read the comment there for why offsets
become visible strictly in commit order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import asyncpg
import msgspec

from rapport.core.model import Event, LogEntry
from rapport.storage.base import EventLog

_APPEND_SQL = "SELECT event_log_append($1::text[], $2::text[], $3::timestamptz[], $4::bytea[])"
_READ_SQL = (
    "SELECT log_offset, body FROM event_log WHERE log_offset > $1 ORDER BY log_offset LIMIT $2"
)
_END_OFFSET_SQL = "SELECT last_offset FROM event_log_head"
_PRUNE_DEDUP_SQL = "DELETE FROM event_dedup WHERE first_seen < $1"


class PostgresEventLog(EventLog):
    """``EventLog`` over a shared asyncpg pool (see ``open_postgres``)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._pool = pool
        self._on_close = on_close
        self._closed = False
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(Event)

    async def append(self, events: Sequence[Event]) -> list[bool]:
        if not events:
            return []
        result = [False] * len(events)
        # Duplicates within the call are settled here, so the database only
        # sees distinct keys (keeping the first occurrence, as documented).
        seen: set[tuple[str, str]] = set()
        positions: list[int] = []
        workspace_ids: list[str] = []
        message_ids: list[str] = []
        received_ats: list[datetime] = []
        bodies: list[bytes] = []
        for position, event in enumerate(events):
            key = (event.workspace_id, event.message_id)
            if key in seen:
                continue
            seen.add(key)
            positions.append(position)
            workspace_ids.append(event.workspace_id)
            message_ids.append(event.message_id)
            # The dedup window is measured in the clock's time (received_at),
            # not the database's, so it agrees with ``prune_dedup``'s caller.
            received_ats.append(event.received_at)
            bodies.append(self._encoder.encode(event))
        fresh: list[int] = await self._pool.fetchval(
            _APPEND_SQL, workspace_ids, message_ids, received_ats, bodies
        )
        for fresh_position in fresh:
            result[positions[fresh_position - 1]] = True
        return result

    async def read(self, after: int, limit: int) -> list[LogEntry]:
        if limit <= 0:
            return []
        rows = await self._pool.fetch(_READ_SQL, after, limit)
        decode = self._decoder.decode
        return [LogEntry(row[0], decode(row[1])) for row in rows]

    async def end_offset(self) -> int:
        offset: int = await self._pool.fetchval(_END_OFFSET_SQL)
        return offset

    async def prune_dedup(self, older_than: datetime) -> int:
        status = await self._pool.execute(_PRUNE_DEDUP_SQL, older_than)
        return int(status.rsplit(" ", 1)[1])

    async def open(self) -> None:
        """Nothing to do: ``open_postgres`` connects and migrates."""

    async def close(self) -> None:
        """Give back this log's share of the pool (in-flight appends finish first)."""
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            await self._on_close()
