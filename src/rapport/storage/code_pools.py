"""The storage interface of code pools (``rapport.core.code_pools``).

Every backend keeps a ``CodePoolStore`` as ``Storage.code_pools``:
``memory_code_pools``, ``sqlite_code_pools``, ``postgres_code_pools``, all held
to one contract suite (``tests/contract/test_code_pools_contract.py``).

What makes a claim safe differs per backend: memory claims between two
awaits (nothing else runs), SQLite on its single writer thread, PostgreSQL
with row locks (``FOR UPDATE SKIP LOCKED``) and a unique index on
``(workspace, pool, profile)``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import datetime

from rapport.core.code_pools import AddedCodes, CodePool, PoolStats


class CodePoolStore(abc.ABC):
    @abc.abstractmethod
    async def create_pool(self, pool: CodePool) -> CodePool:
        """Store a new pool; raise ``CodePoolExists`` if the id is taken in its workspace."""

    @abc.abstractmethod
    async def get_pool(self, workspace_id: str, pool_id: str) -> CodePool | None: ...

    @abc.abstractmethod
    async def list_pools(self, workspace_id: str) -> list[CodePool]:
        """The workspace's pools, by id."""

    @abc.abstractmethod
    async def add_codes(
        self, workspace_id: str, pool_id: str, codes: Sequence[str], now: datetime
    ) -> AddedCodes:
        """Add codes to a pool, in order; a code the pool holds (or an earlier repeat in
        ``codes``) is a duplicate and changes nothing. Raises ``CodePoolNotFound``."""

    @abc.abstractmethod
    async def claim_code(
        self,
        workspace_id: str,
        pool_id: str,
        profile_id: str,
        message_key: str,
        *,
        now: datetime,
    ) -> str | None:
        """The profile's code from the pool, claiming the next available one if she has none.

        At most one code per profile per pool; a code never goes to two
        profiles, however many claims run at once. None when she has none and
        none is left. ``message_key`` (the message that first claimed it) is
        kept for tracing. Raises ``CodePoolNotFound``.
        """

    @abc.abstractmethod
    async def pool_stats(self, workspace_id: str, pool_ids: Sequence[str]) -> dict[str, PoolStats]:
        """Available and claimed counts of each pool (zeros for a pool without codes)."""
