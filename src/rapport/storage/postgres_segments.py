"""Segment definitions and their backfills on PostgreSQL.

Tables of ``0002_segments.sql`` and ``0006_backfills.sql``. A definition write and the start of the
backfill walking the profiles for its version commit in one transaction
(``rapport.core.backfill``). Computed-trait backfills live in
``postgres_computed_traits``.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from rapport.core.backfill import BackfillJob, start_backfill
from rapport.core.segments import deleted_definition, next_definition
from rapport.storage.base import SegmentAlreadyExists, SegmentDefinition, SegmentDraft
from rapport.storage.postgres_pool import Connection

# Segment writes read the latest version and store the next: the advisory
# lock serialises them (a row lock cannot cover an id not stored yet), which
# also makes revisions commit in increasing order.
_LOCK_SEGMENTS_SQL = (
    "SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || '.segment_definitions'))"
)
_LATEST_SEGMENT_SQL = "SELECT doc FROM segment_definitions WHERE workspace_id = $1 AND id = $2"
_LIST_SEGMENTS_SQL = """
SELECT doc FROM segment_definitions
WHERE workspace_id = $1 AND ($2 OR status = 'active') ORDER BY id COLLATE "C"
"""
_STORE_SEGMENT_SQL = """
INSERT INTO segment_definitions (workspace_id, id, version, status, revision, doc)
VALUES ($1, $2, $3, $4, (SELECT coalesce(max(revision), 0) + 1 FROM segment_definitions), $5)
ON CONFLICT (workspace_id, id) DO UPDATE
SET version = excluded.version, status = excluded.status, revision = excluded.revision,
    doc = excluded.doc
"""

_PUT_BACKFILL_SQL = """
INSERT INTO segment_backfills (workspace_id, segment_id, version, status, doc)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (workspace_id, segment_id) DO UPDATE
SET version = excluded.version, status = excluded.status, doc = excluded.doc
WHERE excluded.version >= segment_backfills.version
RETURNING true
"""

_encode = msgspec.json.Encoder().encode
_decode_segment = msgspec.json.Decoder(SegmentDefinition).decode
_decode_backfill = msgspec.json.Decoder(BackfillJob).decode


async def put_segment(
    pool: asyncpg.Pool, lock_class: int, draft: SegmentDraft, now: datetime, create_only: bool
) -> SegmentDefinition:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK_SEGMENTS_SQL, lock_class)
        previous = await _latest_segment(conn, draft.workspace_id, draft.id)
        if create_only and previous is not None and previous.active:
            raise SegmentAlreadyExists(draft.workspace_id, draft.id)
        return await _store_segment(conn, next_definition(previous, draft, now))


async def get_segment(
    pool: asyncpg.Pool, workspace_id: str, segment_id: str
) -> SegmentDefinition | None:
    async with pool.acquire() as conn:
        found = await _latest_segment(conn, workspace_id, segment_id)
    return found if found is not None and found.active else None


async def list_segments(
    pool: asyncpg.Pool, workspace_id: str, include_deleted: bool
) -> list[SegmentDefinition]:
    rows = await pool.fetch(_LIST_SEGMENTS_SQL, workspace_id, include_deleted)
    return [_decode_segment(row[0]) for row in rows]


async def delete_segment(
    pool: asyncpg.Pool, lock_class: int, workspace_id: str, segment_id: str, now: datetime
) -> SegmentDefinition | None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK_SEGMENTS_SQL, lock_class)
        previous = await _latest_segment(conn, workspace_id, segment_id)
        if previous is None or not previous.active:
            return None
        return await _store_segment(conn, deleted_definition(previous, now))


async def segments_revision(pool: asyncpg.Pool) -> int:
    revision: int | None = await pool.fetchval("SELECT max(revision) FROM segment_definitions")
    return 0 if revision is None else revision


async def put_backfill(pool: asyncpg.Pool, job: BackfillJob) -> bool:
    stored: bool | None = await pool.fetchval(
        _PUT_BACKFILL_SQL,
        job.workspace_id,
        job.segment_id,
        job.version,
        job.status,
        _encode(job),
    )
    return bool(stored)


async def get_backfill(
    pool: asyncpg.Pool, workspace_id: str, segment_id: str
) -> BackfillJob | None:
    doc: bytes | None = await pool.fetchval(
        "SELECT doc FROM segment_backfills WHERE workspace_id = $1 AND segment_id = $2",
        workspace_id,
        segment_id,
    )
    return None if doc is None else _decode_backfill(doc)


async def running_backfills(pool: asyncpg.Pool) -> list[BackfillJob]:
    rows = await pool.fetch("SELECT doc FROM segment_backfills WHERE status = 'running'")
    return [_decode_backfill(row[0]) for row in rows]


async def _latest_segment(
    conn: Connection, workspace_id: str, segment_id: str
) -> SegmentDefinition | None:
    doc: bytes | None = await conn.fetchval(_LATEST_SEGMENT_SQL, workspace_id, segment_id)
    return None if doc is None else _decode_segment(doc)


async def _store_segment(conn: Connection, definition: SegmentDefinition) -> SegmentDefinition:
    doc = _encode(definition)
    await conn.execute(
        _STORE_SEGMENT_SQL,
        definition.workspace_id,
        definition.id,
        definition.version,
        definition.status,
        doc,
    )
    # Every definition write starts the walk of the profiles for its
    # version, in the same transaction (rapport.core.backfill).
    total: int = await conn.fetchval(
        "SELECT count(*) FROM profiles WHERE workspace_id = $1", definition.workspace_id
    )
    job = start_backfill(
        definition.workspace_id,
        definition.id,
        definition.version,
        total,
        definition.updated_at,
    )
    await conn.execute(
        _PUT_BACKFILL_SQL,
        job.workspace_id,
        job.segment_id,
        job.version,
        job.status,
        _encode(job),
    )
    # What a reader will get back (the caller's condition tree is not shared).
    return _decode_segment(doc)
