"""Computed-trait definitions on PostgreSQL (table of ``0004_computed_traits.sql``).

Writes read the latest version and store the next under a transaction-level
advisory lock (a row lock cannot cover an id not stored yet), which also
makes revisions commit in increasing order, as for segment definitions.

Every write of an active definition starts its backfill job (table of
``0015_computed_trait_backfills.sql``, see ``rapport.core.backfill``) in the
same transaction; the jobs are read and advanced here too.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from rapport.core.backfill import COMPUTED_TRAIT, BackfillJob, start_backfill
from rapport.core.computed_traits.definitions import (
    ComputedTraitAlreadyExists,
    ComputedTraitDefinition,
    ComputedTraitDraft,
    deleted_computed_trait,
    next_computed_trait,
)

_Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy

_LOCK_SQL = (
    "SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || '.computed_trait_definitions'))"
)
_LATEST_SQL = "SELECT doc FROM computed_trait_definitions WHERE workspace_id = $1 AND id = $2"
_LIST_SQL = """
SELECT doc FROM computed_trait_definitions
WHERE workspace_id = $1 AND ($2 OR status = 'active') ORDER BY id COLLATE "C"
"""
_STORE_SQL = """
INSERT INTO computed_trait_definitions (workspace_id, id, version, status, revision, doc)
VALUES ($1, $2, $3, $4,
        (SELECT coalesce(max(revision), 0) + 1 FROM computed_trait_definitions), $5)
ON CONFLICT (workspace_id, id) DO UPDATE
SET version = excluded.version, status = excluded.status, revision = excluded.revision,
    doc = excluded.doc
"""
_REVISION_SQL = "SELECT max(revision) FROM computed_trait_definitions"
_PUT_JOB_SQL = """
INSERT INTO computed_trait_backfills (workspace_id, trait_id, version, status, doc)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (workspace_id, trait_id) DO UPDATE
SET version = excluded.version, status = excluded.status, doc = excluded.doc
WHERE excluded.version >= computed_trait_backfills.version
RETURNING true
"""
_GET_JOB_SQL = "SELECT doc FROM computed_trait_backfills WHERE workspace_id = $1 AND trait_id = $2"
_RUNNING_JOBS_SQL = "SELECT doc FROM computed_trait_backfills WHERE status = 'running'"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ComputedTraitDefinition).decode
_decode_job = msgspec.json.Decoder(BackfillJob).decode


async def put_trait_definition(
    pool: asyncpg.Pool,
    lock_class: int,
    draft: ComputedTraitDraft,
    now: datetime,
    create_only: bool,
) -> ComputedTraitDefinition:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK_SQL, lock_class)
        previous = await _latest(conn, draft.workspace_id, draft.id)
        if create_only and previous is not None and previous.active:
            raise ComputedTraitAlreadyExists(draft.workspace_id, draft.id)
        stored = await _store(conn, next_computed_trait(previous, draft, now))
        # The walk that brings the profiles' past to this version.
        total: int = await conn.fetchval(
            "SELECT count(*) FROM profiles WHERE workspace_id = $1", stored.workspace_id
        )
        job = start_backfill(
            stored.workspace_id, stored.id, stored.version, total, now, COMPUTED_TRAIT
        )
        await _put_job(conn, job)
        return stored


async def put_trait_backfill(pool: asyncpg.Pool, job: BackfillJob) -> bool:
    async with pool.acquire() as conn:
        return await _put_job(conn, job)


async def get_trait_backfill(
    pool: asyncpg.Pool, workspace_id: str, trait_id: str
) -> BackfillJob | None:
    doc: bytes | None = await pool.fetchval(_GET_JOB_SQL, workspace_id, trait_id)
    return None if doc is None else _decode_job(doc)


async def running_trait_backfills(pool: asyncpg.Pool) -> list[BackfillJob]:
    return [_decode_job(row[0]) for row in await pool.fetch(_RUNNING_JOBS_SQL)]


async def _put_job(conn: _Connection, job: BackfillJob) -> bool:
    stored: bool | None = await conn.fetchval(
        _PUT_JOB_SQL, job.workspace_id, job.segment_id, job.version, job.status, _encode(job)
    )
    return bool(stored)


async def delete_trait_definition(
    pool: asyncpg.Pool, lock_class: int, workspace_id: str, trait_id: str, now: datetime
) -> ComputedTraitDefinition | None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK_SQL, lock_class)
        previous = await _latest(conn, workspace_id, trait_id)
        if previous is None or not previous.active:
            return None
        return await _store(conn, deleted_computed_trait(previous, now))


async def get_trait_definition(
    pool: asyncpg.Pool, workspace_id: str, trait_id: str
) -> ComputedTraitDefinition | None:
    doc: bytes | None = await pool.fetchval(_LATEST_SQL, workspace_id, trait_id)
    found = None if doc is None else _decode(doc)
    return found if found is not None and found.active else None


async def list_trait_definitions(
    pool: asyncpg.Pool, workspace_id: str, include_deleted: bool
) -> list[ComputedTraitDefinition]:
    rows = await pool.fetch(_LIST_SQL, workspace_id, include_deleted)
    return [_decode(row[0]) for row in rows]


async def trait_definitions_revision(pool: asyncpg.Pool) -> int:
    revision: int | None = await pool.fetchval(_REVISION_SQL)
    return 0 if revision is None else revision


async def _latest(
    conn: _Connection, workspace_id: str, trait_id: str
) -> ComputedTraitDefinition | None:
    doc: bytes | None = await conn.fetchval(_LATEST_SQL, workspace_id, trait_id)
    return None if doc is None else _decode(doc)


async def _store(conn: _Connection, definition: ComputedTraitDefinition) -> ComputedTraitDefinition:
    doc = _encode(definition)
    await conn.execute(
        _STORE_SQL,
        definition.workspace_id,
        definition.id,
        definition.version,
        definition.status,
        doc,
    )
    # What a reader will get back (the caller's compute tree is not shared).
    return _decode(doc)
