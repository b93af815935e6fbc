"""Code pools on PostgreSQL (tables of ``0012_code_pools_inbox.sql``).

A claim is one statement: ``UPDATE ... WHERE code = (SELECT ... FOR UPDATE
SKIP LOCKED LIMIT 1) RETURNING code``. Concurrent claims each lock a
different available row (none waits for another), so no code is given
twice; the unique index on ``(workspace, pool, profile)`` refuses a second
code for one profile, and the claim that loses that race reads the winner's
code instead. When every available row is locked by claims still running,
the claim tries again once they finish: an unlocked-looking pool is not
exhausted until a fresh snapshot says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from rapport.core.code_pools import (
    AddedCodes,
    CodePool,
    CodePoolExists,
    CodePoolNotFound,
    PoolStats,
    unique_in_order,
)
from rapport.storage.code_pools import CodePoolStore

_POOL_COLUMNS = "workspace_id, pool_id, description, created_at"
_EXISTS_SQL = "SELECT 1 FROM code_pools WHERE workspace_id = $1 AND pool_id = $2"
_HELD_SQL = (
    "SELECT code FROM pool_codes WHERE workspace_id = $1 AND pool_id = $2 AND profile_id = $3"
)
_CLAIM_SQL = """
UPDATE pool_codes SET profile_id = $3, message_key = $4, claimed_at = $5
WHERE workspace_id = $1 AND pool_id = $2 AND code = (
    SELECT code FROM pool_codes
    WHERE workspace_id = $1 AND pool_id = $2 AND profile_id IS NULL
    ORDER BY seq LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING code
"""
_ANY_AVAILABLE_SQL = """
SELECT EXISTS (
    SELECT 1 FROM pool_codes WHERE workspace_id = $1 AND pool_id = $2 AND profile_id IS NULL
)
"""
_ADD_SQL = """
INSERT INTO pool_codes (workspace_id, pool_id, code, added_at)
SELECT $1, $2, u.code, $4 FROM unnest($3::text[]) WITH ORDINALITY AS u(code, n)
ORDER BY u.n
ON CONFLICT DO NOTHING
"""
_STATS_SQL = """
SELECT pool_id, count(*) FILTER (WHERE profile_id IS NULL), count(profile_id)
FROM pool_codes WHERE workspace_id = $1 AND pool_id = ANY($2::text[])
GROUP BY pool_id
"""
_RETRY_PAUSE = 0.002
_MAX_RETRY_PAUSE = 0.05


def _pool(row: asyncpg.Record) -> CodePool:
    return CodePool(
        workspace_id=row["workspace_id"],
        id=row["pool_id"],
        description=row["description"],
        created_at=row["created_at"],
    )


class PostgresCodePools(CodePoolStore):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_pool(self, pool: CodePool) -> CodePool:
        try:
            await self._pool.execute(
                f"INSERT INTO code_pools ({_POOL_COLUMNS}) VALUES ($1, $2, $3, $4)",
                pool.workspace_id,
                pool.id,
                pool.description,
                pool.created_at,
            )
        except asyncpg.UniqueViolationError:
            raise CodePoolExists(pool.workspace_id, pool.id) from None
        return pool

    async def get_pool(self, workspace_id: str, pool_id: str) -> CodePool | None:
        row = await self._pool.fetchrow(
            f"SELECT {_POOL_COLUMNS} FROM code_pools WHERE workspace_id = $1 AND pool_id = $2",
            workspace_id,
            pool_id,
        )
        return None if row is None else _pool(row)

    async def list_pools(self, workspace_id: str) -> list[CodePool]:
        rows = await self._pool.fetch(
            f"SELECT {_POOL_COLUMNS} FROM code_pools WHERE workspace_id = $1 ORDER BY pool_id",
            workspace_id,
        )
        return [_pool(row) for row in rows]

    async def add_codes(
        self, workspace_id: str, pool_id: str, codes: Sequence[str], now: datetime
    ) -> AddedCodes:
        unique, _ = unique_in_order(codes)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(_EXISTS_SQL, workspace_id, pool_id):
                raise CodePoolNotFound(workspace_id, pool_id)
            status: str = await conn.execute(_ADD_SQL, workspace_id, pool_id, unique, now)
        added = int(status.rsplit(" ", 1)[-1])
        return AddedCodes(added=added, duplicates=len(codes) - added)

    async def claim_code(
        self,
        workspace_id: str,
        pool_id: str,
        profile_id: str,
        message_key: str,
        *,
        now: datetime,
    ) -> str | None:
        pause = _RETRY_PAUSE
        async with self._pool.acquire() as conn:
            while True:
                held: str | None = await conn.fetchval(_HELD_SQL, workspace_id, pool_id, profile_id)
                if held is not None:
                    return held
                try:
                    code: str | None = await conn.fetchval(
                        _CLAIM_SQL, workspace_id, pool_id, profile_id, message_key, now
                    )
                except asyncpg.UniqueViolationError:
                    continue  # a concurrent claim for her committed first: read it
                if code is not None:
                    return code
                if not await conn.fetchval(_ANY_AVAILABLE_SQL, workspace_id, pool_id):
                    if not await conn.fetchval(_EXISTS_SQL, workspace_id, pool_id):
                        raise CodePoolNotFound(workspace_id, pool_id)
                    return None
                # Every available row is locked by a claim that has not
                # finished (each is one short statement): wait and look again.
                await asyncio.sleep(pause)
                pause = min(pause * 2, _MAX_RETRY_PAUSE)

    async def pool_stats(self, workspace_id: str, pool_ids: Sequence[str]) -> dict[str, PoolStats]:
        rows = await self._pool.fetch(_STATS_SQL, workspace_id, list(pool_ids))
        stats = {pool_id: PoolStats(available=0, claimed=0) for pool_id in pool_ids}
        for pool_id, available, claimed in rows:
            stats[pool_id] = PoolStats(available=available, claimed=claimed)
        return stats
