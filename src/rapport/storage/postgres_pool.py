"""The PostgreSQL connection pool: opening, migrating and sharing it.

``open_pool`` builds one asyncpg pool whose connections use the chosen schema
as their ``search_path``, creates the schema and applies the numbered
migrations in ``migrations/postgres/``. ``PoolLease`` closes that pool once
the storage and the event log sharing it have both let go.
"""

from __future__ import annotations

import re
from typing import TypeAlias

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from rapport.storage.migrations import (
    apply_migrations_async,
    dialect_directory,
    load_migrations,
)

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Named after the module that opens the backend, where operators look for it.
_log = structlog.get_logger("rapport.storage.postgres")

# Advisory locks are one shared namespace per database; the first key ("RAPT")
# keeps ours apart from other applications', the second names the schema.
LOCK_CLASS = 0x52415054
# A connection as the pool hands it out, or a bare one.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy


async def open_pool(dsn: str, *, schema: str, min_size: int, max_size: int) -> asyncpg.Pool:
    """Connect and migrate ``schema`` (creating it if missing)."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"schema must be a plain SQL identifier, got {schema!r}")
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        server_settings={"search_path": f'"{schema}"'},
    )
    try:
        async with pool.acquire() as conn:
            await _migrate(conn, schema)
            synchronous_commit = await conn.fetchval("SHOW synchronous_commit")
    except BaseException:
        await pool.close()
        raise
    if synchronous_commit == "off":
        # Then a commit returns before its WAL is flushed, and an append that
        # returned (a 2xx sent) can be lost in a crash: say so loudly.
        _log.warning("postgres_synchronous_commit_off", schema=schema)
    return pool


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb travels as the bytes msgspec produces and consumes (binary jsonb is
    # a version byte followed by the JSON text): no str round trip either way.
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        format="binary",
    )


def _encode_jsonb(value: bytes) -> bytes:
    return b"\x01" + value


def _decode_jsonb(data: bytes) -> bytes:
    return data[1:]


class _AsyncpgMigrationExecutor:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str) -> None:
        # No arguments: the simple query protocol runs a whole script,
        # dollar-quoted function bodies included.
        await self._conn.execute(sql)

    async def fetch_ints(self, sql: str) -> list[int]:
        return [row[0] for row in await self._conn.fetch(sql)]


async def _migrate(conn: Connection, schema: str) -> None:
    # Several ``rapport api`` processes may start at once: the transaction
    # lock makes them migrate one after the other (the later ones find
    # nothing pending); it also makes check-then-create of the schema race free.
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", LOCK_CLASS, schema)
        # Checked first rather than CREATE SCHEMA IF NOT EXISTS, which demands
        # the CREATE privilege on the database even when the schema exists.
        if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        await apply_migrations_async(
            _AsyncpgMigrationExecutor(conn), load_migrations(dialect_directory("postgres"))
        )


class PoolLease:
    """Closes the shared pool once every holder has let go of it."""

    def __init__(self, pool: asyncpg.Pool, holders: int) -> None:
        self._pool = pool
        self._holders = holders

    async def release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            await self._pool.close()
