"""The PostgreSQL test fixture itself: it finds a server, isolates tests, and
refuses to let CI skip silently."""

from __future__ import annotations

import re

import asyncpg
import pytest

from tests import pg

pytestmark = pytest.mark.postgres


async def test_postgres_dsn_answers_and_is_cached() -> None:
    dsn = pg.postgres_dsn()
    assert pg.postgres_dsn() == dsn
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_unique_schemas_are_distinct_plain_identifiers() -> None:
    names = {pg.unique_schema() for _ in range(200)}
    assert len(names) == 200
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]*", name) for name in names)

    dsn = pg.postgres_dsn()
    schema = pg.unique_schema()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await pg.drop_schema(dsn, schema)
        exists = await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema)
        assert exists == 0
    finally:
        await conn.close()


def test_missing_postgres_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server here"):
        pg.give_up("no server here")


def test_missing_postgres_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no server here"):
        pg.give_up("no server here")


def test_unreachable_server_is_reported_not_raised() -> None:
    # Port 1 on localhost: nothing listens there.
    problem = pg.connection_problem("postgresql://postgres@127.0.0.1:1/test")
    assert problem is not None
    assert "Error" in problem


async def test_throwaway_cluster_starts_answers_and_stops() -> None:
    try:
        cluster = pg.ThrowawayCluster.start()
    except pg.ClusterUnavailable as error:
        pg.give_up(f"cannot start a throwaway cluster here: {error}")
    try:
        assert pg.connection_problem(cluster.dsn) is None
    finally:
        cluster.stop()
    assert not cluster.base.exists()
    assert pg.connection_problem(cluster.dsn) is not None
