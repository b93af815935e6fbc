"""The admin profile API, end to end through ingest and processing, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import ApiHarness


async def send(api: ApiHarness, *events: dict[str, Any]) -> None:
    response = await api.client.post(
        "/v1/batch", json={"batch": list(events)}, auth=(api.write_key, "")
    )
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == []
    await api.settle()


async def profile(api: ApiHarness, ref: str) -> dict[str, Any]:
    response = await api.client.get(f"/api/profiles/{ref}", headers=api.admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


STORY = (
    {
        "type": "page",
        "anonymousId": "anon-1",
        "name": "Home",
        "messageId": "m1",
        "timestamp": "2026-11-20T10:00:00Z",
    },
    {
        "type": "track",
        "anonymousId": "anon-2",
        "event": "Product Viewed",
        "messageId": "m2",
        "timestamp": "2026-11-20T10:01:00Z",
        "properties": {"product_id": "jacket-01"},
    },
    {
        "type": "identify",
        "anonymousId": "anon-1",
        "userId": "u-dana",
        "messageId": "m3",
        "timestamp": "2026-11-20T10:02:00Z",
        "traits": {"email": " Dana@Example.com ", "name": "Dana", "loyalty": "gold"},
        "context": {"consent": {"categoryPreferences": {"marketing": True, "analytics": False}}},
    },
    {
        "type": "alias",
        "previousId": "anon-2",
        "userId": "u-dana",
        "messageId": "m4",
        "timestamp": "2026-11-20T10:03:00Z",
    },
)


async def test_profile_shows_merged_identity_traits_consent_and_provenance(
    api_any: ApiHarness,
) -> None:
    await send(api_any, *STORY)
    body = await profile(api_any, "email:dana@example.com")
    assert {(i["type"], i["value"]) for i in body["identifiers"]} == {
        ("user_id", "u-dana"),
        ("anonymous_id", "anon-1"),
        ("anonymous_id", "anon-2"),
        ("email", "dana@example.com"),
    }
    name = body["traits"]["name"]
    assert name["value"] == "Dana"
    assert name["source"].startswith("write_key:")
    assert name["observed_at"].startswith("2026-11-20T10:02:00")
    assert name["received_at"]
    assert name["consent_basis"] == ["marketing"]
    assert body["consent"]["marketing"]["granted"] is True
    assert body["consent"]["analytics"]["granted"] is False
    assert len(body["merged_from"]) == 1
    assert body["merges"][0]["loser"] == body["merged_from"][0]
    assert body["event_count"] == 4
    # Every identifier, and the merged-away profile's id, lead to the same profile.
    for ref in (
        "user_id:u-dana",
        "anonymous_id:anon-1",
        "anonymous_id:anon-2",
        f"id:{body['merged_from'][0]}",
        "email:DANA@example.com",
    ):
        assert (await profile(api_any, ref))["id"] == body["id"]


async def test_events_are_newest_first_and_paged(api_any: ApiHarness) -> None:
    await send(api_any, *STORY)
    response = await api_any.client.get(
        "/api/profiles/user_id:u-dana/events", params={"limit": 3}, headers=api_any.admin
    )
    assert response.status_code == 200
    first = response.json()
    assert [e["messageId"] for e in first["events"]] == ["m4", "m3", "m2"]
    assert first["next_before"] is not None
    response = await api_any.client.get(
        "/api/profiles/user_id:u-dana/events",
        params={"limit": 3, "before": first["next_before"]},
        headers=api_any.admin,
    )
    second = response.json()
    assert [e["messageId"] for e in second["events"]] == ["m1"]
    assert second["next_before"] is None
    assert second["events"][0]["type"] == "page"
    assert second["events"][0]["name"] == "Home"


async def test_patch_traits_is_processed_with_admin_provenance(api_any: ApiHarness) -> None:
    await send(api_any, *STORY)
    response = await api_any.client.patch(
        "/api/profiles/email:dana@example.com/traits",
        json={"traits": {"inconvenienced": True, "loyalty": "platinum"}},
        headers={**api_any.admin, "Idempotency-Key": "agent-42"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["traits"]["inconvenienced"]["value"] is True
    assert body["traits"]["inconvenienced"]["source"].startswith("admin:")
    assert body["traits"]["loyalty"]["value"] == "platinum"
    assert body["traits"]["name"]["value"] == "Dana"  # untouched traits stay
    # A retried PATCH with the same Idempotency-Key is applied once.
    again = await api_any.client.patch(
        "/api/profiles/email:dana@example.com/traits",
        json={"traits": {"inconvenienced": True, "loyalty": "platinum"}},
        headers={**api_any.admin, "Idempotency-Key": "agent-42"},
    )
    assert again.status_code == 200
    events = (
        await api_any.client.get("/api/profiles/user_id:u-dana/events", headers=api_any.admin)
    ).json()["events"]
    assert [e["source"].split(":")[0] for e in events].count("admin") == 1


async def test_unknown_profile_is_404(api: ApiHarness) -> None:
    for path in ("/api/profiles/email:nobody@example.com", "/api/profiles/id:prof_x/events"):
        response = await api.client.get(path, headers=api.admin)
        assert response.status_code == 404
        assert response.json()["code"] == "profile_not_found"


@pytest.mark.parametrize("ref", ["dana", ":dana", "email:"])
async def test_malformed_ref_is_400_naming_it(api: ApiHarness, ref: str) -> None:
    response = await api.client.get(f"/api/profiles/{ref}", headers=api.admin)
    assert response.status_code == 400
    assert response.json()["field"] == "ref"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, None),
        (b'{"traits": []}', 422, "traits"),
        (b'{"traits": {}}', 422, "traits"),
        (b'{"name": "x"}', 422, "traits"),
        (b'{"traits": {"": 1}}', 422, "traits."),
    ],
)
async def test_bad_patch_bodies_are_4xx(
    api: ApiHarness, body: bytes, status: int, field: str | None
) -> None:
    await send(api, STORY[0])
    response = await api.client.patch(
        "/api/profiles/anonymous_id:anon-1/traits", content=body, headers=api.admin
    )
    assert response.status_code == status, response.text
    assert response.json().get("field") == field


async def test_admin_api_needs_a_secret_key(api: ApiHarness) -> None:
    path = "/api/profiles/user_id:u-dana"
    missing = await api.client.get(path)
    assert missing.status_code == 401
    assert missing.json()["code"] == "missing_secret_key"
    wrong = await api.client.get(path, headers={"Authorization": "Bearer sk_nope"})
    assert wrong.status_code == 401
    write_key = await api.client.get(path, headers={"Authorization": f"Bearer {api.write_key}"})
    assert write_key.status_code == 403
    assert write_key.json()["field"] == "Authorization"


async def test_workspaces_do_not_see_each_other(api: ApiHarness) -> None:
    await send(api, *STORY)
    other_secret = await api.rapport.create_key("secret", "other-brand")
    response = await api.client.get(
        "/api/profiles/user_id:u-dana", headers={"Authorization": f"Bearer {other_secret}"}
    )
    assert response.status_code == 404


async def test_openapi_health_and_metrics(api: ApiHarness) -> None:
    await send(api, *STORY)
    spec = (await api.client.get("/openapi.json")).json()
    for path in (
        "/v1/batch",
        "/api/profiles/{ref}",
        "/api/profiles/{ref}/events",
        "/api/profiles/{ref}/traits",
        "/healthz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    health = (await api.client.get("/healthz")).json()
    assert health["status"] == "ok"
    await api.rapport.processor.wait_processed(4, 5)
    metrics = (await api.client.get("/metrics")).text
    assert 'rapport_events_accepted_total{type="identify"} 1.0' in metrics
    assert "rapport_processing_lag" in metrics
