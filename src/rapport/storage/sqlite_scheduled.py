"""Scheduled events on SQLite: ``scheduled_events`` and ``scheduled_outbox`` in ``rapport.db``.

Rows are written inside a processing commit (``PreparedSchedule``, applied by
``sqlite_processing.PreparedBatch``) and read and deleted by the relay through the
functions below, which ``SqliteStorage`` runs on its reader connections and
its writer thread. See ``rapport.core.model.ScheduledEvent`` and
``rapport.runtime.relay`` for what the rows mean.

Two tables hold the rows. ``scheduled_events`` is keyed by ``(workspace_id,
key)`` and indexed by due instant: timers, which move and get cancelled.
``scheduled_outbox`` (migration ``rapport_0017``) is append-only: the rows
whose key is ``outbox:`` followed by their event's message id (the events a
step emits, due at once). Such a key names one event, so nothing moves its
row; storing it is one append at the end of the table, delivering it one
range delete by id. A row goes there only if it sorts after the table's last
row by ``(due_at, origin_offset, origin_index)``, the relay's order, so the
table is in that order by id and ``read_due`` merges its head with the
other table's earliest rows. Writing such a key again (a replayed step) may
leave a second row of the same event until the relay delivers both; the log
keeps one (its message id).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from rapport.core.model import Event, ScheduledEvent
from rapport.storage.base import ProcessingBatch
from rapport.storage.sqlite_db import BulkInsert, MicrosCache, from_micros, to_micros

OUTBOX_KEY_PREFIX = "outbox:"
"""Keys ``OUTBOX_KEY_PREFIX + event.message_id`` go to ``scheduled_outbox`` (the
processor's outbox keys, ``rapport.runtime.segment_effects.OUTBOX_KEY_PREFIX``:
were they to change, those rows would simply stay in ``scheduled_events``)."""

_encode = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(Event).decode

_COLUMNS = "workspace_id, schedule_key, due_at, origin_offset, origin_index, message_id, event"
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
_APPEND = BulkInsert(
    "scheduled_outbox",
    (
        "workspace_id",
        "due_at",
        "origin_offset",
        "origin_index",
        "message_id",
        "received_at",
        "event",
    ),
)

_Stored = tuple[str, str, int, int, int, str, bytes]
"""``(workspace_id, key, due_at, origin_offset, origin_index, message_id, event)``."""
_Appended = tuple[str, int, int, int, str, int, bytes]
"""A ``scheduled_outbox`` row but its id."""
Due = tuple[int | None, str, str, int, str, int | None, bytes]
"""A row read: ``(outbox id or None, workspace_id, key, due_at, message_id,
received_at (outbox rows only), event)``."""


class PreparedSchedule:
    """A batch's scheduled and unscheduled rows as SQL parameters (encoding errors raise here)."""

    def __init__(self, batch: ProcessingBatch) -> None:
        self.cancelled = list(batch.unscheduled)
        self.cancelled_outbox = [
            (ws, key[len(OUTBOX_KEY_PREFIX) :])
            for ws, key in self.cancelled
            if key.startswith(OUTBOX_KEY_PREFIX)
        ]
        # One statement may not upsert a key twice: the last row of a key wins
        # (the order of the rows is their origin_index, not their place here).
        rows: dict[tuple[str, str], tuple[_Stored, int | None]] = {}
        micros = MicrosCache()  # a step's rows mostly share their instants
        offset = batch.offset
        for index, row in enumerate(batch.scheduled):
            event = row.event
            ws, key, message_id = row.workspace_id, row.key, event.message_id
            if event.workspace_id != ws:
                check_workspace(row)
            rows[(ws, key)] = (
                (ws, key, micros(row.due_at), offset, index, message_id, _encode(event)),
                micros(event.received_at) if key == OUTBOX_KEY_PREFIX + message_id else None,
            )
        self.rows: list[_Stored] = []
        self.outbox: list[tuple[_Stored, int]] = []
        """Outbox-keyed rows with their event's ``received_at``, in write order."""
        for stored, received_at in rows.values():
            if received_at is None:
                self.rows.append(stored)
            else:
                self.outbox.append((stored, received_at))
        self.outbox.sort(key=lambda item: item[0][4])

    def apply(self, conn: sqlite3.Connection) -> None:
        if self.cancelled:
            conn.executemany(
                "DELETE FROM scheduled_events WHERE workspace_id = ? AND schedule_key = ?",
                self.cancelled,
            )
        if self.cancelled_outbox:
            # No index on the message id: the table holds what the relay has
            # not delivered yet, and nothing cancels these keys in practice.
            conn.executemany(
                "DELETE FROM scheduled_outbox WHERE workspace_id = ? AND message_id = ?",
                self.cancelled_outbox,
            )
        upserts = self.rows
        if self.outbox:
            appends, late = _in_order(conn, self.outbox)
            _APPEND.run(conn, appends)
            if late:
                upserts = upserts + late
        _UPSERT.run(conn, upserts)


