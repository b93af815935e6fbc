"""Scheduled events on PostgreSQL: the ``scheduled_events`` table.

Rows are written by the processing commit (``scheduled_statements``, run in
its transaction by ``postgres_processing.processing_statements``) and read and deleted
by the relay through ``PostgresStorage``. Relays of several workers take
turns through a session advisory lock (``TRY_LOCK_SQL``): one delivers, the
others find the lock taken and go back to sleep, so they neither pile onto
the same rows nor append one profile's events out of order. A worker that
dies holding the lock loses its connection, and the lock with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import asyncpg
import msgspec

from rapport.core.model import Event, ScheduledEvent
from rapport.storage.base import ProcessingBatch

_Statement: TypeAlias = tuple[str, tuple[object, ...]]
_decode_event = msgspec.json.Decoder(Event).decode

_LOCK_KEY = "hashtext(current_schema() || '.scheduled_events')"
TRY_LOCK_SQL = f"SELECT pg_try_advisory_lock($1, {_LOCK_KEY})"
UNLOCK_SQL = f"SELECT pg_advisory_unlock($1, {_LOCK_KEY})"

_COLUMNS = "workspace_id, schedule_key AS key, due_at, event"
DUE_SQL = f"""
SELECT {_COLUMNS} FROM scheduled_events
WHERE due_at <= $1 ORDER BY due_at, origin_offset, origin_index LIMIT $2
"""
NEXT_SQL = "SELECT min(due_at) FROM scheduled_events"
GET_SQL = f"SELECT {_COLUMNS} FROM scheduled_events WHERE workspace_id = $1 AND schedule_key = $2"
DELETE_SQL = """
DELETE FROM scheduled_events AS s
USING unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS u(w, k, d, m)
WHERE s.workspace_id = u.w AND s.schedule_key = u.k AND s.due_at = u.d AND s.message_id = u.m
"""
_CANCEL_SQL = """
DELETE FROM scheduled_events AS s USING unnest($1::text[], $2::text[]) AS u(w, k)
WHERE s.workspace_id = u.w AND s.schedule_key = u.k
"""
_UPSERT_SQL = """
INSERT INTO scheduled_events
    (workspace_id, schedule_key, due_at, origin_offset, origin_index, message_id, event)
SELECT w, k, d, $4::bigint, i, m, e
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $5::int[], $6::text[], $7::bytea[])
     AS u(w, k, d, i, m, e)
ON CONFLICT (workspace_id, schedule_key) DO UPDATE
SET due_at = excluded.due_at, origin_offset = excluded.origin_offset,
    origin_index = excluded.origin_index, message_id = excluded.message_id, event = excluded.event
"""


def scheduled_statements(
    batch: ProcessingBatch, encode: Callable[[object], bytes]
) -> list[_Statement]:
    """Cancels, then upserts: what a processing commit does to ``scheduled_events``."""
    statements: list[_Statement] = []
    if batch.unscheduled:
        cancelled = dict.fromkeys(batch.unscheduled)
        statements.append(
            (_CANCEL_SQL, ([ws for ws, _ in cancelled], [key for _, key in cancelled]))
        )
    if batch.scheduled:
        # One statement may not update a row twice: the last row of a key wins.
        latest: dict[tuple[str, str], tuple[int, ScheduledEvent]] = {}
        for index, row in enumerate(batch.scheduled):
            if row.event.workspace_id != row.workspace_id:
                raise ValueError(f"scheduled event {row.key!r} belongs to another workspace")
            if row.due_at.utcoffset() is None:
                # asyncpg would take it as UTC; the other backends refuse it.
                raise ValueError(f"scheduled event {row.key!r}: due_at is a naive datetime")
            latest.pop((row.workspace_id, row.key), None)
            latest[(row.workspace_id, row.key)] = (index, row)
        rows = list(latest.values())
        statements.append(
            (
                _UPSERT_SQL,
                (
                    [row.workspace_id for _, row in rows],
                    [row.key for _, row in rows],
                    [row.due_at for _, row in rows],
                    batch.offset,
                    [index for index, _ in rows],
                    [row.event.message_id for _, row in rows],
                    [encode(row.event) for _, row in rows],
                ),
            )
        )
    return statements


def delete_arguments(rows: list[ScheduledEvent]) -> tuple[list[Any], ...]:
    return (
        [row.workspace_id for row in rows],
        [row.key for row in rows],
        [row.due_at for row in rows],
        [row.event.message_id for row in rows],
    )


def scheduled_event(row: asyncpg.Record) -> ScheduledEvent:
    return ScheduledEvent(
        workspace_id=row["workspace_id"],
        key=row["key"],
        due_at=row["due_at"],
        event=_decode_event(row["event"]),
    )
