"""GET/PUT /api/policy: the default until written, versions, 422 with every path, 409."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import ApiHarness

S6: dict[str, Any] = {
    "topics": [
        {"id": "offers", "name": "Offers"},
        {"id": "birthday", "name": "Birthday wishes", "default_subscribed": False},
    ],
    "caps": [{"id": "weekly", "category": "promotional", "max": 3, "window": "7d"}],
    "quiet_hours": {"start": "21:00", "end": "09:00", "channels": ["sms"]},
    "timezone": {"trait": "timezone", "default": "Europe/Paris"},
}


async def test_the_default_policy_answers_version_0(api: ApiHarness) -> None:
    response = await api.client.get("/api/policy", headers=api.admin)
    assert response.status_code == 200
    body = response.json()
    assert (body["version"], body["updated_at"]) == (0, None)
    assert body["policy"]["consent"]["marketing"] == "marketing"
    assert body["policy"]["addresses"] == {"email": "email", "sms": "phone", "push": "push_token"}


async def test_put_stores_the_next_version_and_get_reads_it(api: ApiHarness) -> None:
    put = await api.client.put("/api/policy", json=S6, headers=api.admin)
    assert put.status_code == 200, put.text
    assert put.json()["version"] == 1
    got = (await api.client.get("/api/policy", headers=api.admin)).json()
    assert got["version"] == 1
    assert got["policy"]["caps"] == [
        {"id": "weekly", "category": "promotional", "max": 3, "window": "7d"}
    ]
    assert got["policy"]["topics"][1] == {
        "id": "birthday",
        "name": "Birthday wishes",
        "default_subscribed": False,
    }
    stale = await api.client.put("/api/policy", json={}, headers={**api.admin, "If-Match": "0"})
    assert stale.status_code == 409
    assert stale.json()["code"] == "policy_version_conflict"
    fresh = await api.client.put("/api/policy", json={}, headers={**api.admin, "If-Match": "1"})
    assert fresh.status_code == 200 and fresh.json()["version"] == 2


async def test_a_wrong_policy_gets_422_listing_every_error(api: ApiHarness) -> None:
    bad = {"caps": [{"max": "three", "window": "weekly"}], "quiet_hours": {"start": "9pm"}}
    response = await api.client.put("/api/policy", json=bad, headers=api.admin)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_policy"
    assert body["field"] == "$.caps[0].max"
    assert [e["path"] for e in body["errors"]] == [
        "$.caps[0].max",
        "$.caps[0].window",
        "$.quiet_hours.start",
    ]
    assert (await api.client.get("/api/policy", headers=api.admin)).json()["version"] == 0


async def test_bad_requests_are_4xx(api: ApiHarness) -> None:
    not_json = await api.client.put("/api/policy", content=b"{", headers=api.admin)
    assert not_json.status_code == 400
    bad_match = await api.client.put(
        "/api/policy", json={}, headers={**api.admin, "If-Match": "latest"}
    )
    assert (bad_match.status_code, bad_match.json()["field"]) == (400, "If-Match")
    anonymous = await api.client.get("/api/policy")
    assert anonymous.status_code == 401
    write_key = await api.client.get(
        "/api/policy", headers={"Authorization": f"Bearer {api.write_key}"}
    )
    assert write_key.status_code == 403