def _in_order(
    conn: sqlite3.Connection, rows: list[tuple[_Stored, int]]
) -> tuple[list[_Appended], list[_Stored]]:
    """Split outbox rows into those sorting after the table's last row (appended) and the rest."""
    tail: tuple[int, int, int] | None = conn.execute(
        "SELECT due_at, origin_offset, origin_index FROM scheduled_outbox ORDER BY id DESC LIMIT 1"
    ).fetchone()
    appends: list[_Appended] = []
    late: list[_Stored] = []
    for stored, received_at in rows:
        ws, _, due_at, offset, index, message_id, body = stored
        if tail is None or (due_at, offset, index) > tail:
            appends.append((ws, due_at, offset, index, message_id, received_at, body))
            tail = (due_at, offset, index)
        else:
            late.append(stored)
    return appends, late


def check_workspace(row: ScheduledEvent) -> None:
    if row.event.workspace_id != row.workspace_id:
        raise ValueError(f"scheduled event {row.key!r} belongs to another workspace")


def read_due(conn: sqlite3.Connection, now: int, limit: int) -> list[Due]:
    """At most ``limit`` rows due at ``now``, in ``(due_at, origin_offset, origin_index)`` order."""
    timers = conn.execute(
        f"SELECT {_COLUMNS} FROM scheduled_events WHERE due_at <= ?"
        " ORDER BY due_at, origin_offset, origin_index LIMIT ?",
        (now, limit),
    ).fetchall()
    # In id order, which is that order too: the due rows are the table's head.
    outbox: list[tuple[int, str, int, int, int, str, int, bytes]] = []
    cursor = conn.execute(
        "SELECT id, workspace_id, due_at, origin_offset, origin_index, message_id, received_at,"
        " event FROM scheduled_outbox ORDER BY id LIMIT ?",
        (limit,),
    )
    try:
        for row in cursor:
            if row[2] > now:
                break
            outbox.append(row)
    finally:
        cursor.close()
    if not timers:
        return [
            (rowid, ws, OUTBOX_KEY_PREFIX + message_id, due_at, message_id, received_at, body)
            for rowid, ws, due_at, _, _, message_id, received_at, body in outbox
        ]
    merged: list[tuple[tuple[int, int, int], Due]] = [
        ((due_at, offset, index), (None, ws, key, due_at, message_id, None, body))
        for ws, key, due_at, offset, index, message_id, body in timers
    ]
    merged.extend(
        (
            (due_at, offset, index),
            (rowid, ws, OUTBOX_KEY_PREFIX + message_id, due_at, message_id, received_at, body),
        )
        for rowid, ws, due_at, offset, index, message_id, received_at, body in outbox
    )
    merged.sort(key=lambda item: item[0])
    return [due for _, due in merged[:limit]]


def read_next(conn: sqlite3.Connection) -> int | None:
    (timers,) = conn.execute("SELECT min(due_at) FROM scheduled_events").fetchone()
    head = conn.execute("SELECT due_at FROM scheduled_outbox ORDER BY id LIMIT 1").fetchone()
    found = [int(due) for due in (timers, None if head is None else head[0]) if due is not None]
    return min(found) if found else None


def read_one(conn: sqlite3.Connection, workspace_id: str, key: str) -> Due | None:
    row = conn.execute(
        "SELECT NULL, workspace_id, schedule_key, due_at, message_id, NULL, event"
        " FROM scheduled_events"
        " WHERE workspace_id = ? AND schedule_key = ?",
        (workspace_id, key),
    ).fetchone()
    if row is None and key.startswith(OUTBOX_KEY_PREFIX):
        row = conn.execute(
            "SELECT id, workspace_id, ?, due_at, message_id, received_at, event"
            " FROM scheduled_outbox"
            " WHERE workspace_id = ? AND message_id = ? ORDER BY id DESC LIMIT 1",
            (key, workspace_id, key[len(OUTBOX_KEY_PREFIX) :]),
        ).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3], row[4], row[5], row[6])


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


Identity = tuple[str, str, int, str]
"""What a row is matched on when deleted: ``(workspace_id, key, due_at, message_id)``."""


