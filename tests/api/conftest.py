"""In-process API fixtures: a started Rapport on a temp SQLite dir + an ASGI client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rapport.api.app import create_app
from rapport.runtime.service import Rapport
from rapport.settings import load_settings


@dataclass
class ApiHarness:
    rapport: Rapport
    client: httpx.AsyncClient
    write_key: str
    secret_key: str

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret_key}"}

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until everything accepted so far, and the events it emitted, are processed."""
        assert await self.rapport.settle(timeout), "processing stalled"


async def open_harness(tmp: Path, **overrides: object) -> tuple[Rapport, ApiHarness]:
    # No sender unless a test asks for one: these tests read the outbox as the
    # processing step left it (delivery has its own tests, and the stories).
    settings = load_settings(
        {"data_dir": str(tmp / "data"), "sender": "off", **overrides}, environ={}
    )
    runtime = await Rapport.open(settings)
    await runtime.start()
    write_key = await runtime.create_key("write")
    secret_key = await runtime.create_key("secret")
    transport = httpx.ASGITransport(app=create_app(runtime))
    client = httpx.AsyncClient(transport=transport, base_url="http://rapport.test")
    return runtime, ApiHarness(runtime, client, write_key, secret_key)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiHarness]:
    runtime, harness = await open_harness(tmp_path)
    try:
        yield harness
    finally:
        await harness.client.aclose()
        await runtime.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def api_any(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiHarness]:
    """The API over each durable backend: the same behaviour on SQLite and PostgreSQL."""
    from tests import pg

    if request.param == "sqlite":
        runtime, harness = await open_harness(tmp_path)
        cleanup = None
    else:
        dsn = pg.postgres_dsn()
        schema = pg.unique_schema()
        runtime, harness = await open_harness(tmp_path, database_url=dsn, database_schema=schema)
        cleanup = (dsn, schema)
    try:
        yield harness
    finally:
        await harness.client.aclose()
        await runtime.close()
        if cleanup is not None:
            await pg.drop_schema(*cleanup)
