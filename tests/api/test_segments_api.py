"""Segment definitions over HTTP: create, version, list, read, delete, and bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.api.conftest import ApiHarness

S2: dict[str, Any] = {
    "event": "Product Viewed",
    "aggregate": "count",
    "window": "1h",
    "key": "properties.product_id",
    "op": "gte",
    "value": 3,
}
S2_ID = "viewed-same-product-3x-1h"


def definition(segment_id: str = S2_ID, **fields: Any) -> dict[str, Any]:
    return {
        "id": segment_id,
        "name": "Viewed the same product 3 times within an hour",
        "condition": S2,
        **fields,
    }


async def test_create_then_read_list_update_and_delete(api_any: ApiHarness) -> None:
    api = api_any
    created = await api.client.post(
        "/api/segments", json=definition(description="S2"), headers=api.admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"] == S2_ID
    assert (body["version"], body["status"], body["kind"]) == (1, "active", "dynamic")
    assert body["condition"] == S2
    assert body["description"] == "S2"
    assert body["depends_on"]["events"] == ["Product Viewed"]
    assert body["time_dependent"] is True
    assert body["created_at"] == body["updated_at"]

    read = await api.client.get(f"/api/segments/{S2_ID}", headers=api.admin)
    assert read.status_code == 200
    assert read.json() == body

    gold = {"trait": "plan", "op": "equals", "value": "gold"}
    updated = await api.client.put(
        f"/api/segments/{S2_ID}",
        json={"name": "Hesitating gold customers", "condition": {"all": [S2, gold]}},
        headers=api.admin,
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2
    assert updated.json()["created_at"] == body["created_at"]
    assert updated.json()["depends_on"]["traits"] == ["plan"]

    listed = await api.client.get("/api/segments", headers=api.admin)
    assert listed.status_code == 200
    assert [(s["id"], s["version"]) for s in listed.json()["segments"]] == [(S2_ID, 2)]

    deleted = await api.client.delete(f"/api/segments/{S2_ID}", headers=api.admin)
    assert deleted.status_code == 200
    assert (deleted.json()["status"], deleted.json()["version"]) == ("deleted", 3)
    gone = await api.client.get(f"/api/segments/{S2_ID}", headers=api.admin)
    assert gone.status_code == 404
    assert gone.json()["code"] == "segment_not_found"
    assert (await api.client.get("/api/segments", headers=api.admin)).json()["segments"] == []


async def test_put_creates_and_an_existing_id_conflicts_on_post(api: ApiHarness) -> None:
    put = await api.client.put(
        f"/api/segments/{S2_ID}", json={"name": "S2", "condition": S2}, headers=api.admin
    )
    assert put.status_code == 201, put.text
    assert put.json()["version"] == 1
    again = await api.client.post("/api/segments", json=definition(), headers=api.admin)
    assert again.status_code == 409
    assert again.json()["code"] == "segment_exists"
    assert again.json()["field"] == "id"
    still = await api.client.get(f"/api/segments/{S2_ID}", headers=api.admin)
    assert still.json()["name"] == "S2"


async def test_a_deleted_id_can_be_created_again_with_the_next_version(api: ApiHarness) -> None:
    await api.client.post("/api/segments", json=definition(), headers=api.admin)
    await api.client.delete(f"/api/segments/{S2_ID}", headers=api.admin)
    again = await api.client.post("/api/segments", json=definition(), headers=api.admin)
    assert again.status_code == 201, again.text
    assert again.json()["version"] == 3
    missing = await api.client.delete(f"/api/segments/{S2_ID}-x", headers=api.admin)
    assert missing.status_code == 404


async def test_an_invalid_condition_lists_every_error_with_its_path(api: ApiHarness) -> None:
    bad = {"all": [S2, {"trait": "plan", "op": "equalz", "value": 1}, {"nope": 1}]}
    response = await api.client.post(
        "/api/segments", json=definition(condition=bad), headers=api.admin
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_condition"
    assert body["field"] == "condition.all[1].op"
    paths = [e["path"] for e in body["errors"]]
    assert paths[0] == "$.all[1].op"
    assert any(p.startswith("$.all[2]") for p in paths)
    put = await api.client.put(
        f"/api/segments/{S2_ID}", json={"name": "x", "condition": bad}, headers=api.admin
    )
    assert put.status_code == 422 and put.json()["code"] == "invalid_condition"
    listed = await api.client.get("/api/segments", headers=api.admin)
    assert listed.json()["segments"] == []


async def test_bad_fields_are_named(api: ApiHarness) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        (definition("Bad Id"), "invalid_segment_id", "id"),
        ({"name": "x", "condition": S2}, "invalid_segment_id", "id"),
        (definition(name=""), "invalid_name", "name"),
        (definition(name="x" * 201), "invalid_name", "name"),
        (definition(description=3), "invalid_description", "description"),
        (definition(kind="static"), "condition_not_allowed", "condition"),
        (definition(kind="weird"), "invalid_kind", "kind"),
        (definition(colour="red"), "unknown_field", "colour"),
        ({"id": "a", "name": "x"}, "invalid_condition", "condition"),
    ]
    for body, code, field in cases:
        response = await api.client.post("/api/segments", json=body, headers=api.admin)
        assert response.status_code == 422, (body, response.text)
        assert (response.json()["code"], response.json().get("field")) == (code, field), body
    mismatch = await api.client.put("/api/segments/a", json=definition("b"), headers=api.admin)
    assert mismatch.status_code == 422 and mismatch.json()["field"] == "id"
    not_json = await api.client.post("/api/segments", content=b"{oops", headers=api.admin)
    assert not_json.status_code == 400 and not_json.json()["code"] == "invalid_json"
    not_object = await api.client.post("/api/segments", json=[1], headers=api.admin)
    assert not_object.status_code == 422
    too_large = await api.client.post(
        "/api/segments",
        json=definition(description="x" * 300_000),
        headers=api.admin,
    )
    assert too_large.status_code == 413
    assert (await api.client.get("/api/segments", headers=api.admin)).json()["segments"] == []


async def test_segment_references_must_exist_and_not_loop(api: ApiHarness) -> None:
    in_a = {"in_segment": "a"}
    unknown = await api.client.post(
        "/api/segments", json=definition("b", condition=in_a), headers=api.admin
    )
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_segment"

    vip = {"trait": "vip", "op": "exists"}
    assert (
        await api.client.post(
            "/api/segments", json=definition("a", condition=vip), headers=api.admin
        )
    ).status_code == 201
    assert (
        await api.client.post(
            "/api/segments", json=definition("b", condition=in_a), headers=api.admin
        )
    ).status_code == 201
    loop = await api.client.put(
        "/api/segments/a", json={"name": "a", "condition": {"in_segment": "b"}}, headers=api.admin
    )
    assert loop.status_code == 422
    assert loop.json()["code"] == "segment_cycle"
    assert "a -> b -> a" in loop.json()["message"]
    itself = await api.client.put(
        "/api/segments/c", json={"name": "c", "condition": {"in_segment": "c"}}, headers=api.admin
    )
    assert itself.status_code == 422 and itself.json()["code"] == "segment_cycle"

    in_use = await api.client.delete("/api/segments/a", headers=api.admin)
    assert in_use.status_code == 409
    assert in_use.json()["code"] == "segment_in_use"
    assert (await api.client.delete("/api/segments/b", headers=api.admin)).status_code == 200
    assert (await api.client.delete("/api/segments/a", headers=api.admin)).status_code == 200


async def test_segments_need_a_secret_key_and_stay_in_their_workspace(api: ApiHarness) -> None:
    assert (await api.client.get("/api/segments")).status_code == 401
    write = {"Authorization": f"Bearer {api.write_key}"}
    assert (await api.client.get("/api/segments", headers=write)).status_code == 403

    await api.client.post("/api/segments", json=definition(), headers=api.admin)
    other_key = await api.rapport.create_key("secret", workspace="other")
    other = {"Authorization": f"Bearer {other_key}"}
    assert (await api.client.get("/api/segments", headers=other)).json()["segments"] == []
    assert (await api.client.get(f"/api/segments/{S2_ID}", headers=other)).status_code == 404
    assert (await api.client.delete(f"/api/segments/{S2_ID}", headers=other)).status_code == 404
    # The same id in another workspace is another segment with its own versions.
    theirs = await api.client.post("/api/segments", json=definition(), headers=other)
    assert theirs.status_code == 201 and theirs.json()["version"] == 1
    mine = await api.client.get(f"/api/segments/{S2_ID}", headers=api.admin)
    assert mine.status_code == 200 and mine.json()["version"] == 1


async def settle_all(api: ApiHarness) -> None:
    """Settle until no new events appear: membership events go through the log too.

    They reach it through the relay after the step that decided them:
    settled means the relay has nothing due (``run_due`` waits for a
    delivery in flight) and processing has caught up with the log.
    """
    while True:
        await api.settle()
        delivered = await api.rapport.relay.run_due()
        end = await api.rapport.event_log.end_offset()
        if not delivered and api.rapport.processor.processed_offset >= end:
            return


async def test_s2_membership_streams_from_ingest_to_the_profile(api_any: ApiHarness) -> None:
    api = api_any
    created = await api.client.post("/api/segments", json=definition(), headers=api.admin)
    assert created.status_code == 201, created.text
    write = {"Authorization": f"Bearer {api.write_key}"}
    now = datetime.now(UTC)

    def view(n: int, minutes_ago: int, product: str = "jacket") -> dict[str, Any]:
        return {
            "type": "track",
            "event": "Product Viewed",
            "userId": "dana",
            "messageId": f"view-{n}",
            "properties": {"product_id": product},
            "timestamp": (now - timedelta(minutes=minutes_ago)).isoformat(),
        }

    async def send(*events: dict[str, Any]) -> dict[str, Any]:
        response = await api.client.post("/v1/batch", json={"batch": list(events)}, headers=write)
        assert response.status_code == 200, response.text
        await settle_all(api)
        profile = await api.client.get("/api/profiles/user_id:dana", headers=api.admin)
        assert profile.status_code == 200, profile.text
        body: dict[str, Any] = profile.json()
        return body

    second = await send(view(1, 50), view(2, 45, "shoes"), view(3, 40))
    assert second["segments"] == {}, "the second view of the jacket is not enough"
    third = await send(view(4, 1))
    assert list(third["segments"]) == [S2_ID]
    assert third["segments"][S2_ID]["version"] == 1

    timeline = await api.client.get("/api/profiles/user_id:dana/events", headers=api.admin)
    names = [e.get("event") for e in timeline.json()["events"]]
    assert names[0] == "Segment Entered"
    assert names.count("Segment Entered") == 1
    entered = timeline.json()["events"][0]
    assert entered["properties"] == {"segment_id": S2_ID, "version": 1}
    assert entered["source"] == "rapport:segments"