def delete_rows(
    conn: sqlite3.Connection,
    rows: Sequence[Identity],
    outbox_ids: Sequence[int] = (),
    outbox_rows: Sequence[Identity] = (),
) -> int:
    """Delete the rows still stored as read; return how many were deleted.

    ``rows``: rows of ``scheduled_events``; ``outbox_ids``: ids of
    ``scheduled_outbox`` rows read (never reused, and its rows never change);
    ``outbox_rows``: outbox-keyed rows whose table is not known, looked for
    in both.
    """
    deleted = 0
    for first, last in _runs(sorted(outbox_ids)):
        cursor = conn.execute(
            "DELETE FROM scheduled_outbox WHERE id BETWEEN ? AND ?", (first, last)
        )
        deleted += max(0, cursor.rowcount)
    if outbox_rows:
        rows = [*rows, *outbox_rows]
        cursor = conn.executemany(
            "DELETE FROM scheduled_outbox WHERE workspace_id = ? AND message_id = ? AND due_at = ?",
            [(ws, message_id, due_at) for ws, _, due_at, message_id in outbox_rows],
        )
        deleted += max(0, cursor.rowcount)
    # One statement per 256 rows, not an executemany: that steps once per row,
    # and every step hands the GIL back and waits to take it again (behind the
    # event loop's thread when it is busy): 1,000 hand-backs per relay batch.
    for start in range(0, len(rows), _DELETE_MAX_ROWS):
        chunk = rows[start : start + _DELETE_MAX_ROWS]
        cursor = conn.execute(
            _delete_statement(len(chunk)), [value for row in chunk for value in row]
        )
        deleted += max(0, cursor.rowcount)
    return deleted


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted ``ids`` as ``(first, last)`` runs of consecutive ids."""
    runs: list[tuple[int, int]] = []
    for rowid in ids:
        if runs and runs[-1][1] + 1 >= rowid:
            runs[-1] = (runs[-1][0], rowid)
        else:
            runs.append((rowid, rowid))
    return runs


def identity(row: ScheduledEvent) -> Identity:
    """What ``delete_rows`` matches a row on."""
    return (row.workspace_id, row.key, to_micros(row.due_at), row.event.message_id)


def is_outbox_key(row: ScheduledEvent) -> bool:
    """Whether ``row`` may be stored in ``scheduled_outbox``."""
    return row.key == OUTBOX_KEY_PREFIX + row.event.message_id


def scheduled_event(row: Due) -> ScheduledEvent:
    _, workspace_id, key, due_at, _, _, body = row
    return ScheduledEvent(
        workspace_id=workspace_id, key=key, due_at=from_micros(due_at), event=_decode_event(body)
    )


class ReadRows:
    """Which table each row of the latest ``read_due`` came from, for deleting it.

    A ``ScheduledEvent`` does not carry its outbox id: the storage remembers
    it for the rows it handed out last (the relay deletes what it just read),
    by identity, holding the rows so their ids stay theirs.
    """

    def __init__(self) -> None:
        self._rows: dict[int, tuple[ScheduledEvent, int | None]] = {}

    def remember(self, rows: list[ScheduledEvent], read: list[Due]) -> None:
        self._rows = {id(row): (row, due[0]) for row, due in zip(rows, read, strict=True)}

    def split(
        self, rows: Sequence[ScheduledEvent]
    ) -> tuple[list[Identity], list[int], list[Identity]]:
        """``(scheduled_events rows, outbox ids, outbox-keyed rows of either table)``."""
        timers: list[Identity] = []
        ids: list[int] = []
        unknown: list[Identity] = []
        known = self._rows
        for row in rows:
            found = known.get(id(row))
            if found is not None and found[0] is row:
                if found[1] is None:
                    timers.append(identity(row))
                else:
                    ids.append(found[1])
            elif is_outbox_key(row):
                unknown.append(identity(row))
            else:
                timers.append(identity(row))
        return timers, ids, unknown


class DueRows:
    """Due rows for the relay as they are stored: their events' JSON, appended as is.

    ``events`` go to ``SqliteEventLog.append_encoded``, then ``delete_rows``
    takes ``timers`` and ``outbox_ids``. An outbox row's JSON is what
    ``PreparedSchedule`` encoded; a ``scheduled_events`` row (a migration
    writes some with SQL) is decoded and encoded again, so the log only ever
    holds what the encoder makes of an ``Event``.
    """

    __slots__ = ("events", "outbox_ids", "timers")

    def __init__(self, read: list[Due]) -> None:
        self.events: list[tuple[str, str, int, bytes]] = []
        self.timers: list[Identity] = []
        self.outbox_ids: list[int] = []
        for rowid, ws, key, due_at, message_id, received_at, body in read:
            if rowid is None:
                self.timers.append((ws, key, due_at, message_id))
                event = _decode_event(body)
                self.events.append((ws, message_id, to_micros(event.received_at), _encode(event)))
            else:
                self.outbox_ids.append(rowid)
                self.events.append((ws, message_id, received_at or 0, body))
