"""A tiny schema-migration runner shared by the SQLite and PostgreSQL backends.

Migrations are plain ``.sql`` files in one directory per dialect
(``migrations/sqlite/``, ``migrations/postgres/``) named
``[<prefix>]NNNN_<name>.sql``: a four-digit version and a lowercase name. The
optional prefix lets one directory hold the migrations of several databases
(SQLite keeps the event log in ``events.db`` with ``events_NNNN_*.sql`` and
everything else in ``rapport.db`` with ``rapport_NNNN_*.sql``). Each database
records what it applied in ``schema_migrations(version, name, applied_at)``;
a migration runs once, in version order, in the same transaction as its
record. A database that holds a version this code does not know is refused,
so an old binary never runs against a newer schema.

API:

``load_migrations(directory, prefix="") -> list[Migration]``
    The migrations found in ``directory``, ordered by version.
``dialect_directory(dialect) -> Path``
    The packaged directory of a dialect (``"sqlite"`` or ``"postgres"``).
``apply_migrations_sqlite(conn, migrations) -> list[Migration]``
    Applies what is pending in one ``BEGIN IMMEDIATE`` transaction (which
    also serialises concurrent migrators) and returns what it applied.
``await apply_migrations_async(executor, migrations) -> list[Migration]``
    The same for an asynchronous driver. It runs statements through an
    ``AsyncMigrationExecutor`` and does NOT open a transaction itself: call it
    inside one, after taking a lock that serialises concurrent migrators.
    With asyncpg::

        class AsyncpgMigrationExecutor:
            def __init__(self, conn: asyncpg.Connection) -> None:
                self._conn = conn

            async def execute(self, sql: str) -> None:
                await self._conn.execute(sql)  # several statements are fine

            async def fetch_ints(self, sql: str) -> list[int]:
                return [row[0] for row in await self._conn.fetch(sql)]

        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(<constant>)")
            await apply_migrations_async(
                AsyncpgMigrationExecutor(conn),
                load_migrations(dialect_directory("postgres")),
            )

    Set ``search_path`` first to migrate a particular schema.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

MIGRATIONS_ROOT = Path(__file__).with_name("migrations")

# Valid in both SQLite and PostgreSQL (PostgreSQL casts the timestamp to text).
CREATE_SCHEMA_MIGRATIONS_SQL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, "
    "name TEXT NOT NULL, "
    "applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
)
SELECT_APPLIED_VERSIONS_SQL = "SELECT version FROM schema_migrations ORDER BY version"

_FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")


class MigrationError(RuntimeError):
    """The migration files or the database's migration history are inconsistent."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def record_sql(self) -> str:
        """The statement that records this migration as applied.

        Values are inlined so the statement needs no driver-specific parameter
        style; they are safe because ``version`` is an int and ``name`` matched
        ``[a-z0-9_]+``.
        """
        return (
            f"INSERT INTO schema_migrations (version, name) VALUES ({self.version}, '{self.name}')"
        )


class AsyncMigrationExecutor(Protocol):
    """What ``apply_migrations_async`` needs from an asynchronous connection."""

    async def execute(self, sql: str) -> None:
        """Run one or more statements that take no parameters."""

    async def fetch_ints(self, sql: str) -> list[int]:
        """Run a query and return the first column of every row."""


def dialect_directory(dialect: str) -> Path:
    directory = MIGRATIONS_ROOT / dialect
    if not directory.is_dir():
        raise MigrationError(f"no migrations directory for dialect {dialect!r}")
    return directory


def load_migrations(directory: Path, prefix: str = "") -> list[Migration]:
    """Migrations named ``<prefix>NNNN_<name>.sql`` in ``directory``, by version."""
    found: dict[int, Migration] = {}
    for path in directory.iterdir():
        if not path.name.startswith(prefix) or path.suffix != ".sql":
            continue
        match = _FILE_NAME.fullmatch(path.name[len(prefix) :])
        if match is None:
            # Another prefix's file (``events_0001_x.sql`` when loading with no
            # prefix) is simply not ours; only a file that carries our prefix
            # but a malformed rest is an error.
            if prefix:
                raise MigrationError(f"badly named migration file: {path}")
            continue
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"two migrations with version {version} in {directory}")
        found[version] = Migration(version, match["name"], path.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


def pending_migrations(
    migrations: Sequence[Migration], applied_versions: Iterable[int]
) -> list[Migration]:
    """What is left to apply; refuses databases that know versions we don't."""
    known = {migration.version for migration in migrations}
    applied = set(applied_versions)
    unknown = sorted(applied - known)
    if unknown:
        raise MigrationError(
            f"the database has migrations {unknown} that this version of Rapport does not know"
        )
    return [migration for migration in migrations if migration.version not in applied]


def apply_migrations_sqlite(
    conn: sqlite3.Connection, migrations: Sequence[Migration]
) -> list[Migration]:
    """Apply pending migrations on a connection opened with ``isolation_level=None``."""
    if conn.in_transaction:
        raise MigrationError("apply_migrations_sqlite needs a connection outside a transaction")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(CREATE_SCHEMA_MIGRATIONS_SQL)
        applied = [row[0] for row in conn.execute(SELECT_APPLIED_VERSIONS_SQL)]
        todo = pending_migrations(migrations, applied)
        for migration in todo:
            # ``executescript`` would commit the open transaction first, so the
            # script is split into statements and run one by one instead.
            for statement in split_sqlite_script(migration.sql):
                conn.execute(statement)
            conn.execute(migration.record_sql())
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return todo


async def apply_migrations_async(
    executor: AsyncMigrationExecutor, migrations: Sequence[Migration]
) -> list[Migration]:
    """Apply pending migrations; the caller provides the transaction (see module doc)."""
    await executor.execute(CREATE_SCHEMA_MIGRATIONS_SQL)
    applied = await executor.fetch_ints(SELECT_APPLIED_VERSIONS_SQL)
    todo = pending_migrations(migrations, applied)
    for migration in todo:
        await executor.execute(migration.sql)
        await executor.execute(migration.record_sql())
    return todo


def split_sqlite_script(script: str) -> list[str]:
    """Split a script into complete statements (trigger bodies stay whole)."""
    statements: list[str] = []
    start = 0
    for index, char in enumerate(script):
        # ``complete_statement`` knows about literals, comments and
        # ``CREATE TRIGGER ... END;``, so only a real terminator ends a chunk.
        if char == ";" and sqlite3.complete_statement(script[start : index + 1]):
            statements.append(script[start : index + 1].strip())
            start = index + 1
    rest = script[start:]
    if _strip_sql_comments(rest).strip():
        raise MigrationError(f"incomplete statement at the end of a migration: {rest.strip()!r}")
    return [statement for statement in statements if _strip_sql_comments(statement).strip(" \n;")]


def _strip_sql_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
