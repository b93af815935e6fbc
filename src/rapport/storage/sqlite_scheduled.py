"""Scheduled events on SQLite: the ``scheduled_events`` table of ``rapport.db``.

Rows are written inside a processing commit (``PreparedSchedule``, applied by
``sqlite_processing.PreparedBatch``) and read and deleted by the relay through the
functions below, which ``SqliteStorage`` runs on its reader connections and
its writer thread. See ``rapport.core.model.ScheduledEvent`` and
``rapport.runtime.relay`` for what the rows mean.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from rapport.core.model import Event, ScheduledEvent
from rapport.storage.base import ProcessingBatch
from rapport.storage.sqlite_db import BulkInsert, from_micros, to_micros

_encode = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(Event).decode

_COLUMNS = "workspace_id, schedule_key, due_at, message_id, event"
_UPSERT = BulkInsert(
    "scheduled_events",
    (
        "workspace_id",
        "schedule_key",
        "due_at",
        "origin_offset",
        "origin_index",
        "message_id",
        "event",
    ),
    "ON CONFLICT (workspace_id, schedule_key) DO UPDATE SET due_at = excluded.due_at,"
    " origin_offset = excluded.origin_offset, origin_index = excluded.origin_index,"
    " message_id = excluded.message_id, event = excluded.event",
)

_Row = tuple[str, str, int, str, bytes]


class PreparedSchedule:
    """A batch's scheduled and unscheduled rows as SQL parameters (encoding errors raise here)."""

    def __init__(self, batch: ProcessingBatch) -> None:
        self.cancelled = list(batch.unscheduled)
        # One statement may not upsert a key twice: the last row of a key wins.
        rows: dict[tuple[str, str], tuple[str, str, int, int, int, str, bytes]] = {}
        for index, row in enumerate(batch.scheduled):
            check_workspace(row)
            rows.pop((row.workspace_id, row.key), None)
            rows[(row.workspace_id, row.key)] = (
                row.workspace_id,
                row.key,
                to_micros(row.due_at),
                batch.offset,
                index,
                row.event.message_id,
                _encode(row.event),
            )
        self.rows = list(rows.values())

    def apply(self, conn: sqlite3.Connection) -> None:
        if self.cancelled:
            conn.executemany(
                "DELETE FROM scheduled_events WHERE workspace_id = ? AND schedule_key = ?",
                self.cancelled,
            )
        _UPSERT.run(conn, self.rows)


def check_workspace(row: ScheduledEvent) -> None:
    if row.event.workspace_id != row.workspace_id:
        raise ValueError(f"scheduled event {row.key!r} belongs to another workspace")


def read_due(conn: sqlite3.Connection, now: int, limit: int) -> list[_Row]:
    rows: list[_Row] = conn.execute(
        f"SELECT {_COLUMNS} FROM scheduled_events WHERE due_at <= ?"
        " ORDER BY due_at, origin_offset, origin_index LIMIT ?",
        (now, limit),
    ).fetchall()
    return rows


def read_next(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT min(due_at) FROM scheduled_events").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def read_one(conn: sqlite3.Connection, workspace_id: str, key: str) -> _Row | None:
    row: _Row | None = conn.execute(
        f"SELECT {_COLUMNS} FROM scheduled_events WHERE workspace_id = ? AND schedule_key = ?",
        (workspace_id, key),
    ).fetchone()
    return row


_DELETE_MAX_ROWS = 256
"""Rows per ``DELETE`` statement (4 parameters each)."""
_delete_sql: dict[int, str] = {}


def _delete_statement(rows: int) -> str:
    """The statement deleting ``rows`` rows, built once per size."""
    sql = _delete_sql.get(rows)
    if sql is None:
        values = ", ".join(["(?, ?, ?, ?)"] * rows)
        # The subquery walks the values and probes the primary key (a row-value
        # ``IN (VALUES ...)`` on the table itself scans it: checked in the tests).
        sql = (
            "DELETE FROM scheduled_events WHERE rowid IN (SELECT s.rowid"
            f" FROM (VALUES {values}) AS v JOIN scheduled_events AS s"
            " ON s.workspace_id = v.column1 AND s.schedule_key = v.column2"
            " WHERE s.due_at = v.column3 AND s.message_id = v.column4)"
        )
        _delete_sql[rows] = sql
    return sql


def delete_rows(conn: sqlite3.Connection, rows: Sequence[tuple[str, str, int, str]]) -> int:
    """Delete ``(workspace_id, key, due_at, message_id)`` rows still stored as such."""
    # One statement per 256 rows, not an executemany: that steps once per row,
    # and every step hands the GIL back and waits to take it again (behind the
    # event loop's thread when it is busy): 1,000 hand-backs per relay batch.
    deleted = 0
    for start in range(0, len(rows), _DELETE_MAX_ROWS):
        chunk = rows[start : start + _DELETE_MAX_ROWS]
        cursor = conn.execute(
            _delete_statement(len(chunk)), [value for row in chunk for value in row]
        )
        deleted += max(0, cursor.rowcount)
    return deleted


def identity(row: ScheduledEvent) -> tuple[str, str, int, str]:
    """What ``delete_rows`` matches a row on."""
    return (row.workspace_id, row.key, to_micros(row.due_at), row.event.message_id)


def scheduled_event(row: _Row) -> ScheduledEvent:
    workspace_id, key, due_at, _, body = row
    return ScheduledEvent(
        workspace_id=workspace_id, key=key, due_at=from_micros(due_at), event=_decode_event(body)
    )
