"""One backend fixture for the whole contract suite: every test runs on every backend.

``backend`` yields ``(storage, event_log)`` freshly opened on an empty store.
``backend_factory`` is the same backend's opener, for tests that close and
reopen the same store (``supports_reopen`` is False where nothing survives a
close, as in memory).

PostgreSQL comes from ``tests.pg.postgres_dsn()``, which skips loudly when no
server can be had — and fails instead when ``CI=true``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from rapport.storage import memory, postgres, sqlite
from rapport.storage.base import EventLog, Storage
from tests import pg

Backend = tuple[Storage, EventLog]

BACKENDS = ("sqlite", "memory", "postgres")


class BackendFactory:
    """Opens one backend's store, as often as a test needs; closes all at the end."""

    def __init__(self, opener: Callable[[], Awaitable[Backend]], supports_reopen: bool) -> None:
        self._opener = opener
        self.supports_reopen = supports_reopen
        self._open: list[Backend] = []

    async def open(self) -> Backend:
        opened = await self._opener()
        self._open.append(opened)
        return opened

    async def close(self, backend: Backend) -> None:
        self._open.remove(backend)
        storage, event_log = backend
        await event_log.close()
        await storage.close()

    async def close_all(self) -> None:
        while self._open:
            await self.close(self._open[-1])


@pytest.fixture(params=BACKENDS)
async def backend_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[BackendFactory]:
    name: str = request.param
    cleanup: Callable[[], Awaitable[None]] | None = None
    if name == "sqlite":
        data_dir = tmp_path / "data"

        async def open_sqlite() -> Backend:
            opened: Backend = await sqlite.open_sqlite(data_dir)
            return opened

        factory = BackendFactory(open_sqlite, supports_reopen=True)
    elif name == "memory":

        async def open_memory() -> Backend:
            storage, event_log = memory.open_memory()
            await storage.open()
            await event_log.open()
            return storage, event_log

        factory = BackendFactory(open_memory, supports_reopen=False)
    else:
        dsn: str = pg.postgres_dsn()
        schema: str = pg.unique_schema()

        async def open_postgres() -> Backend:
            opened: Backend = await postgres.open_postgres(dsn, schema=schema)
            return opened

        async def drop_schema() -> None:
            await pg.drop_schema(dsn, schema)

        factory = BackendFactory(open_postgres, supports_reopen=True)
        cleanup = drop_schema
    try:
        yield factory
    finally:
        await factory.close_all()
        if cleanup is not None:
            await cleanup()


@pytest.fixture
async def backend(backend_factory: BackendFactory) -> Backend:
    return await backend_factory.open()
