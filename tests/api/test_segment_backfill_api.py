"""A segment created after its customers exist: backfilled, with progress over HTTP.

On SQLite and PostgreSQL, through ``/v1/batch`` and the admin API.
"""

from __future__ import annotations

from tests.api.conftest import ApiHarness
from tests.api.test_segment_members_api import get, identify, send, settle_index

GOLD = {
    "id": "gold",
    "name": "Gold plan",
    "condition": {"trait": "plan", "op": "equals", "value": "gold"},
}


async def test_existing_customers_enter_a_new_segment_and_leave_a_changed_one(
    api_any: ApiHarness,
) -> None:
    api = api_any
    plans = {"ana": "gold", "bo": "silver", "cy": "gold", "di": "gold"}
    await send(
        api,
        *(identify(f"m-{user}", plan, user_id=user) for user, plan in sorted(plans.items())),
    )
    created = await api.client.post("/api/segments", json=GOLD, headers=api.admin)
    assert created.status_code == 201, created.text
    started = created.json()["backfill"]
    assert (started["status"], started["version"], started["total"]) == ("running", 1, 4)
    assert started["finished_at"] is None

    await settle_index(api)
    segment = await get(api, "/api/segments/gold")
    assert segment["size"] == 3
    backfill = segment["backfill"]
    assert {k: backfill[k] for k in ("status", "processed", "entered", "exited", "progress")} == {
        "status": "done",
        "processed": 4,
        "entered": 3,
        "exited": 0,
        "progress": 1.0,
    }
    assert backfill["finished_at"] is not None
    ana = await get(api, "/api/profiles/user_id:ana")
    assert list(ana["segments"]) == ["gold"]
    history = await get(api, "/api/profiles/user_id:ana/segments/history")
    assert [h["segment_id"] for h in history["history"]] == ["gold"]

    changed = await api.client.put(
        "/api/segments/gold",
        json={"name": "Silver", "condition": {"trait": "plan", "op": "equals", "value": "silver"}},
        headers=api.admin,
    )
    assert changed.status_code == 200, changed.text
    await settle_index(api)
    segment = await get(api, "/api/segments/gold")
    assert segment["size"] == 1
    assert (segment["backfill"]["version"], segment["backfill"]["entered"]) == (2, 1)
    assert segment["backfill"]["exited"] == 3
    members = await get(api, "/api/segments/gold/members")
    bo = await get(api, "/api/profiles/user_id:bo")
    assert [m["profile_id"] for m in members["members"]] == [bo["id"]]
