"""Code pools on SQLite (tables of ``rapport_0012_code_pools_inbox.sql``).

Every write is a job on the database's single writer thread (``sqlite_db``),
so a claim (read her code, else take the first available one) runs alone:
no two claims can take the same code. The unique index on
``(workspace, pool, profile)`` holds the one-code-per-profile rule anyway.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from rapport.core.code_pools import (
    AddedCodes,
    CodePool,
    CodePoolExists,
    CodePoolNotFound,
    PoolStats,
    unique_in_order,
)
from rapport.storage.code_pools import CodePoolStore
from rapport.storage.sqlite_db import SqliteDatabase, from_micros, to_micros

_POOL_COLUMNS = "workspace_id, pool_id, description, created_at"
_HELD_SQL = "SELECT code FROM pool_codes WHERE workspace_id = ? AND pool_id = ? AND profile_id = ?"
_NEXT_SQL = (
    "SELECT code FROM pool_codes INDEXED BY pool_codes_available"
    " WHERE workspace_id = ? AND pool_id = ? AND profile_id IS NULL ORDER BY seq LIMIT 1"
)
_CLAIM_SQL = (
    "UPDATE pool_codes SET profile_id = ?, message_key = ?, claimed_at = ?"
    " WHERE workspace_id = ? AND pool_id = ? AND code = ?"
)
_INSERT_CODE_SQL = (
    "INSERT INTO pool_codes (workspace_id, pool_id, code, seq, added_at) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)
_STATS_SQL = (
    "SELECT count(*) FILTER (WHERE profile_id IS NULL), count(profile_id)"
    " FROM pool_codes WHERE workspace_id = ? AND pool_id = ?"
)


def _pool(row: tuple[str, str, str, int]) -> CodePool:
    return CodePool(
        workspace_id=row[0], id=row[1], description=row[2], created_at=from_micros(row[3])
    )


def _require_pool(conn: sqlite3.Connection, workspace_id: str, pool_id: str) -> None:
    row = conn.execute(
        "SELECT 1 FROM code_pools WHERE workspace_id = ? AND pool_id = ?", (workspace_id, pool_id)
    ).fetchone()
    if row is None:
        raise CodePoolNotFound(workspace_id, pool_id)


class SqliteCodePools(CodePoolStore):
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create_pool(self, pool: CodePool) -> CodePool:
        created_at = to_micros(pool.created_at)

        def create(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    f"INSERT INTO code_pools ({_POOL_COLUMNS}) VALUES (?, ?, ?, ?)",
                    (pool.workspace_id, pool.id, pool.description, created_at),
                )
            except sqlite3.IntegrityError:
                raise CodePoolExists(pool.workspace_id, pool.id) from None

        await self._db.write(create)
        return pool

    async def get_pool(self, workspace_id: str, pool_id: str) -> CodePool | None:
        def get(conn: sqlite3.Connection) -> CodePool | None:
            row = conn.execute(
                f"SELECT {_POOL_COLUMNS} FROM code_pools WHERE workspace_id = ? AND pool_id = ?",
                (workspace_id, pool_id),
            ).fetchone()
            return None if row is None else _pool(row)

        return await self._db.read(get)

    async def list_pools(self, workspace_id: str) -> list[CodePool]:
        def listed(conn: sqlite3.Connection) -> list[CodePool]:
            rows = conn.execute(
                f"SELECT {_POOL_COLUMNS} FROM code_pools WHERE workspace_id = ? ORDER BY pool_id",
                (workspace_id,),
            ).fetchall()
            return [_pool(row) for row in rows]

        return await self._db.read(listed)

    async def add_codes(
        self, workspace_id: str, pool_id: str, codes: Sequence[str], now: datetime
    ) -> AddedCodes:
        added_at = to_micros(now)
        unique, _ = unique_in_order(codes)

        def add(conn: sqlite3.Connection) -> int:
            _require_pool(conn, workspace_id, pool_id)
            (last,) = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM pool_codes"
                " WHERE workspace_id = ? AND pool_id = ?",
                (workspace_id, pool_id),
            ).fetchone()
            before = conn.total_changes
            conn.executemany(
                _INSERT_CODE_SQL,
                (
                    (workspace_id, pool_id, code, last + n, added_at)
                    for n, code in enumerate(unique, start=1)
                ),
            )
            return conn.total_changes - before

        added = await self._db.write(add)
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
        claimed_at = to_micros(now)

        def claim(conn: sqlite3.Connection) -> str | None:
            held = conn.execute(_HELD_SQL, (workspace_id, pool_id, profile_id)).fetchone()
            if held is not None:
                return str(held[0])
            row = conn.execute(_NEXT_SQL, (workspace_id, pool_id)).fetchone()
            if row is None:
                _require_pool(conn, workspace_id, pool_id)
                return None
            code = str(row[0])
            conn.execute(
                _CLAIM_SQL, (profile_id, message_key, claimed_at, workspace_id, pool_id, code)
            )
            return code

        return await self._db.write(claim)

    async def pool_stats(self, workspace_id: str, pool_ids: Sequence[str]) -> dict[str, PoolStats]:
        def stats(conn: sqlite3.Connection) -> dict[str, PoolStats]:
            out: dict[str, PoolStats] = {}
            for pool_id in pool_ids:
                available, claimed = conn.execute(_STATS_SQL, (workspace_id, pool_id)).fetchone()
                out[pool_id] = PoolStats(available=available, claimed=claimed)
            return out

        return await self._db.read(stats)
