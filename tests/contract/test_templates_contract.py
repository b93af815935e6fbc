"""The template-definition part of the ``Storage`` contract, over every backend:
every write the next version with every version kept, create-only refusals,
soft deletes and re-creation, pinned versions, workspace isolation, ordering."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from rapport.core.templates import TemplateAlreadyExists, TemplateDraft
from tests.contract.conftest import Backend

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PARIS_WINTER = timezone(timedelta(hours=1))
WS = "ws_a"


def draft(template_id: str = "thank-you", workspace_id: str = WS, **fields: Any) -> TemplateDraft:
    values: dict[str, Any] = {
        "workspace_id": workspace_id,
        "id": template_id,
        "name": "Thank you",
        "channel": "email",
        "parts": {
            "subject": "Thanks, {{ profile.traits.first_name }}",
            "html": "<p>You have {{ profile.traits.points }} points \u0000 «merci»</p>",
        },
        "variables": {"profile.traits.first_name": "there", "offer.items": [1, {"a": None}]},
        **fields,
    }
    return TemplateDraft(**values)


async def test_a_new_template_is_version_1_and_reads_back_whole(backend: Backend) -> None:
    storage, _ = backend
    at = datetime(2026, 3, 1, 13, 0, 0, 250000, tzinfo=PARIS_WINTER)
    stored = await storage.put_template(draft(description="S1"), at)
    assert (stored.version, stored.status, stored.created_at, stored.updated_at) == (
        1,
        "active",
        at,
        at,
    )
    read = await storage.get_template(WS, "thank-you")
    assert read == stored
    assert read is not None and read.parts["html"].endswith("\u0000 «merci»</p>")
    assert read.variables == {"profile.traits.first_name": "there", "offer.items": [1, {"a": None}]}
    assert read.created_at.utcoffset() == timedelta(hours=1)


async def test_updates_are_new_versions_and_old_versions_stay_readable(backend: Backend) -> None:
    storage, _ = backend
    first = await storage.put_template(draft(), T0)
    second = await storage.put_template(
        draft(parts={"subject": "v2", "text": "plain"}), T0 + timedelta(minutes=1)
    )
    assert second.version == 2 and second.created_at == T0
    assert await storage.get_template(WS, "thank-you") == second
    assert await storage.get_template(WS, "thank-you", 1) == first
    assert await storage.get_template(WS, "thank-you", 2) == second
    assert await storage.get_template(WS, "thank-you", 3) is None


async def test_create_only_refuses_an_active_id_and_stores_nothing(backend: Backend) -> None:
    storage, _ = backend
    await storage.put_template(draft(), T0, create_only=True)
    with pytest.raises(TemplateAlreadyExists):
        await storage.put_template(draft(name="Other"), T0, create_only=True)
    found = await storage.get_template(WS, "thank-you")
    assert found is not None and (found.version, found.name) == (1, "Thank you")


async def test_delete_is_a_tombstone_and_recreating_goes_on_counting(backend: Backend) -> None:
    storage, _ = backend
    await storage.put_template(draft(), T0)
    later = T0 + timedelta(hours=1)
    tombstone = await storage.delete_template(WS, "thank-you", later)
    assert tombstone is not None and (tombstone.version, tombstone.status) == (2, "deleted")
    assert await storage.get_template(WS, "thank-you") is None
    assert await storage.get_template(WS, "thank-you", 2) is None
    assert await storage.get_template(WS, "thank-you", 1) is not None  # a sent message's text
    assert await storage.list_templates(WS) == []
    assert await storage.delete_template(WS, "thank-you", later) is None
    again = await storage.put_template(draft(), later + timedelta(hours=1), create_only=True)
    assert (again.version, again.created_at) == (3, later + timedelta(hours=1))


async def test_list_is_the_latest_active_version_by_id_per_workspace(backend: Backend) -> None:
    storage, _ = backend
    for template_id in ("s2-discount", "s1_thanks", "s1-thanks", "a"):
        await storage.put_template(draft(template_id), T0)
    await storage.put_template(draft("a", name="A v2"), T0)
    await storage.put_template(draft("gone"), T0)
    await storage.delete_template(WS, "gone", T0)
    await storage.put_template(draft("other-ws", workspace_id="ws_b"), T0)
    listed = await storage.list_templates(WS)
    assert [(d.id, d.version) for d in listed] == [
        ("a", 2),
        ("s1-thanks", 1),
        ("s1_thanks", 1),
        ("s2-discount", 1),
    ]
    assert listed[0].name == "A v2"
    assert await storage.get_template("ws_b", "a") is None
    assert [d.id for d in await storage.list_templates("ws_b")] == ["other-ws"]


async def test_concurrent_writes_get_distinct_versions(backend: Backend) -> None:
    storage, _ = backend
    stored = await asyncio.gather(
        *(storage.put_template(draft(name=f"n{i}"), T0) for i in range(8))
    )
    assert sorted(d.version for d in stored) == list(range(1, 9))
    latest = await storage.get_template(WS, "thank-you")
    assert latest is not None and latest.version == 8


async def test_a_returned_definition_is_not_the_stored_one(backend: Backend) -> None:
    storage, _ = backend
    stored = await storage.put_template(draft(), T0)
    stored.parts["subject"] = "changed by the caller"
    stored.variables.clear()
    read = await storage.get_template(WS, "thank-you")
    assert read is not None and read.parts["subject"].startswith("Thanks")
    assert read.variables
