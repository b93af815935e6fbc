"""Template versions on PostgreSQL (table of ``0009_templates.sql``).

A write reads the id's latest version and stores the next one under a
transaction-level advisory lock (a row lock cannot cover an id not stored
yet), so two writers never compute the same version.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from rapport.core.templates.definitions import (
    TemplateAlreadyExists,
    TemplateDefinition,
    TemplateDraft,
    deleted_template,
    next_template,
)

_Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy

_LOCK_SQL = "SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || '.template_versions'))"
_LATEST_SQL = """
SELECT doc FROM template_versions WHERE workspace_id = $1 AND template_id = $2
ORDER BY version DESC LIMIT 1
"""
_VERSION_SQL = """
SELECT doc FROM template_versions
WHERE workspace_id = $1 AND template_id = $2 AND version = $3 AND status = 'active'
"""
_LIST_SQL = """
SELECT doc FROM (
    SELECT DISTINCT ON (template_id) status, doc FROM template_versions
    WHERE workspace_id = $1 ORDER BY template_id, version DESC
) AS latest WHERE status = 'active'
"""
_STORE_SQL = """
INSERT INTO template_versions (workspace_id, template_id, version, status, doc)
VALUES ($1, $2, $3, $4, $5)
"""

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(TemplateDefinition).decode


async def put_template(
    pool: asyncpg.Pool, lock_class: int, draft: TemplateDraft, now: datetime, create_only: bool
) -> TemplateDefinition:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK_SQL, lock_class)
        previous = await _latest(conn, draft.workspace_id, draft.id)
        if create_only and previous is not None and previous.active:
            raise TemplateAlreadyExists(draft.workspace_id, draft.id)
        return await _store(conn, next_template(previous, draft, now))


async def get_template(
    pool: asyncpg.Pool, workspace_id: str, template_id: str, version: int | None
) -> TemplateDefinition | None:
    if version is None:
        async with pool.acquire() as conn:
            found = await _latest(conn, workspace_id, template_id)
        return found if found is not None and found.active else None
    doc: bytes | None = await pool.fetchval(_VERSION_SQL, workspace_id, template_id, version)
    return None if doc is None else _decode(doc)


async def list_templates(pool: asyncpg.Pool, workspace_id: str) -> list[TemplateDefinition]:
    rows = await pool.fetch(_LIST_SQL, workspace_id)
    # Sorted here, by code point, as on the other backends (not by the collation).
    return sorted((_decode(row[0]) for row in rows), key=lambda definition: definition.id)


async def delete_template(
    pool: asyncpg.Pool, lock_class: int, workspace_id: str, template_id: str, now: datetime
) -> TemplateDefinition | None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK_SQL, lock_class)
        previous = await _latest(conn, workspace_id, template_id)
        if previous is None or not previous.active:
            return None
        return await _store(conn, deleted_template(previous, now))


async def _latest(
    conn: _Connection, workspace_id: str, template_id: str
) -> TemplateDefinition | None:
    doc: bytes | None = await conn.fetchval(_LATEST_SQL, workspace_id, template_id)
    return None if doc is None else _decode(doc)


async def _store(conn: _Connection, definition: TemplateDefinition) -> TemplateDefinition:
    doc = _encode(definition)
    await conn.execute(
        _STORE_SQL,
        definition.workspace_id,
        definition.id,
        definition.version,
        definition.status,
        doc,
    )
    return _decode(doc)
