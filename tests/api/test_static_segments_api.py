"""Static segments over HTTP: definitions, uploads, and what processing makes of them.

On SQLite and PostgreSQL where the log and the processor are involved.
Everything goes the real way: uploads through ``POST /api/segments/{id}/members``,
the processor applying them in each profile's order, ``Segment Entered`` /
``Segment Exited`` through the log, the membership index following it.
"""

from __future__ import annotations

from typing import Any

from tests.api.conftest import ApiHarness
from tests.api.test_segment_members_api import get, send, settle_index

VIP: dict[str, Any] = {"id": "vip", "name": "VIP list", "kind": "static"}


async def create_vip(api: ApiHarness) -> dict[str, Any]:
    created = await api.client.post("/api/segments", json=VIP, headers=api.admin)
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def upload(
    api: ApiHarness,
    body: dict[str, Any],
    *,
    segment_id: str = "vip",
    key: str | None = None,
    status: int = 200,
) -> dict[str, Any]:
    headers = dict(api.admin)
    if key is not None:
        headers["Idempotency-Key"] = key
    response = await api.client.post(
        f"/api/segments/{segment_id}/members", json=body, headers=headers
    )
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def member_ids(api: ApiHarness, segment_id: str = "vip") -> set[str]:
    page = await get(api, f"/api/segments/{segment_id}/members?limit=1000")
    return {m["profile_id"] for m in page["members"]}


async def test_a_static_definition_has_no_condition_and_keeps_its_kind(api: ApiHarness) -> None:
    created = await create_vip(api)
    assert (created["kind"], created["condition"], created["version"]) == ("static", None, 1)
    assert created["depends_on"]["segments"] == [] and created["time_dependent"] is False
    assert created["size"] == 0

    with_condition = await api.client.post(
        "/api/segments",
        json={**VIP, "id": "other", "condition": {"trait": "vip", "op": "exists"}},
        headers=api.admin,
    )
    assert with_condition.status_code == 422
    assert (with_condition.json()["code"], with_condition.json()["field"]) == (
        "condition_not_allowed",
        "condition",
    )

    # An update without kind keeps it; a new version like any write.
    renamed = await api.client.put(
        "/api/segments/vip", json={"name": "VIP customers"}, headers=api.admin
    )
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["kind"], renamed.json()["version"]) == ("static", 2)
    to_dynamic = await api.client.put(
        "/api/segments/vip",
        json={"name": "x", "kind": "dynamic", "condition": {"trait": "vip", "op": "exists"}},
        headers=api.admin,
    )
    assert to_dynamic.status_code == 409
    assert (to_dynamic.json()["code"], to_dynamic.json()["field"]) == ("kind_change", "kind")

    reader = {"id": "vip-gold", "name": "Gold VIPs", "condition": {"in_segment": "vip"}}
    assert (
        await api.client.post("/api/segments", json=reader, headers=api.admin)
    ).status_code == 201
    in_use = await api.client.delete("/api/segments/vip", headers=api.admin)
    assert in_use.status_code == 409 and in_use.json()["code"] == "segment_in_use"
    listed = await get(api, "/api/segments")
    assert [(s["id"], s["kind"]) for s in listed["segments"]] == [
        ("vip", "static"),
        ("vip-gold", "dynamic"),
    ]


