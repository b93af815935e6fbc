"""Migration 0011 on a database that already holds outbox rows (SQLite and PostgreSQL).

Rows written before the delivery columns existed become due at once and
findable by profile: the migration reads the profile from each stored document.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec

from rapport.storage.base import Storage
from rapport.storage.migrations import (
    AsyncMigrationExecutor,
    apply_migrations_async,
    apply_migrations_sqlite,
    dialect_directory,
    load_migrations,
)
from rapport.storage.postgres import open_postgres
from rapport.storage.sqlite import RAPPORT_DB, open_sqlite
from tests import pg
from tests.unit.sender_helpers import WS, send_message

NOW = datetime(2026, 4, 1, tzinfo=UTC)
OLD = send_message("old", created_at=NOW - timedelta(days=1))
DOC = msgspec.json.encode(OLD)


async def test_sqlite_rows_written_before_0011_are_claimed_and_listed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    before = [
        m for m in load_migrations(dialect_directory("sqlite"), prefix="rapport_") if m.version < 11
    ]
    conn = sqlite3.connect(data_dir / RAPPORT_DB, isolation_level=None)
    try:
        apply_migrations_sqlite(conn, before)
        conn.execute(
            "INSERT INTO outbox (workspace_id, idempotency_key, status, doc)"
            " VALUES (?, ?, 'pending', ?)",
            (WS, OLD.idempotency_key, DOC),
        )
    finally:
        conn.close()
    storage, log = await open_sqlite(data_dir)
    try:
        await check_migrated(storage)
    finally:
        await log.close()
        await storage.close()


class _Executor(AsyncMigrationExecutor):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str) -> None:
        await self._conn.execute(sql)

    async def fetch_ints(self, sql: str) -> list[int]:
        return [row[0] for row in await self._conn.fetch(sql)]


async def test_postgres_rows_written_before_0011_are_claimed_and_listed() -> None:
    dsn, schema = pg.postgres_dsn(), pg.unique_schema()
    before = [m for m in load_migrations(dialect_directory("postgres")) if m.version < 11]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        async with conn.transaction():
            await apply_migrations_async(_Executor(conn), before)
        await conn.execute(
            "INSERT INTO outbox (workspace_id, idempotency_key, status, doc)"
            " VALUES ($1, $2, 'pending', $3)",
            WS,
            OLD.idempotency_key,
            DOC,
        )
    finally:
        await conn.close()
    try:
        storage, log = await open_postgres(dsn, schema=schema)
        try:
            await check_migrated(storage)
        finally:
            await log.close()
            await storage.close()
    finally:
        await pg.drop_schema(dsn, schema)


async def check_migrated(storage: Storage) -> None:
    page = await storage.list_profile_messages(WS, OLD.profile_id, 10)
    assert [m.idempotency_key for m in page.messages] == [OLD.idempotency_key]
    [claimed] = await storage.claim_due(NOW, 10)
    assert claimed.effect == OLD.effect and claimed.verdict == OLD.verdict
    assert claimed.attempts == 0 and claimed.status == "pending"
