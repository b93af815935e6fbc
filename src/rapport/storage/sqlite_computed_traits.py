"""Computed-trait definitions on SQLite (table of ``rapport_0004_computed_traits.sql``).

Jobs for ``SqliteDatabase`` (see ``sqlite_db``): writes run on the single
writer thread, so reading the latest version and storing the next is race
free, and so is ``max(revision) + 1``.

Every write of an active definition starts its backfill job (table of
``rapport_0015_computed_trait_backfills.sql``, see ``rapport.core.backfill``)
in the same transaction; the jobs are read and advanced here too.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

import msgspec

from rapport.core.backfill import COMPUTED_TRAIT, BackfillJob, start_backfill
from rapport.core.computed_traits.definitions import (
    ComputedTraitAlreadyExists,
    ComputedTraitDefinition,
    ComputedTraitDraft,
    deleted_computed_trait,
    next_computed_trait,
)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ComputedTraitDefinition).decode
_decode_job = msgspec.json.Decoder(BackfillJob).decode


def put_trait_definition(
    conn: sqlite3.Connection, draft: ComputedTraitDraft, now: datetime, create_only: bool
) -> ComputedTraitDefinition:
    previous = latest_trait_definition(conn, draft.workspace_id, draft.id)
    if create_only and previous is not None and previous.active:
        raise ComputedTraitAlreadyExists(draft.workspace_id, draft.id)
    stored = _store(conn, next_computed_trait(previous, draft, now))
    # The walk that brings the profiles' past to this version.
    (total,) = conn.execute(
        "SELECT count(*) FROM profiles WHERE workspace_id = ?", (stored.workspace_id,)
    ).fetchone()
    put_trait_backfill(
        conn,
        start_backfill(
            stored.workspace_id, stored.id, stored.version, int(total), now, COMPUTED_TRAIT
        ),
    )
    return stored


def put_trait_backfill(conn: sqlite3.Connection, job: BackfillJob) -> bool:
    """Store ``job`` unless a newer version's job is stored; whether it was."""
    cursor = conn.execute(
        "INSERT INTO computed_trait_backfills (workspace_id, trait_id, version, status, doc)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (workspace_id, trait_id) DO UPDATE"
        " SET version = excluded.version, status = excluded.status, doc = excluded.doc"
        " WHERE excluded.version >= computed_trait_backfills.version",
        (job.workspace_id, job.segment_id, job.version, job.status, _encode(job)),
    )
    return cursor.rowcount > 0


def get_trait_backfill(
    conn: sqlite3.Connection, workspace_id: str, trait_id: str
) -> BackfillJob | None:
    row = conn.execute(
        "SELECT doc FROM computed_trait_backfills WHERE workspace_id = ? AND trait_id = ?",
        (workspace_id, trait_id),
    ).fetchone()
    return None if row is None else _decode_job(row[0])


def running_trait_backfills(conn: sqlite3.Connection) -> list[BackfillJob]:
    rows = conn.execute(
        "SELECT doc FROM computed_trait_backfills WHERE status = 'running'"
    ).fetchall()
    return [_decode_job(doc) for (doc,) in rows]


def delete_trait_definition(
    conn: sqlite3.Connection, workspace_id: str, trait_id: str, now: datetime
) -> ComputedTraitDefinition | None:
    previous = latest_trait_definition(conn, workspace_id, trait_id)
    if previous is None or not previous.active:
        return None
    return _store(conn, deleted_computed_trait(previous, now))


def latest_trait_definition(
    conn: sqlite3.Connection, workspace_id: str, trait_id: str
) -> ComputedTraitDefinition | None:
    """The latest version, tombstones included."""
    row = conn.execute(
        "SELECT doc FROM computed_trait_definitions WHERE workspace_id = ? AND id = ?",
        (workspace_id, trait_id),
    ).fetchone()
    return None if row is None else _decode(row[0])


def list_trait_definitions(
    conn: sqlite3.Connection, workspace_id: str, include_deleted: bool
) -> list[ComputedTraitDefinition]:
    rows = conn.execute(
        "SELECT doc FROM computed_trait_definitions"
        " WHERE workspace_id = ? AND (? OR status = 'active') ORDER BY id",
        (workspace_id, include_deleted),
    ).fetchall()
    return [_decode(doc) for (doc,) in rows]


def trait_definitions_revision(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(revision) FROM computed_trait_definitions").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def _store(
    conn: sqlite3.Connection, definition: ComputedTraitDefinition
) -> ComputedTraitDefinition:
    doc = _encode(definition)
    conn.execute(
        "INSERT INTO computed_trait_definitions"
        " (workspace_id, id, version, status, revision, doc) VALUES (?, ?, ?, ?,"
        " (SELECT coalesce(max(revision), 0) + 1 FROM computed_trait_definitions), ?)"
        " ON CONFLICT (workspace_id, id) DO UPDATE SET version = excluded.version,"
        " status = excluded.status, revision = excluded.revision, doc = excluded.doc",
        (definition.workspace_id, definition.id, definition.version, definition.status, doc),
    )
    # What a reader will get back (the caller's compute tree is not shared).
    return _decode(doc)
