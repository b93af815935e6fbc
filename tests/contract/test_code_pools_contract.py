"""The code-pool part of the ``Storage`` contract, over every backend: pools,
uploads with dedupe, one code per customer per pool, no code given twice
(also under concurrent claims), exhaustion, counts, workspace isolation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from rapport.core.code_pools import CodePool, CodePoolExists, CodePoolNotFound, PoolStats
from tests.contract.conftest import Backend

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WS = "ws_a"


def pool(pool_id: str = "welcome", workspace_id: str = WS) -> CodePool:
    return CodePool(workspace_id=workspace_id, id=pool_id, description="Welcome 10%", created_at=T0)


async def test_pools_are_created_read_and_listed_by_id(backend: Backend) -> None:
    storage, _ = backend
    pools = storage.code_pools
    await pools.create_pool(pool("welcome"))
    await pools.create_pool(pool("apology"))
    await pools.create_pool(pool("welcome", workspace_id="ws_b"))
    assert await pools.get_pool(WS, "welcome") == pool("welcome")
    assert await pools.get_pool(WS, "missing") is None
    assert [p.id for p in await pools.list_pools(WS)] == ["apology", "welcome"]
    with pytest.raises(CodePoolExists):
        await pools.create_pool(pool("welcome"))


async def test_uploads_skip_codes_the_pool_holds_and_repeats(backend: Backend) -> None:
    storage, _ = backend
    pools = storage.code_pools
    await pools.create_pool(pool())
    first = await pools.add_codes(WS, "welcome", ["A1", "A2", "A1", "A3"], T0)
    assert (first.added, first.duplicates) == (3, 1)
    second = await pools.add_codes(WS, "welcome", ["A3", "A4"], T0)
    assert (second.added, second.duplicates) == (1, 1)
    stats = await pools.pool_stats(WS, ["welcome", "none"])
    assert stats == {
        "welcome": PoolStats(available=4, claimed=0),
        "none": PoolStats(available=0, claimed=0),
    }
    with pytest.raises(CodePoolNotFound):
        await pools.add_codes(WS, "missing", ["X"], T0)


async def test_one_code_per_customer_in_upload_order_until_exhausted(backend: Backend) -> None:
    storage, _ = backend
    pools = storage.code_pools
    await pools.create_pool(pool())
    await pools.add_codes(WS, "welcome", ["C1", "C2"], T0)
    await pools.add_codes(WS, "welcome", ["C0"], T0)
    assert await pools.claim_code(WS, "welcome", "prof_a", "m1", now=T0) == "C1"
    # Her second claim (another message, a retry) gets the code she has.
    assert await pools.claim_code(WS, "welcome", "prof_a", "m2", now=T0) == "C1"
    assert await pools.claim_code(WS, "welcome", "prof_b", "m3", now=T0) == "C2"
    assert await pools.claim_code(WS, "welcome", "prof_c", "m4", now=T0) == "C0"
    assert await pools.claim_code(WS, "welcome", "prof_d", "m5", now=T0) is None
    assert await pools.claim_code(WS, "welcome", "prof_b", "m6", now=T0) == "C2"
    assert (await pools.pool_stats(WS, ["welcome"]))["welcome"] == PoolStats(available=0, claimed=3)
    # A refill serves the customer who found it empty.
    await pools.add_codes(WS, "welcome", ["C9"], T0)
    assert await pools.claim_code(WS, "welcome", "prof_d", "m5", now=T0) == "C9"
    with pytest.raises(CodePoolNotFound):
        await pools.claim_code(WS, "missing", "prof_a", "m1", now=T0)


async def test_pools_and_workspaces_are_separate(backend: Backend) -> None:
    storage, _ = backend
    pools = storage.code_pools
    await pools.create_pool(pool("welcome"))
    await pools.create_pool(pool("apology"))
    await pools.create_pool(pool("welcome", workspace_id="ws_b"))
    await pools.add_codes(WS, "welcome", ["SAME"], T0)
    await pools.add_codes(WS, "apology", ["SAME"], T0)
    await pools.add_codes("ws_b", "welcome", ["SAME"], T0)
    assert await pools.claim_code(WS, "welcome", "prof_a", "m", now=T0) == "SAME"
    assert await pools.claim_code(WS, "apology", "prof_b", "m", now=T0) == "SAME"
    assert await pools.claim_code("ws_b", "welcome", "prof_c", "m", now=T0) == "SAME"
    assert await pools.claim_code(WS, "welcome", "prof_d", "m", now=T0) is None


async def test_concurrent_claims_never_share_a_code(backend: Backend) -> None:
    storage, _ = backend
    pools = storage.code_pools
    await pools.create_pool(pool())
    await pools.add_codes(WS, "welcome", [f"K{n:03}" for n in range(60)], T0)
    claims = [pools.claim_code(WS, "welcome", f"prof_{n}", f"m{n}", now=T0) for n in range(50)]
    # The same customer claiming many times at once still gets one code.
    claims += [pools.claim_code(WS, "welcome", "prof_same", f"s{n}", now=T0) for n in range(20)]
    codes = await asyncio.gather(*claims)
    distinct = codes[:50]
    assert None not in distinct and len(set(distinct)) == 50
    same = set(codes[50:])
    assert len(same) == 1 and not same & set(distinct)
    assert (await pools.pool_stats(WS, ["welcome"]))["welcome"] == PoolStats(
        available=9, claimed=51
    )


async def test_concurrent_claims_on_a_nearly_empty_pool(backend: Backend) -> None:
    storage, _ = backend
    pools = storage.code_pools
    await pools.create_pool(pool())
    await pools.add_codes(WS, "welcome", ["L1", "L2", "L3"], T0)
    codes = await asyncio.gather(
        *(pools.claim_code(WS, "welcome", f"prof_{n}", "m", now=T0) for n in range(12))
    )
    given = [code for code in codes if code is not None]
    assert sorted(given) == ["L1", "L2", "L3"]
