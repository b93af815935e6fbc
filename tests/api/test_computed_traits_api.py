"""Computed traits over HTTP: CRUD, bad input, the name they own, and values from ingest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.api.conftest import ApiHarness

REVENUE: dict[str, Any] = {
    "event": "Order Completed",
    "aggregate": "sum",
    "of": "properties.revenue",
}
ORDERS_90D: dict[str, Any] = {"event": "Order Completed", "window": "90d"}


def definition(trait_id: str = "lifetime_revenue", **fields: Any) -> dict[str, Any]:
    return {"id": trait_id, "compute": REVENUE, **fields}


async def test_create_then_read_list_update_and_delete(api_any: ApiHarness) -> None:
    api = api_any
    created = await api.client.post(
        "/api/computed-traits", json=definition(description="All spent"), headers=api.admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["id"], body["kind"], body["version"], body["status"]) == (
        "lifetime_revenue",
        "aggregate",
        1,
        "active",
    )
    assert body["compute"] == REVENUE
    assert body["description"] == "All spent"
    assert body["depends_on"] == {
        "events": ["Order Completed"],
        "every_track_event": False,
        "pages": False,
    }
    assert body["time_dependent"] is False

    read = await api.client.get("/api/computed-traits/lifetime_revenue", headers=api.admin)
    assert read.status_code == 200
    # The backfill of the new version may have been walked in between.
    read_body = read.json()
    assert read_body.pop("backfill")["version"] == body.pop("backfill")["version"] == 1
    assert read_body == body

    engagement = {"core_actions": {"events": ["Order Completed"]}}
    updated = await api.client.put(
        "/api/computed-traits/lifetime_revenue",
        json={"kind": "engagement_score", "compute": engagement},
        headers=api.admin,
    )
    assert updated.status_code == 200, updated.text
    assert (updated.json()["version"], updated.json()["kind"]) == (2, "engagement_score")
    assert updated.json()["created_at"] == body["created_at"]
    assert updated.json()["depends_on"] == {
        "events": ["Order Completed"],
        "every_track_event": True,
        "pages": True,
    }
    assert updated.json()["time_dependent"] is True

    put_new = await api.client.put(
        "/api/computed-traits/orders_90d", json={"compute": ORDERS_90D}, headers=api.admin
    )
    assert put_new.status_code == 201, put_new.text
    listed = await api.client.get("/api/computed-traits", headers=api.admin)
    assert [(t["id"], t["version"]) for t in listed.json()["computed_traits"]] == [
        ("lifetime_revenue", 2),
        ("orders_90d", 1),
    ]

    deleted = await api.client.delete("/api/computed-traits/lifetime_revenue", headers=api.admin)
    assert deleted.status_code == 200
    assert (deleted.json()["status"], deleted.json()["version"]) == ("deleted", 3)
    assert "depends_on" not in deleted.json()
    gone = await api.client.get("/api/computed-traits/lifetime_revenue", headers=api.admin)
    assert gone.status_code == 404
    assert (gone.json()["code"], gone.json()["field"]) == ("computed_trait_not_found", "id")
    again = await api.client.delete("/api/computed-traits/lifetime_revenue", headers=api.admin)
    assert again.status_code == 404
    recreated = await api.client.post("/api/computed-traits", json=definition(), headers=api.admin)
    assert recreated.status_code == 201 and recreated.json()["version"] == 4


async def test_an_existing_name_conflicts_on_post(api: ApiHarness) -> None:
    assert (
        await api.client.post("/api/computed-traits", json=definition(), headers=api.admin)
    ).status_code == 201
    again = await api.client.post(
        "/api/computed-traits", json=definition(compute=ORDERS_90D), headers=api.admin
    )
    assert again.status_code == 409
    assert (again.json()["code"], again.json()["field"]) == ("computed_trait_exists", "id")
    still = await api.client.get("/api/computed-traits/lifetime_revenue", headers=api.admin)
    assert still.json()["compute"] == REVENUE


async def test_an_invalid_compute_lists_every_error_with_its_path(api: ApiHarness) -> None:
    bad = {"event": "Order Completed", "aggregate": "sum", "window": "1 hour", "op": "gt"}
    response = await api.client.post(
        "/api/computed-traits", json=definition(compute=bad), headers=api.admin
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_computed_trait"
    assert body["field"] == "compute.op"
    assert [e["path"] for e in body["errors"]] == ["$.op", "$", "$.window"]
    engagement = {"window": "7d", "visit_days": {"target": 30}}
    response = await api.client.put(
        "/api/computed-traits/engagement",
        json={"kind": "engagement_score", "compute": engagement},
        headers=api.admin,
    )
    assert response.status_code == 422
    assert response.json()["field"] == "compute.visit_days.target"
    assert len(response.json()["errors"]) == 2, "the core actions are missing too"
    listed = await api.client.get("/api/computed-traits", headers=api.admin)
    assert listed.json()["computed_traits"] == []


async def test_bad_fields_are_named(api: ApiHarness) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        (definition("Lifetime Revenue"), "invalid_computed_trait_id", "id"),
        ({"compute": REVENUE}, "invalid_computed_trait_id", "id"),
        (definition("last_seen"), "reserved_trait_name", "id"),
        (definition(description=3), "invalid_description", "description"),
        (definition(description="x" * 2001), "invalid_description", "description"),
        (definition(kind="formula"), "invalid_kind", "kind"),
        (definition(colour="red"), "unknown_field", "colour"),
        ({"id": "a"}, "invalid_computed_trait", "compute"),
        (definition(compute=[REVENUE]), "invalid_computed_trait", "compute"),
    ]
    for body, code, field in cases:
        response = await api.client.post("/api/computed-traits", json=body, headers=api.admin)
        assert response.status_code == 422, (body, response.text)
        assert (response.json()["code"], response.json().get("field")) == (code, field), body
    mismatch = await api.client.put(
        "/api/computed-traits/a", json=definition("b"), headers=api.admin
    )
    assert mismatch.status_code == 422 and mismatch.json()["code"] == "id_mismatch"
    bad_path = await api.client.put(
        "/api/computed-traits/Bad Name", json={"compute": REVENUE}, headers=api.admin
    )
    assert bad_path.status_code == 422 and bad_path.json()["field"] == "trait_id"
    not_json = await api.client.post("/api/computed-traits", content=b"{oops", headers=api.admin)
    assert not_json.status_code == 400 and not_json.json()["code"] == "invalid_json"
    not_object = await api.client.post("/api/computed-traits", json=[1], headers=api.admin)
    assert not_object.status_code == 422
    assert (await api.client.get("/api/computed-traits")).status_code == 401
    write = {"Authorization": f"Bearer {api.write_key}"}
    assert (await api.client.get("/api/computed-traits", headers=write)).status_code == 403


async def test_computed_traits_stay_in_their_workspace(api: ApiHarness) -> None:
    await api.client.post("/api/computed-traits", json=definition(), headers=api.admin)
    other_key = await api.rapport.create_key("secret", workspace="other")
    other = {"Authorization": f"Bearer {other_key}"}
    listed = await api.client.get("/api/computed-traits", headers=other)
    assert listed.json()["computed_traits"] == []
    missing = await api.client.get("/api/computed-traits/lifetime_revenue", headers=other)
    assert missing.status_code == 404
    theirs = await api.client.post("/api/computed-traits", json=definition(), headers=other)
    assert theirs.status_code == 201 and theirs.json()["version"] == 1


async def settle_all(api: ApiHarness) -> None:
    """Settle until no new events appear: membership events go through the log too."""
    while True:
        end = await api.rapport.event_log.end_offset()
        await api.settle()
        if await api.rapport.event_log.end_offset() == end:
            return


async def test_values_stream_from_ingest_and_segments_read_them(api_any: ApiHarness) -> None:
    api = api_any
    for trait_id, compute in (("lifetime_revenue", REVENUE), ("orders_90d", ORDERS_90D)):
        response = await api.client.post(
            "/api/computed-traits", json=definition(trait_id, compute=compute), headers=api.admin
        )
        assert response.status_code == 201, response.text
    segment = {
        "id": "big-spenders",
        "name": "Spent more than 500",
        "condition": {"trait": "lifetime_revenue", "op": "gt", "value": 500},
    }
    assert (
        await api.client.post("/api/segments", json=segment, headers=api.admin)
    ).status_code == 201
    write = {"Authorization": f"Bearer {api.write_key}"}
    now = datetime.now(UTC)

    def order(n: int, revenue: float, days_ago: int) -> dict[str, Any]:
        return {
            "type": "track",
            "event": "Order Completed",
            "userId": "dana",
            "messageId": f"order-{n}",
            "properties": {"revenue": revenue},
            "timestamp": (now - timedelta(days=days_ago)).isoformat(),
        }

    async def send(*events: dict[str, Any]) -> dict[str, Any]:
        response = await api.client.post("/v1/batch", json={"batch": list(events)}, headers=write)
        assert response.status_code == 200, response.text
        await settle_all(api)
        profile = await api.client.get("/api/profiles/user_id:dana", headers=api.admin)
        assert profile.status_code == 200, profile.text
        body: dict[str, Any] = profile.json()
        return body

    first = await send(order(1, 200, 120), order(2, 150, 10))
    assert first["traits"]["lifetime_revenue"]["value"] == 350
    assert first["traits"]["orders_90d"]["value"] == 1, "the first order is 120 days old"
    assert first["segments"] == {}
    second = await send(order(3, 175.5, 0))
    revenue = second["traits"]["lifetime_revenue"]
    assert revenue["value"] == 525.5
    assert revenue["source"] == "rapport:computed"
    assert revenue["message_id"] == "order-3"
    assert second["traits"]["orders_90d"]["value"] == 2
    assert second["traits"]["orders_90d"]["source"] == "rapport:computed"
    assert list(second["segments"]) == ["big-spenders"]

    # The engine owns these names: a hand-set value is refused...
    patch = await api.client.patch(
        "/api/profiles/user_id:dana/traits",
        json={"traits": {"vip": True, "lifetime_revenue": 0}},
        headers=api.admin,
    )
    assert patch.status_code == 409
    assert (patch.json()["code"], patch.json()["field"]) == (
        "computed_trait",
        "traits.lifetime_revenue",
    )
    # ... and one sent by a client is replaced by the computed value.
    identify = {
        "type": "identify",
        "userId": "dana",
        "messageId": "identify-1",
        "traits": {"lifetime_revenue": 1, "plan": "gold"},
    }
    third = await send(identify)
    assert third["traits"]["lifetime_revenue"]["value"] == 525.5
    assert third["traits"]["lifetime_revenue"]["source"] == "rapport:computed"
    assert third["traits"]["plan"]["value"] == "gold"
    assert "vip" not in third["traits"]
    assert list(third["segments"]) == ["big-spenders"]


async def test_a_trait_defined_after_the_events_is_backfilled_with_progress(
    api_any: ApiHarness,
) -> None:
    api = api_any
    write = {"Authorization": f"Bearer {api.write_key}"}
    now = datetime.now(UTC)
    orders = [
        {
            "type": "track",
            "event": "Order Completed",
            "userId": user,
            "messageId": f"order-{user}-{days_ago}",
            "properties": {"revenue": 100},
            "timestamp": (now - timedelta(days=days_ago)).isoformat(),
        }
        for user, days_ago in (("ann", 120), ("ann", 5), ("bob", 200), ("cy", 1), ("cy", 2))
    ]
    response = await api.client.post("/v1/batch", json={"batch": orders}, headers=write)
    assert response.status_code == 200, response.text
    await settle_all(api)
    segment = {
        "id": "recent-buyers",
        "name": "Ordered in the last 90 days",
        "condition": {"trait": "orders_90d", "op": "gte", "value": 1},
    }
    assert (
        await api.client.post("/api/segments", json=segment, headers=api.admin)
    ).status_code == 201
    await settle_all(api)

    created = await api.client.post(
        "/api/computed-traits", json=definition("orders_90d", compute=ORDERS_90D), headers=api.admin
    )
    assert created.status_code == 201, created.text
    assert created.json()["backfill"]["version"] == 1
    assert created.json()["backfill"]["total"] == 3
    await settle_all(api)

    read = await api.client.get("/api/computed-traits/orders_90d", headers=api.admin)
    backfill = read.json()["backfill"]
    assert (backfill["status"], backfill["processed"], backfill["progress"]) == ("done", 3, 1.0)
    assert (backfill["changed"], backfill["entered"], backfill["exited"]) == (3, 2, 0)
    assert backfill["finished_at"] is not None
    listed = await api.client.get("/api/computed-traits", headers=api.admin)
    assert listed.json()["computed_traits"][0]["backfill"] == backfill

    found: dict[str, Any] = {}
    for user in ("ann", "bob", "cy"):
        profile = await api.client.get(f"/api/profiles/user_id:{user}", headers=api.admin)
        found[user] = profile.json()
    assert {u: p["traits"]["orders_90d"]["value"] for u, p in found.items()} == {
        "ann": 1,
        "bob": 0,
        "cy": 2,
    }
    assert found["cy"]["traits"]["orders_90d"]["source"] == "rapport:computed"
    # As streaming: the last event counted, in the order they arrived.
    assert found["cy"]["traits"]["orders_90d"]["message_id"] == "order-cy-2"
    assert {u: list(p["segments"]) for u, p in found.items()} == {
        "ann": ["recent-buyers"],
        "bob": [],
        "cy": ["recent-buyers"],
    }

    deleted = await api.client.delete("/api/computed-traits/orders_90d", headers=api.admin)
    assert deleted.status_code == 200 and "backfill" not in deleted.json()
