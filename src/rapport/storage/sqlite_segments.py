"""Segment definitions and their backfills on SQLite.

Tables of ``rapport_0002_segments.sql`` and ``rapport_0006_backfills.sql``.
Jobs for ``SqliteDatabase`` (see ``sqlite_db``). A definition write and the
start of the backfill walking the profiles for its version commit in one
transaction (``rapport.core.backfill``); writes are serialised by the single
writer, so reading the latest version and storing the next is race free.
Computed-trait backfills live in ``sqlite_computed_traits``.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

import msgspec

from rapport.core.backfill import BackfillJob, start_backfill
from rapport.core.segments import deleted_definition, next_definition
from rapport.storage.base import SegmentAlreadyExists, SegmentDefinition, SegmentDraft

_encode = msgspec.json.Encoder().encode
_decode_segment = msgspec.json.Decoder(SegmentDefinition).decode
decode_backfill = msgspec.json.Decoder(BackfillJob).decode


def put_segment(
    conn: sqlite3.Connection, draft: SegmentDraft, now: datetime, create_only: bool
) -> SegmentDefinition:
    previous = _latest_segment(conn, draft.workspace_id, draft.id)
    if create_only and previous is not None and previous.active:
        raise SegmentAlreadyExists(draft.workspace_id, draft.id)
    return _store_segment(conn, next_definition(previous, draft, now))


def get_segment(
    conn: sqlite3.Connection, workspace_id: str, segment_id: str
) -> SegmentDefinition | None:
    found = _latest_segment(conn, workspace_id, segment_id)
    return found if found is not None and found.active else None


def list_segments(
    conn: sqlite3.Connection, workspace_id: str, include_deleted: bool
) -> list[SegmentDefinition]:
    rows = conn.execute(
        "SELECT doc FROM segment_definitions"
        " WHERE workspace_id = ? AND (? OR status = 'active') ORDER BY id",
        (workspace_id, include_deleted),
    ).fetchall()
    return [_decode_segment(doc) for (doc,) in rows]


def delete_segment(
    conn: sqlite3.Connection, workspace_id: str, segment_id: str, now: datetime
) -> SegmentDefinition | None:
    previous = _latest_segment(conn, workspace_id, segment_id)
    if previous is None or not previous.active:
        return None
    return _store_segment(conn, deleted_definition(previous, now))


def segments_revision(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(revision) FROM segment_definitions").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def backfill_doc(conn: sqlite3.Connection, workspace_id: str, segment_id: str) -> bytes | None:
    """The stored job, undecoded (see ``decode_backfill``)."""
    row = conn.execute(
        "SELECT doc FROM segment_backfills WHERE workspace_id = ? AND segment_id = ?",
        (workspace_id, segment_id),
    ).fetchone()
    return None if row is None else bytes(row[0])


def running_backfill_docs(conn: sqlite3.Connection) -> list[bytes]:
    """The running jobs, undecoded (see ``decode_backfill``)."""
    rows = conn.execute("SELECT doc FROM segment_backfills WHERE status = 'running'").fetchall()
    return [bytes(doc) for (doc,) in rows]


def _latest_segment(
    conn: sqlite3.Connection, workspace_id: str, segment_id: str
) -> SegmentDefinition | None:
    row = conn.execute(
        "SELECT doc FROM segment_definitions WHERE workspace_id = ? AND id = ?",
        (workspace_id, segment_id),
    ).fetchone()
    return None if row is None else _decode_segment(row[0])


def _store_segment(conn: sqlite3.Connection, definition: SegmentDefinition) -> SegmentDefinition:
    # Writes are serialised by the single writer, so max + 1 is race free.
    doc = _encode(definition)
    conn.execute(
        "INSERT INTO segment_definitions (workspace_id, id, version, status, revision, doc)"
        " VALUES (?, ?, ?, ?, (SELECT coalesce(max(revision), 0) + 1 FROM segment_definitions), ?)"
        " ON CONFLICT (workspace_id, id) DO UPDATE SET version = excluded.version,"
        " status = excluded.status, revision = excluded.revision, doc = excluded.doc",
        (definition.workspace_id, definition.id, definition.version, definition.status, doc),
    )
    # Every definition write starts the walk of the profiles for its version,
    # in the same transaction (rapport.core.backfill).
    (total,) = conn.execute(
        "SELECT count(*) FROM profiles WHERE workspace_id = ?", (definition.workspace_id,)
    ).fetchone()
    store_backfill(
        conn,
        start_backfill(
            definition.workspace_id,
            definition.id,
            definition.version,
            int(total),
            definition.updated_at,
        ),
    )
    # What a reader will get back (the caller's condition tree is not shared).
    return _decode_segment(doc)


def store_backfill(conn: sqlite3.Connection, job: BackfillJob) -> bool:
    cursor = conn.execute(
        "INSERT INTO segment_backfills (workspace_id, segment_id, version, status, doc)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (workspace_id, segment_id) DO UPDATE"
        " SET version = excluded.version, status = excluded.status, doc = excluded.doc"
        " WHERE excluded.version >= segment_backfills.version",
        (job.workspace_id, job.segment_id, job.version, job.status, _encode(job)),
    )
    return cursor.rowcount > 0
