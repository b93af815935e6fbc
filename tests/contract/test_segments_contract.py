"""The segment-definition part of the ``Storage`` contract, over every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from rapport.core.segments import ACTIVE, DELETED, SegmentAlreadyExists, SegmentDraft
from tests.contract.conftest import Backend, BackendFactory

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PARIS_WINTER = timezone(timedelta(hours=1))
WS = "ws_a"
S2: dict[str, Any] = {
    "event": "Product Viewed",
    "aggregate": "count",
    "window": "1h",
    "key": "properties.product_id",
    "op": "gte",
    "value": 3,
}


def draft(segment_id: str = "viewed-same-product-3x-1h", **fields: Any) -> SegmentDraft:
    values: dict[str, Any] = {
        "workspace_id": WS,
        "id": segment_id,
        "name": "Viewed the same product 3 times in an hour",
        "kind": "dynamic",
        "condition": S2,
        **fields,
    }
    return SegmentDraft(**values)


async def test_a_new_definition_is_version_1_and_reads_back_whole(backend: Backend) -> None:
    storage, _ = backend
    at = datetime(2026, 3, 1, 13, 0, 0, 250000, tzinfo=PARIS_WINTER)
    condition = {"all": [S2, {"trait": "plan", "op": "in", "value": ["gold", 1.5, None]}]}
    stored = await storage.put_segment(
        draft(description="S2 — «même produit»", condition=condition), at
    )
    assert stored.version == 1
    assert stored.status == ACTIVE
    assert stored.created_at == at and stored.updated_at == at
    assert stored.condition == condition
    read = await storage.get_segment(WS, "viewed-same-product-3x-1h")
    assert read == stored
    assert read is not None and read.created_at.utcoffset() == timedelta(hours=1)
    assert read.description == "S2 — «même produit»"


async def test_every_update_is_the_next_version_and_keeps_created_at(backend: Backend) -> None:
    storage, _ = backend
    first = await storage.put_segment(draft(), T0)
    second = await storage.put_segment(draft(name="Renamed"), T0 + timedelta(minutes=1))
    third = await storage.put_segment(
        draft(condition={"trait": "vip", "op": "exists"}), T0 + timedelta(minutes=2)
    )
    assert (first.version, second.version, third.version) == (1, 2, 3)
    assert third.created_at == T0
    assert third.updated_at == T0 + timedelta(minutes=2)
    read = await storage.get_segment(WS, first.id)
    assert read is not None
    assert read.version == 3
    # A write replaces every field: the third one carried the default name again.
    assert read.name == "Viewed the same product 3 times in an hour"
    assert read.condition == {"trait": "vip", "op": "exists"}


async def test_create_only_refuses_an_existing_id_and_stores_nothing(backend: Backend) -> None:
    storage, _ = backend
    await storage.put_segment(draft(), T0)
    revision = await storage.segments_revision()
    with pytest.raises(SegmentAlreadyExists):
        await storage.put_segment(draft(name="Other"), T0, create_only=True)
    read = await storage.get_segment(WS, "viewed-same-product-3x-1h")
    assert read is not None and read.version == 1 and read.name != "Other"
    assert await storage.segments_revision() == revision


async def test_delete_leaves_a_tombstone_and_a_reused_id_continues_the_versions(
    backend: Backend,
) -> None:
    storage, _ = backend
    await storage.put_segment(draft(), T0)
    await storage.put_segment(draft(), T0 + timedelta(minutes=1))
    tombstone = await storage.delete_segment(WS, "viewed-same-product-3x-1h", T0 + timedelta(1))
    assert tombstone is not None
    assert (tombstone.status, tombstone.version) == (DELETED, 3)
    assert await storage.get_segment(WS, "viewed-same-product-3x-1h") is None
    assert await storage.list_segments(WS) == []
    assert await storage.list_segments(WS, include_deleted=True) == [tombstone]
    assert await storage.delete_segment(WS, "viewed-same-product-3x-1h", T0) is None
    assert await storage.delete_segment(WS, "never-was", T0) is None

    again_at = T0 + timedelta(days=2)
    again = await storage.put_segment(draft(), again_at, create_only=True)
    assert (again.version, again.status) == (4, ACTIVE)
    assert again.created_at == again_at


async def test_list_is_ordered_by_id_and_isolated_per_workspace(backend: Backend) -> None:
    storage, _ = backend
    for segment_id in ("b-2", "a-1", "c_3"):
        await storage.put_segment(draft(segment_id), T0)
    await storage.put_segment(draft("a-0", workspace_id="ws_b"), T0)
    listed = await storage.list_segments(WS)
    assert [d.id for d in listed] == ["a-1", "b-2", "c_3"]
    assert all(d.workspace_id == WS for d in listed)
    assert [d.id for d in await storage.list_segments("ws_b")] == ["a-0"]
    assert await storage.get_segment("ws_b", "a-1") is None
    assert await storage.delete_segment("ws_b", "a-1", T0) is None
    # The same id in two workspaces: two independent version sequences.
    other = await storage.put_segment(draft("a-1", workspace_id="ws_b"), T0)
    assert other.version == 1
    still = await storage.get_segment(WS, "a-1")
    assert still is not None and still.workspace_id == WS


async def test_the_revision_grows_with_every_write_in_any_workspace(backend: Backend) -> None:
    storage, _ = backend
    assert await storage.segments_revision() == 0
    seen = [0]
    await storage.put_segment(draft("a"), T0)
    seen.append(await storage.segments_revision())
    await storage.put_segment(draft("a"), T0)
    seen.append(await storage.segments_revision())
    await storage.put_segment(draft("a", workspace_id="ws_b"), T0)
    seen.append(await storage.segments_revision())
    await storage.delete_segment(WS, "a", T0)
    seen.append(await storage.segments_revision())
    assert seen == sorted(set(seen)), seen
    # Reads and refused writes change nothing.
    await storage.list_segments(WS, include_deleted=True)
    await storage.delete_segment(WS, "a", T0)
    assert await storage.segments_revision() == seen[-1]


async def test_stored_conditions_are_copies(backend: Backend) -> None:
    storage, _ = backend
    condition: dict[str, Any] = {"any": [{"trait": "plan", "op": "equals", "value": "gold"}]}
    stored = await storage.put_segment(draft(condition=condition), T0)
    condition["any"].append({"trait": "x", "op": "exists"})
    stored.condition["any"].clear()
    read = await storage.get_segment(WS, stored.id)
    assert read is not None
    assert read.condition == {"any": [{"trait": "plan", "op": "equals", "value": "gold"}]}


async def test_text_with_nul_and_unicode_survives(backend: Backend) -> None:
    storage, _ = backend
    condition = {"trait": "code", "op": "equals", "value": "a\x00b 🧥"}
    await storage.put_segment(draft(condition=condition, name="🧥 jackets\x00"), T0)
    read = await storage.get_segment(WS, "viewed-same-product-3x-1h")
    assert read is not None
    assert read.condition == condition
    assert read.name == "🧥 jackets\x00"


async def test_definitions_survive_a_reopen(backend_factory: BackendFactory) -> None:
    if not backend_factory.supports_reopen:
        pytest.skip("nothing survives closing this backend")
    opened = await backend_factory.open()
    stored = await opened[0].put_segment(draft(), T0)
    revision = await opened[0].segments_revision()
    await backend_factory.close(opened)
    storage, _ = await backend_factory.open()
    assert await storage.get_segment(WS, stored.id) == stored
    assert await storage.segments_revision() == revision
    assert (await storage.put_segment(draft(), T0)).version == 2