async def test_uploads_add_known_and_unknown_customers_and_remove_them(
    api_any: ApiHarness,
) -> None:
    api = api_any
    await send(
        api,
        {
            "type": "identify",
            "userId": "dana",
            "messageId": "d1",
            "traits": {"email": "dana@example.com"},
        },
    )
    dana_before = await get(api, "/api/profiles/user_id:dana")
    await create_vip(api)

    added = await upload(
        api,
        {
            "add": [
                {"type": "email", "value": " Dana@Example.com "},
                "user_id:sam",
                {"type": "email", "value": "lee@example.com"},
                {"type": "user_id", "value": 42},
            ]
        },
    )
    assert (added["accepted"], added["duplicates"], added["rejected"]) == (4, 0, [])
    assert (added["segment_id"], added["version"]) == ("vip", 1)
    await settle_index(api)

    dana = await get(api, "/api/profiles/user_id:dana")
    assert dana["id"] == dana_before["id"]
    assert dana["segments"]["vip"]["version"] == 1
    # Not the customer's activity: nothing else about her moved.
    assert (dana["last_seen"], dana["event_count"], dana["traits"]) == (
        dana_before["last_seen"],
        dana_before["event_count"],
        dana_before["traits"],
    )
    sam = await get(api, "/api/profiles/user_id:sam")
    assert sam["identifiers"] == [{"type": "user_id", "value": "sam"}]
    assert (sam["event_count"], sam["last_seen"], list(sam["segments"])) == (0, None, ["vip"])
    lee = await get(api, "/api/profiles/email:lee@example.com")
    number = await get(api, "/api/profiles/user_id:42")
    assert (await get(api, "/api/segments/vip"))["size"] == 4
    assert await member_ids(api) == {dana["id"], sam["id"], lee["id"], number["id"]}
    history = await get(api, "/api/profiles/user_id:sam/segments/history")
    assert [(h["segment_id"], h["change"], h["version"]) for h in history["history"]] == [
        ("vip", "entered", 1)
    ]
    timeline = await get(api, "/api/profiles/user_id:sam/events")
    assert [e["event"] for e in timeline["events"]] == [
        "Segment Entered",
        "Static Segment Member Added",
    ]

    removed = await upload(
        api, {"remove": ["email:lee@example.com", "email:nobody@example.com", "user_id:sam"]}
    )
    assert removed["accepted"] == 3
    await settle_index(api)
    assert (await get(api, "/api/segments/vip"))["size"] == 2
    assert await member_ids(api) == {dana["id"], number["id"]}
    assert (await get(api, "/api/profiles/email:lee@example.com"))["segments"] == {}
    # A remove of an unknown identifier creates nothing.
    nobody = await api.client.get("/api/profiles/email:nobody@example.com", headers=api.admin)
    assert nobody.status_code == 404
    history = await get(api, "/api/profiles/user_id:sam/segments/history")
    assert [h["change"] for h in history["history"]] == ["exited", "entered"]


async def test_a_retried_upload_with_the_same_idempotency_key_stores_nothing_twice(
    api_any: ApiHarness,
) -> None:
    api = api_any
    await create_vip(api)
    body = {"add": ["email:dana@example.com", "user_id:sam"], "remove": ["user_id:lee"]}
    first = await upload(api, body, key="upload-2026-03-01")
    assert (first["accepted"], first["duplicates"], first["upload_id"]) == (
        3,
        0,
        "upload-2026-03-01",
    )
    end = await api.rapport.event_log.end_offset()
    again = await upload(api, body, key="upload-2026-03-01")
    assert (again["accepted"], again["duplicates"]) == (0, 3)
    assert await api.rapport.event_log.end_offset() == end
    # The same identifier twice in one upload is one entry.
    doubled = await upload(api, {"add": ["user_id:kim", "user_id:kim"]}, key="other")
    assert (doubled["accepted"], doubled["duplicates"]) == (1, 1)
    # Without a key every upload is a new one (and changes nothing that is already so).
    fresh = await upload(api, {"add": ["user_id:sam"]})
    assert fresh["accepted"] == 1 and fresh["upload_id"] != "upload-2026-03-01"
    await settle_index(api)
    assert (await get(api, "/api/segments/vip"))["size"] == 3
    history = await get(api, "/api/profiles/user_id:sam/segments/history")
    assert [h["change"] for h in history["history"]] == ["entered"]


