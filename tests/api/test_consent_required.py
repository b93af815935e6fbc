"""Data that needs consent is stored only with it (S3: "her location is not stored")."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rapport.settings import SettingsError, load_settings
from tests.api.conftest import ApiHarness, open_harness

GATED = {
    "consent_required_events": "Geofence Entered=location",
    "consent_required_fields": "context.location=location,properties.gps.lat=location",
}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiHarness]:
    runtime, harness = await open_harness(tmp_path, **GATED)
    try:
        yield harness
    finally:
        await harness.client.aclose()
        await runtime.close()


def geofence(user: str, consent: dict[str, bool] | None, **extra: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"location": {"latitude": 48.86, "longitude": 2.35}}
    if consent is not None:
        context["consent"] = {"categoryPreferences": consent}
    return {
        "type": "track",
        "event": "Geofence Entered",
        "userId": user,
        "properties": {"store_id": "paris-rivoli", "gps": {"lat": 48.86, "lon": 2.35}},
        "context": context,
        **extra,
    }


async def events_of(api: ApiHarness, user: str) -> list[dict[str, Any]]:
    r = await api.client.get(f"/api/profiles/user_id:{user}/events", headers=api.admin)
    if r.status_code == 404:
        return []
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


async def test_without_location_consent_the_geofence_event_is_stored_nowhere(
    api: ApiHarness,
) -> None:
    body = {
        "batch": [
            {"type": "identify", "userId": "noa", "traits": {"first_name": "Noa"}},
            geofence("noa", {"location": False}),
            geofence("lea", None),
            geofence("mia", {"location": True}),
        ]
    }
    r = await api.client.post("/v1/batch", json=body, auth=(api.write_key, ""))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["accepted"] == 2
    assert [(x["index"], x["code"], x["field"]) for x in answer["rejected"]] == [
        (1, "consent_required", "batch.1.context.consent.categoryPreferences.location"),
        (2, "consent_required", "batch.2.context.consent.categoryPreferences.location"),
    ]
    await api.settle()

    noa = await events_of(api, "noa")
    assert [e.get("event") for e in noa] == [None]  # only her identify
    assert await events_of(api, "lea") == []
    mia = await events_of(api, "mia")
    assert [e["event"] for e in mia] == ["Geofence Entered"]
    assert mia[0]["context"]["location"] == {"latitude": 48.86, "longitude": 2.35}

    # The rejection records say what happened and keep nothing of what was sent.
    r = await api.client.get("/api/rejections", headers=api.admin)
    rows = [x for x in r.json()["rejections"] if x["code"] == "consent_required"]
    assert len(rows) == 2
    assert all(not row.get("payload") for row in rows)
    assert "48.86" not in json.dumps(r.json())


async def test_gated_fields_are_removed_from_events_without_the_consent(api: ApiHarness) -> None:
    page = {
        "type": "page",
        "name": "Store locator",
        "userId": "zoe",
        "properties": {"gps": {"lat": 48.86, "lon": 2.35}, "store": "rivoli"},
        "context": {"location": {"latitude": 48.86}, "locale": "fr-FR"},
    }
    consenting = {
        **page,
        "userId": "ada",
        "context": {**page["context"], "consent": {"categoryPreferences": {"location": True}}},
    }
    r = await api.client.post(
        "/v1/batch", json={"batch": [page, consenting]}, auth=(api.write_key, "")
    )
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
    await api.settle()
    (zoe,) = await events_of(api, "zoe")
    assert "location" not in zoe["context"]
    assert zoe["context"]["withheld"] == ["context.location", "properties.gps.lat"]
    assert zoe["context"]["locale"] == "fr-FR"
    assert zoe["properties"] == {"gps": {"lon": 2.35}, "store": "rivoli"}
    (ada,) = await events_of(api, "ada")
    assert ada["context"]["location"] == {"latitude": 48.86}
    assert ada["properties"]["gps"] == {"lat": 48.86, "lon": 2.35}


async def test_a_single_call_without_consent_is_a_400_naming_the_field(api: ApiHarness) -> None:
    r = await api.client.post("/v1/track", json=geofence("eve", None), auth=(api.write_key, ""))
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "consent_required"
    assert r.json()["field"] == "context.consent.categoryPreferences.location"


def test_a_field_rule_outside_the_event_roots_fails_at_start_up() -> None:
    with pytest.raises(SettingsError, match="consent_required_fields"):
        load_settings({"consent_required_fields": "userId=location"}, environ={})
