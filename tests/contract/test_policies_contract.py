"""The policy part of the ``Storage`` contract, over every backend: versions, the
latest in force, optimistic concurrency, workspace isolation, the revision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from rapport.core.policy.document import (
    FrequencyCap,
    PolicyDocument,
    PolicyVersionConflict,
    QuietHours,
    Topic,
)
from tests.contract.conftest import Backend

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WS = "ws_a"
FIRST = PolicyDocument(
    topics=(Topic(id="offers", name="Offres «spéciales»"),),
    caps=(FrequencyCap(max=1, window="7d", category="promotional"),),
)
SECOND = PolicyDocument(quiet_hours=QuietHours(start="22:00", end="08:00"))


async def test_no_policy_until_one_is_written(backend: Backend) -> None:
    storage, _ = backend
    assert await storage.get_policy(WS) is None
    assert await storage.policies_revision() == 0


async def test_every_write_is_the_next_version_and_old_ones_stay_readable(
    backend: Backend,
) -> None:
    storage, _ = backend
    at = datetime(2026, 3, 1, 13, 0, 0, 250000, tzinfo=timezone(timedelta(hours=1)))
    first = await storage.put_policy(WS, FIRST, at)
    assert (first.workspace_id, first.version, first.document, first.updated_at) == (
        WS,
        1,
        FIRST,
        at,
    )
    revision = await storage.policies_revision()
    second = await storage.put_policy(WS, SECOND, T0 + timedelta(minutes=1))
    assert second.version == 2
    assert await storage.policies_revision() > revision
    assert await storage.get_policy(WS) == second
    assert await storage.get_policy(WS, 1) == first
    assert await storage.get_policy(WS, 3) is None


async def test_a_stale_expected_version_stores_nothing(backend: Backend) -> None:
    storage, _ = backend
    await storage.put_policy(WS, FIRST, T0, expected_version=0)
    with pytest.raises(PolicyVersionConflict) as raised:
        await storage.put_policy(WS, SECOND, T0, expected_version=0)
    assert (raised.value.expected, raised.value.current) == (0, 1)
    stored = await storage.get_policy(WS)
    assert stored is not None and stored.document == FIRST
    assert (await storage.put_policy(WS, SECOND, T0, expected_version=1)).version == 2


async def test_workspaces_have_their_own_policies(backend: Backend) -> None:
    storage, _ = backend
    await storage.put_policy(WS, FIRST, T0)
    other = await storage.put_policy("ws_b", SECOND, T0)
    assert other.version == 1
    mine = await storage.get_policy(WS)
    assert mine is not None and mine.document == FIRST