async def test_bad_entries_are_named_by_position_and_the_good_ones_go_on(
    api: ApiHarness,
) -> None:
    await create_vip(api)
    partial = await upload(
        api,
        {
            "add": [
                "user_id:dana",
                {"type": "email", "value": "not-an-email"},
                {"type": "shoe_size", "value": "42"},
                "no-colon",
                {"type": "email", "value": "x@y.z", "colour": "red"},
                {"type": "user_id"},
                "user_id:undefined",
                17,
            ],
            "remove": ["email:sam@example.com", "user_id:dana"],
        },
    )
    assert partial["accepted"] == 1
    rejected = [(r["index"], r["field"], r["code"]) for r in partial["rejected"]]
    assert rejected == [
        (1, "add[1].value", "invalid_identifier"),
        (2, "add[2].type", "unknown_identifier_type"),
        (3, "add[3]", "invalid_entry"),
        (4, "add[4].colour", "unknown_field"),
        (5, "add[5].value", "invalid_identifier"),
        (6, "add[6]", "invalid_identifier"),
        (7, "add[7]", "invalid_entry"),
        (0, "add[0]", "conflicting_entry"),
        (1, "remove[1]", "conflicting_entry"),
    ]
    assert "email" in partial["rejected"][1]["types"]

    nothing_good = await upload(api, {"add": ["nope", "email:@"]}, status=422)
    assert (nothing_good["code"], nothing_good["field"]) == ("invalid_members", "add[0]")
    assert [r["field"] for r in nothing_good["rejected"]] == ["add[0]", "add[1]"]

    cases: list[tuple[Any, int, str, str | None]] = [
        ({}, 422, "invalid_upload", "add"),
        ({"add": []}, 422, "invalid_upload", "add"),
        ({"add": "user_id:dana"}, 422, "invalid_upload", "add"),
        ({"members": ["user_id:dana"]}, 422, "unknown_field", "members"),
        ([1], 422, "invalid_upload", None),
        ({"add": [f"user_id:u{n}" for n in range(10_001)]}, 413, "upload_too_large", "add"),
    ]
    for body, status, code, field in cases:
        answer = await upload(api, body, status=status)
        assert (answer["code"], answer.get("field")) == (code, field), body
    not_json = await api.client.post(
        "/api/segments/vip/members", content=b"{oops", headers=api.admin
    )
    assert not_json.status_code == 400 and not_json.json()["code"] == "invalid_json"
    long_key = await api.client.post(
        "/api/segments/vip/members",
        json={"add": ["user_id:dana"]},
        headers={**api.admin, "Idempotency-Key": "k" * 100},
    )
    assert long_key.status_code == 400 and long_key.json()["field"] == "Idempotency-Key"


async def test_only_existing_static_segments_take_uploads(api: ApiHarness) -> None:
    dynamic = {"id": "gold", "name": "Gold", "condition": {"trait": "plan", "op": "exists"}}
    assert (
        await api.client.post("/api/segments", json=dynamic, headers=api.admin)
    ).status_code == 201
    refused = await upload(api, {"add": ["user_id:dana"]}, segment_id="gold", status=409)
    assert (refused["code"], refused["field"]) == ("segment_not_static", "id")
    missing = await upload(api, {"add": ["user_id:dana"]}, segment_id="nope", status=404)
    assert missing["code"] == "segment_not_found"
    write = {"Authorization": f"Bearer {api.write_key}"}
    no_secret = await api.client.post(
        "/api/segments/gold/members", json={"add": ["user_id:dana"]}, headers=write
    )
    assert no_secret.status_code == 403
    assert await api.rapport.event_log.end_offset() == 0


