"""Code pools in memory: the in-memory backend's ``CodePoolStore``.

Every method runs to its end without awaiting, so on one event loop a claim
is atomic: two claims can never take the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
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


@dataclass
class _Pool:
    pool: CodePool
    codes: set[str] = field(default_factory=set)
    available: list[str] = field(default_factory=list)
    """Unclaimed codes, in upload order (taken from ``next``)."""
    next: int = 0
    claims: dict[str, str] = field(default_factory=dict)
    """Profile id -> her code."""


class MemoryCodePools(CodePoolStore):
    def __init__(self) -> None:
        self._pools: dict[tuple[str, str], _Pool] = {}

    async def create_pool(self, pool: CodePool) -> CodePool:
        key = (pool.workspace_id, pool.id)
        if key in self._pools:
            raise CodePoolExists(pool.workspace_id, pool.id)
        self._pools[key] = _Pool(pool)
        return pool

    async def get_pool(self, workspace_id: str, pool_id: str) -> CodePool | None:
        found = self._pools.get((workspace_id, pool_id))
        return None if found is None else found.pool

    async def list_pools(self, workspace_id: str) -> list[CodePool]:
        pools = [p.pool for (ws, _), p in self._pools.items() if ws == workspace_id]
        return sorted(pools, key=lambda pool: pool.id)

    async def add_codes(
        self, workspace_id: str, pool_id: str, codes: Sequence[str], now: datetime
    ) -> AddedCodes:
        pool = self._pool(workspace_id, pool_id)
        unique, _ = unique_in_order(codes)
        fresh = [code for code in unique if code not in pool.codes]
        pool.codes.update(fresh)
        pool.available.extend(fresh)
        return AddedCodes(added=len(fresh), duplicates=len(codes) - len(fresh))

    async def claim_code(
        self,
        workspace_id: str,
        pool_id: str,
        profile_id: str,
        message_key: str,
        *,
        now: datetime,
    ) -> str | None:
        pool = self._pool(workspace_id, pool_id)
        held = pool.claims.get(profile_id)
        if held is not None:
            return held
        if pool.next >= len(pool.available):
            return None
        code = pool.available[pool.next]
        pool.next += 1
        pool.claims[profile_id] = code
        return code

    async def pool_stats(self, workspace_id: str, pool_ids: Sequence[str]) -> dict[str, PoolStats]:
        stats: dict[str, PoolStats] = {}
        for pool_id in pool_ids:
            pool = self._pools.get((workspace_id, pool_id))
            if pool is None:
                stats[pool_id] = PoolStats(available=0, claimed=0)
            else:
                available = len(pool.available) - pool.next
                stats[pool_id] = PoolStats(available=available, claimed=len(pool.claims))
        return stats

    def _pool(self, workspace_id: str, pool_id: str) -> _Pool:
        found = self._pools.get((workspace_id, pool_id))
        if found is None:
            raise CodePoolNotFound(workspace_id, pool_id)
        return found
