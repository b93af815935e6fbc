"""Policy documents on PostgreSQL (table of ``0010_policies.sql``).

A write reads the workspace's latest version and stores the next one under
a transaction-level advisory lock (a row lock cannot cover a workspace
without a row yet), so two writers never compute the same version.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from rapport.core.policy.document import PolicyDocument, StoredPolicy
from rapport.storage.policies import decode_policy, encode_policy, next_policy

_LOCK_SQL = "SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || '.policy_versions'))"
_LATEST_SQL = "SELECT coalesce(max(version), 0) FROM policy_versions WHERE workspace_id = $1"
_STORE_SQL = "INSERT INTO policy_versions (workspace_id, version, doc) VALUES ($1, $2, $3)"
_GET_LATEST_SQL = (
    "SELECT doc FROM policy_versions WHERE workspace_id = $1 ORDER BY version DESC LIMIT 1"
)
_GET_SQL = "SELECT doc FROM policy_versions WHERE workspace_id = $1 AND version = $2"


async def put_policy(
    pool: asyncpg.Pool,
    lock_class: int,
    workspace_id: str,
    document: PolicyDocument,
    now: datetime,
    expected_version: int | None,
) -> StoredPolicy:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK_SQL, lock_class)
        current: int = await conn.fetchval(_LATEST_SQL, workspace_id)
        stored = next_policy(workspace_id, current, document, now, expected_version)
        doc = encode_policy(stored)
        await conn.execute(_STORE_SQL, workspace_id, stored.version, doc)
        return decode_policy(doc)


async def get_policy(
    pool: asyncpg.Pool, workspace_id: str, version: int | None
) -> StoredPolicy | None:
    if version is None:
        doc: bytes | None = await pool.fetchval(_GET_LATEST_SQL, workspace_id)
    else:
        doc = await pool.fetchval(_GET_SQL, workspace_id, version)
    return None if doc is None else decode_policy(doc)


async def policies_revision(pool: asyncpg.Pool) -> int:
    # Versions are never deleted: the row count grows with every write.
    count: int = await pool.fetchval("SELECT count(*) FROM policy_versions")
    return count