async def test_a_csv_upload_with_a_header_names_bad_lines(api_any: ApiHarness) -> None:
    api = api_any
    await create_vip(api)
    csv_body = (
        'type,value\nemail,dana@example.com\n\nuser_id,"sam"\nemail,nope\nuser_id:lee\na,b,c\n'
    )
    response = await api.client.post(
        "/api/segments/vip/members",
        content=csv_body.encode(),
        headers={**api.admin, "Content-Type": "text/csv; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 3
    assert [(r["index"], r["line"], r["field"]) for r in body["rejected"]] == [
        (2, 5, "add[2].value"),
        (4, 7, "add[4]"),
    ]
    await settle_index(api)
    assert (await get(api, "/api/segments/vip"))["size"] == 3

    removal = await api.client.post(
        "/api/segments/vip/members?action=remove",
        content=b"email,dana@example.com\n",
        headers={**api.admin, "Content-Type": "text/csv"},
    )
    assert removal.status_code == 200 and removal.json()["accepted"] == 1
    await settle_index(api)
    assert (await get(api, "/api/segments/vip"))["size"] == 2
    bad_action = await api.client.post(
        "/api/segments/vip/members?action=replace",
        content=b"email,dana@example.com\n",
        headers={**api.admin, "Content-Type": "text/csv"},
    )
    assert bad_action.status_code == 422 and bad_action.json()["field"] == "action"


async def test_dynamic_segments_read_static_ones_and_customer_events_keep_members(
    api_any: ApiHarness,
) -> None:
    api = api_any
    await create_vip(api)
    gold_vip = {
        "id": "gold-vip",
        "name": "Gold VIPs",
        "condition": {
            "all": [{"in_segment": "vip"}, {"trait": "plan", "op": "equals", "value": "gold"}]
        },
    }
    assert (
        await api.client.post("/api/segments", json=gold_vip, headers=api.admin)
    ).status_code == 201
    await send(
        api, {"type": "identify", "userId": "dana", "messageId": "d1", "traits": {"plan": "gold"}}
    )
    assert (await get(api, "/api/profiles/user_id:dana"))["segments"] == {}

    await upload(api, {"add": ["user_id:dana"]})
    await settle_index(api)
    dana = await get(api, "/api/profiles/user_id:dana")
    assert sorted(dana["segments"]) == ["gold-vip", "vip"]
    assert (await get(api, "/api/segments/gold-vip"))["size"] == 1

    # Her own events are evaluated against the dynamic segments; the list stays.
    await send(
        api,
        {"type": "identify", "userId": "dana", "messageId": "d2", "traits": {"city": "Lyon"}},
        {"type": "track", "userId": "dana", "messageId": "d3", "event": "Product Viewed"},
    )
    dana = await get(api, "/api/profiles/user_id:dana")
    assert sorted(dana["segments"]) == ["gold-vip", "vip"]
    assert dana["event_count"] == 3
    await send(
        api, {"type": "identify", "userId": "dana", "messageId": "d4", "traits": {"plan": "silver"}}
    )
    assert list((await get(api, "/api/profiles/user_id:dana"))["segments"]) == ["vip"]

    await upload(api, {"remove": ["user_id:dana"]})
    await settle_index(api)
    assert (await get(api, "/api/profiles/user_id:dana"))["segments"] == {}
    assert (await get(api, "/api/segments/vip"))["size"] == 0


async def test_deleting_a_static_segment_walks_its_members_out(api_any: ApiHarness) -> None:
    api = api_any
    await create_vip(api)
    await upload(api, {"add": ["user_id:dana", "user_id:sam"]})
    await settle_index(api)
    assert (await get(api, "/api/segments/vip"))["size"] == 2
    assert (await api.client.delete("/api/segments/vip", headers=api.admin)).status_code == 200
    await settle_index(api)
    assert (await get(api, "/api/profiles/user_id:dana"))["segments"] == {}
    # Created again: an empty list, members of the old one are not in it.
    again = await create_vip(api)
    assert (again["version"], again["size"]) == (3, 0)
    await upload(api, {"add": ["user_id:sam"]})
    await settle_index(api)
    sam = await get(api, "/api/profiles/user_id:sam")
    assert sam["segments"]["vip"]["version"] == 3
    assert (await get(api, "/api/segments/vip"))["size"] == 1
