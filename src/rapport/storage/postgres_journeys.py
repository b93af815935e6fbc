"""Journey versions on PostgreSQL (table of ``0007_journeys.sql``).

Writes read the journey's versions and store the next state under a
transaction-level advisory lock (a row lock cannot cover a journey not
stored yet), which also makes revisions commit in increasing order, as for
segment definitions. A refused transition raises inside the transaction,
which then stores nothing; a publish or a resume stores its signal
(``journey_signals``) in ``scheduled_events`` in that same transaction.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from rapport.core.journeys.lifecycle import (
    JourneyAlreadyExists,
    JourneyNotFound,
    JourneyVersion,
    save_draft,
    transition,
)
from rapport.storage.base import ProcessingBatch
from rapport.storage.journey_signals import signal_rows
from rapport.storage.postgres_scheduled import scheduled_statements

_Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy

_LOCK_SQL = "SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || '.journey_versions'))"
_VERSIONS_SQL = """
SELECT doc FROM journey_versions WHERE workspace_id = $1 AND journey_id = $2 ORDER BY version
"""
_VERSION_SQL = """
SELECT doc FROM journey_versions WHERE workspace_id = $1 AND journey_id = $2 AND version = $3
"""
_ENTRY_SQL = """
SELECT doc FROM journey_versions
WHERE workspace_id = $1 AND journey_id = $2 AND status = 'published'
ORDER BY version DESC LIMIT 1
"""
_LIST_SQL = """
SELECT doc FROM journey_versions
WHERE workspace_id = $1 AND ($2::text[] IS NULL OR status = ANY($2::text[]))
ORDER BY journey_id COLLATE "C", version
"""
_STORE_SQL = """
INSERT INTO journey_versions (workspace_id, journey_id, version, status, revision, doc)
VALUES ($1, $2, $3, $4, (SELECT coalesce(max(revision), 0) + 1 FROM journey_versions), $5)
ON CONFLICT (workspace_id, journey_id, version) DO UPDATE
SET status = excluded.status, revision = excluded.revision, doc = excluded.doc
"""
_REVISION_SQL = "SELECT max(revision) FROM journey_versions"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(JourneyVersion).decode


async def save_journey(
    pool: asyncpg.Pool,
    lock_class: int,
    workspace_id: str,
    journey_id: str,
    definition: Any,
    now: datetime,
    create_only: bool,
) -> JourneyVersion:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK_SQL, lock_class)
        versions = await _versions(conn, workspace_id, journey_id)
        if create_only and versions:
            raise JourneyAlreadyExists(workspace_id, journey_id)
        return await _store(conn, save_draft(versions, workspace_id, journey_id, definition, now))


async def transition_journey(
    pool: asyncpg.Pool,
    lock_class: int,
    workspace_id: str,
    journey_id: str,
    action: str,
    now: datetime,
) -> list[JourneyVersion]:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK_SQL, lock_class)
        versions = await _versions(conn, workspace_id, journey_id)
        if not versions:
            raise JourneyNotFound(workspace_id, journey_id)
        changed = transition(versions, action, now)
        for version in changed:
            await _store(conn, version)
        # The start-up signal commits with the new status (see ``journey_signals``).
        revision: int = await conn.fetchval(_REVISION_SQL)
        signals = signal_rows(action, changed, revision, now)
        if signals:
            batch = ProcessingBatch(consumer="", offset=revision, scheduled=signals)
            for sql, args in scheduled_statements(batch, _encode):
                await conn.execute(sql, *args)
        return await _versions(conn, workspace_id, journey_id)


async def journey_versions(
    pool: asyncpg.Pool, workspace_id: str, journey_id: str
) -> list[JourneyVersion]:
    async with pool.acquire() as conn:
        return await _versions(conn, workspace_id, journey_id)


async def journey_version(
    pool: asyncpg.Pool, workspace_id: str, journey_id: str, version: int
) -> JourneyVersion | None:
    doc: bytes | None = await pool.fetchval(_VERSION_SQL, workspace_id, journey_id, version)
    return None if doc is None else _decode(doc)


async def entry_journey_version(
    pool: asyncpg.Pool, workspace_id: str, journey_id: str
) -> JourneyVersion | None:
    doc: bytes | None = await pool.fetchval(_ENTRY_SQL, workspace_id, journey_id)
    return None if doc is None else _decode(doc)


async def list_journey_versions(
    pool: asyncpg.Pool, workspace_id: str, statuses: Collection[str] | None
) -> list[JourneyVersion]:
    wanted = None if statuses is None else sorted(set(statuses))
    rows = await pool.fetch(_LIST_SQL, workspace_id, wanted)
    return [_decode(row[0]) for row in rows]


async def journeys_revision(pool: asyncpg.Pool) -> int:
    revision: int | None = await pool.fetchval(_REVISION_SQL)
    return 0 if revision is None else revision


async def _versions(conn: _Connection, workspace_id: str, journey_id: str) -> list[JourneyVersion]:
    rows = await conn.fetch(_VERSIONS_SQL, workspace_id, journey_id)
    return [_decode(row[0]) for row in rows]


async def _store(conn: _Connection, version: JourneyVersion) -> JourneyVersion:
    doc = _encode(version)
    await conn.execute(
        _STORE_SQL, version.workspace_id, version.journey_id, version.version, version.status, doc
    )
    # What a reader will get back (the caller's definition tree is not shared).
    return _decode(doc)
