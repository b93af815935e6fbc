"""Journey versions on SQLite (table of ``rapport_0007_journeys.sql``).

Jobs for ``SqliteDatabase`` (see ``sqlite_db``): writes run on the single
writer thread, each in its own savepoint, so reading a journey's versions
and storing the next state is race free, a refused transition stores
nothing, and ``max(revision) + 1`` is unique.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from datetime import datetime
from typing import Any

import msgspec

from rapport.core.journeys.lifecycle import (
    JourneyAlreadyExists,
    JourneyNotFound,
    JourneyVersion,
    save_draft,
    transition,
)
from rapport.storage.base import ProcessingBatch
from rapport.storage.journey_signals import signal_rows
from rapport.storage.sqlite_scheduled import PreparedSchedule

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(JourneyVersion).decode

_COLUMNS_SQL = "SELECT doc FROM journey_versions"


def save_journey(
    conn: sqlite3.Connection,
    workspace_id: str,
    journey_id: str,
    definition: Any,
    now: datetime,
    create_only: bool,
) -> JourneyVersion:
    versions = journey_versions(conn, workspace_id, journey_id)
    if create_only and versions:
        raise JourneyAlreadyExists(workspace_id, journey_id)
    return _store(conn, save_draft(versions, workspace_id, journey_id, definition, now))


def transition_journey(
    conn: sqlite3.Connection, workspace_id: str, journey_id: str, action: str, now: datetime
) -> list[JourneyVersion]:
    versions = journey_versions(conn, workspace_id, journey_id)
    if not versions:
        raise JourneyNotFound(workspace_id, journey_id)
    changed = transition(versions, action, now)
    for version in changed:
        _store(conn, version)
    # The start-up signal commits with the new status (see ``journey_signals``).
    revision = journeys_revision(conn)
    signals = signal_rows(action, changed, revision, now)
    if signals:
        batch = ProcessingBatch(consumer="", offset=revision, scheduled=signals)
        PreparedSchedule(batch).apply(conn)
    return journey_versions(conn, workspace_id, journey_id)


def journey_versions(
    conn: sqlite3.Connection, workspace_id: str, journey_id: str
) -> list[JourneyVersion]:
    rows = conn.execute(
        f"{_COLUMNS_SQL} WHERE workspace_id = ? AND journey_id = ? ORDER BY version",
        (workspace_id, journey_id),
    ).fetchall()
    return [_decode(doc) for (doc,) in rows]


def journey_version(
    conn: sqlite3.Connection, workspace_id: str, journey_id: str, version: int
) -> JourneyVersion | None:
    row = conn.execute(
        f"{_COLUMNS_SQL} WHERE workspace_id = ? AND journey_id = ? AND version = ?",
        (workspace_id, journey_id, version),
    ).fetchone()
    return None if row is None else _decode(row[0])


def entry_journey_version(
    conn: sqlite3.Connection, workspace_id: str, journey_id: str
) -> JourneyVersion | None:
    row = conn.execute(
        f"{_COLUMNS_SQL} WHERE workspace_id = ? AND journey_id = ? AND status = 'published'"
        " ORDER BY version DESC LIMIT 1",
        (workspace_id, journey_id),
    ).fetchone()
    return None if row is None else _decode(row[0])


def list_journey_versions(
    conn: sqlite3.Connection, workspace_id: str, statuses: Collection[str] | None
) -> list[JourneyVersion]:
    if statuses is None:
        rows = conn.execute(
            f"{_COLUMNS_SQL} WHERE workspace_id = ? ORDER BY journey_id, version",
            (workspace_id,),
        ).fetchall()
    else:
        wanted = sorted(set(statuses))
        marks = ", ".join("?" for _ in wanted)
        rows = conn.execute(
            f"{_COLUMNS_SQL} WHERE workspace_id = ? AND status IN ({marks})"
            " ORDER BY journey_id, version",
            (workspace_id, *wanted),
        ).fetchall()
    return [_decode(doc) for (doc,) in rows]


def journeys_revision(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(revision) FROM journey_versions").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def _store(conn: sqlite3.Connection, version: JourneyVersion) -> JourneyVersion:
    doc = _encode(version)
    conn.execute(
        "INSERT INTO journey_versions (workspace_id, journey_id, version, status, revision, doc)"
        " VALUES (?, ?, ?, ?, (SELECT coalesce(max(revision), 0) + 1 FROM journey_versions), ?)"
        " ON CONFLICT (workspace_id, journey_id, version) DO UPDATE SET"
        " status = excluded.status, revision = excluded.revision, doc = excluded.doc",
        (version.workspace_id, version.journey_id, version.version, version.status, doc),
    )
    # What a reader will get back (the caller's definition tree is not shared).
    return _decode(doc)
