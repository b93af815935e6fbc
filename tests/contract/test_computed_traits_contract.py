"""The computed-trait-definition part of the ``Storage`` contract, over every backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from rapport.core.computed_traits import (
    ComputedTraitAlreadyExists,
    ComputedTraitDraft,
)
from rapport.core.computed_traits.definitions import ACTIVE, DELETED
from tests.contract.conftest import Backend, BackendFactory

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PARIS_WINTER = timezone(timedelta(hours=1))
WS = "ws_a"
REVENUE: dict[str, Any] = {
    "event": "Order Completed",
    "aggregate": "sum",
    "of": "properties.revenue",
}


def draft(trait_id: str = "lifetime_revenue", **fields: Any) -> ComputedTraitDraft:
    values: dict[str, Any] = {
        "workspace_id": WS,
        "id": trait_id,
        "kind": "aggregate",
        "compute": REVENUE,
        **fields,
    }
    return ComputedTraitDraft(**values)


async def test_a_new_definition_is_version_1_and_reads_back_whole(backend: Backend) -> None:
    storage, _ = backend
    at = datetime(2026, 3, 1, 13, 0, 0, 250000, tzinfo=PARIS_WINTER)
    currency = {"field": "properties.currency", "op": "in", "value": ["EUR", 1.5, None]}
    compute = {**REVENUE, "where": [currency]}
    stored = await storage.put_computed_trait(
        draft(description="Tout l'argent — «net»", compute=compute), at
    )
    assert (stored.version, stored.status, stored.kind) == (1, ACTIVE, "aggregate")
    assert stored.created_at == at and stored.updated_at == at
    assert stored.compute == compute
    read = await storage.get_computed_trait(WS, "lifetime_revenue")
    assert read == stored
    assert read is not None and read.created_at.utcoffset() == timedelta(hours=1)
    assert read.description == "Tout l'argent — «net»"


async def test_every_update_is_the_next_version_and_keeps_created_at(backend: Backend) -> None:
    storage, _ = backend
    first = await storage.put_computed_trait(draft(), T0)
    second = await storage.put_computed_trait(
        draft(description="renamed"), T0 + timedelta(minutes=1)
    )
    engagement = {"core_actions": {"events": ["Order Completed"]}}
    third = await storage.put_computed_trait(
        draft(kind="engagement_score", compute=engagement), T0 + timedelta(minutes=2)
    )
    assert (first.version, second.version, third.version) == (1, 2, 3)
    assert third.created_at == T0
    assert third.updated_at == T0 + timedelta(minutes=2)
    read = await storage.get_computed_trait(WS, "lifetime_revenue")
    assert read is not None
    assert (read.version, read.kind, read.compute) == (3, "engagement_score", engagement)
    # A write replaces every field: the third one carried no description.
    assert read.description == ""


async def test_create_only_refuses_an_existing_id_and_stores_nothing(backend: Backend) -> None:
    storage, _ = backend
    await storage.put_computed_trait(draft(), T0)
    revision = await storage.computed_traits_revision()
    with pytest.raises(ComputedTraitAlreadyExists):
        await storage.put_computed_trait(draft(description="other"), T0, create_only=True)
    read = await storage.get_computed_trait(WS, "lifetime_revenue")
    assert read is not None and read.version == 1 and read.description == ""
    assert await storage.computed_traits_revision() == revision


async def test_delete_leaves_a_tombstone_and_a_reused_id_continues_the_versions(
    backend: Backend,
) -> None:
    storage, _ = backend
    await storage.put_computed_trait(draft(), T0)
    await storage.put_computed_trait(draft(), T0 + timedelta(minutes=1))
    tombstone = await storage.delete_computed_trait(WS, "lifetime_revenue", T0 + timedelta(1))
    assert tombstone is not None
    assert (tombstone.status, tombstone.version) == (DELETED, 3)
    assert await storage.get_computed_trait(WS, "lifetime_revenue") is None
    assert await storage.list_computed_traits(WS) == []
    assert await storage.list_computed_traits(WS, include_deleted=True) == [tombstone]
    assert await storage.delete_computed_trait(WS, "lifetime_revenue", T0) is None
    assert await storage.delete_computed_trait(WS, "never-was", T0) is None

    again_at = T0 + timedelta(days=2)
    again = await storage.put_computed_trait(draft(), again_at, create_only=True)
    assert (again.version, again.status) == (4, ACTIVE)
    assert again.created_at == again_at


async def test_list_is_ordered_by_id_and_isolated_per_workspace(backend: Backend) -> None:
    storage, _ = backend
    for trait_id in ("b-2", "a_1", "a-1", "c_3"):
        await storage.put_computed_trait(draft(trait_id), T0)
    await storage.put_computed_trait(draft("a-0", workspace_id="ws_b"), T0)
    listed = await storage.list_computed_traits(WS)
    # Byte order on every backend ('-' before '_'), whatever the database collation.
    assert [d.id for d in listed] == ["a-1", "a_1", "b-2", "c_3"]
    assert all(d.workspace_id == WS for d in listed)
    assert [d.id for d in await storage.list_computed_traits("ws_b")] == ["a-0"]
    assert await storage.get_computed_trait("ws_b", "a-1") is None
    assert await storage.delete_computed_trait("ws_b", "a-1", T0) is None
    other = await storage.put_computed_trait(draft("a-1", workspace_id="ws_b"), T0)
    assert other.version == 1
    still = await storage.get_computed_trait(WS, "a-1")
    assert still is not None and still.workspace_id == WS


async def test_the_revision_grows_with_every_write_and_is_apart_from_segments(
    backend: Backend,
) -> None:
    storage, _ = backend
    assert await storage.computed_traits_revision() == 0
    seen = [0]
    await storage.put_computed_trait(draft("a"), T0)
    seen.append(await storage.computed_traits_revision())
    await storage.put_computed_trait(draft("a"), T0)
    seen.append(await storage.computed_traits_revision())
    await storage.put_computed_trait(draft("a", workspace_id="ws_b"), T0)
    seen.append(await storage.computed_traits_revision())
    await storage.delete_computed_trait(WS, "a", T0)
    seen.append(await storage.computed_traits_revision())
    assert seen == sorted(set(seen)), seen
    # Reads, refused writes and other definitions change nothing.
    await storage.list_computed_traits(WS, include_deleted=True)
    await storage.delete_computed_trait(WS, "a", T0)
    segments_before = await storage.segments_revision()
    assert await storage.computed_traits_revision() == seen[-1]
    assert segments_before == 0


async def test_concurrent_writes_of_one_id_store_distinct_versions(backend: Backend) -> None:
    storage, _ = backend
    stored = await asyncio.gather(*(storage.put_computed_trait(draft(), T0) for _ in range(8)))
    assert sorted(d.version for d in stored) == list(range(1, 9))
    read = await storage.get_computed_trait(WS, "lifetime_revenue")
    assert read is not None and read.version == 8


async def test_stored_definitions_are_copies(backend: Backend) -> None:
    storage, _ = backend
    compute: dict[str, Any] = {**REVENUE, "where": []}
    stored = await storage.put_computed_trait(draft(compute=compute), T0)
    compute["where"].append({"field": "properties.x", "op": "exists"})
    stored.compute["where"].append({"field": "properties.y", "op": "exists"})
    read = await storage.get_computed_trait(WS, stored.id)
    assert read is not None
    assert read.compute == {**REVENUE, "where": []}


async def test_text_with_nul_and_unicode_survives(backend: Backend) -> None:
    storage, _ = backend
    compute = {"event": "Commande passée 🧥\x00", "aggregate": "count"}
    await storage.put_computed_trait(draft(compute=compute, description="🧥\x00"), T0)
    read = await storage.get_computed_trait(WS, "lifetime_revenue")
    assert read is not None
    assert read.compute == compute
    assert read.description == "🧥\x00"


async def test_definitions_survive_a_reopen(backend_factory: BackendFactory) -> None:
    if not backend_factory.supports_reopen:
        pytest.skip("nothing survives closing this backend")
    opened = await backend_factory.open()
    stored = await opened[0].put_computed_trait(draft(), T0)
    revision = await opened[0].computed_traits_revision()
    await backend_factory.close(opened)
    storage, _ = await backend_factory.open()
    assert await storage.get_computed_trait(WS, stored.id) == stored
    assert await storage.computed_traits_revision() == revision
    assert (await storage.put_computed_trait(draft(), T0)).version == 2
