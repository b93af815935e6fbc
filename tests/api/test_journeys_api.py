"""Journey definitions over HTTP: the published schema, validation with every error's
path (JSON and YAML bodies), and versions moving through their lifecycle."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from rapport.core.journeys import JOURNEY_SCHEMA, parse_document
from tests.api.conftest import ApiHarness

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "journeys"
YAML_HEADERS = {"Content-Type": "application/yaml"}


def example(name: str) -> dict[str, Any]:
    document = parse_document((EXAMPLES / name).read_text())
    assert isinstance(document, dict)
    return document


def welcome(name: str = "Welcome series") -> dict[str, Any]:
    document = example("s5-welcome-series.yaml")
    document["name"] = name
    return document


async def test_the_schema_is_published_without_a_key(api: ApiHarness) -> None:
    response = await api.client.get("/api/schemas/journey")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/schema+json")
    schema = response.json()
    assert schema == json.loads(json.dumps(JOURNEY_SCHEMA))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(welcome(), schema)


async def test_validate_accepts_json_and_yaml_and_needs_a_secret_key(api: ApiHarness) -> None:
    response = await api.client.post("/api/journeys/validate", json=welcome(), headers=api.admin)
    assert response.status_code == 200, response.text
    assert response.json() == {"valid": True, "id": "welcome-series", "triggers": 1, "steps": 6}
    text = (EXAMPLES / "s8-basket-reminder.yaml").read_text()
    response = await api.client.post(
        "/api/journeys/validate", content=text, headers={**api.admin, **YAML_HEADERS}
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "basket-reminder"
    anonymous = await api.client.post("/api/journeys/validate", json=welcome())
    assert anonymous.status_code == 401


async def test_every_error_is_listed_with_its_path(api: ApiHarness) -> None:
    document = welcome()
    document["steps"]["welcome"]["message"]["channel"] = "fax"
    del document["steps"]["second"]["message"]["topic"]
    document["steps"]["wait-2d"]["next"] = "secnod"
    document["triggers"][0]["condition"] = {"trait": "plan", "op": "equalz", "value": 1}
    response = await api.client.post("/api/journeys/validate", json=document, headers=api.admin)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_journey"
    assert body["field"] == "$.triggers[0].condition.op"
    assert [(e["path"], e["kind"]) for e in body["errors"]] == [
        ("$.triggers[0].condition.op", "structure"),
        ("$.steps.welcome.message.channel", "structure"),
        ("$.steps.second.message", "structure"),
        ('$.steps["wait-2d"].next', "reference"),
        ("$.steps.second", "reference"),
    ]
    assert "no step 'secnod'" in body["errors"][3]["message"]


async def test_unreadable_bodies_are_400_and_oversized_ones_413(api: ApiHarness) -> None:
    broken_json = await api.client.post(
        "/api/journeys/validate",
        content=b'{"id": "x", "id": "y"}',
        headers={**api.admin, "Content-Type": "application/json"},
    )
    assert broken_json.status_code == 400
    assert broken_json.json()["code"] == "invalid_json"
    assert "duplicate key 'id'" in broken_json.json()["message"]
    broken_yaml = await api.client.post(
        "/api/journeys/validate",
        content="id: x\nsteps: {a: [\n",
        headers={**api.admin, **YAML_HEADERS},
    )
    assert broken_yaml.status_code == 400
    assert broken_yaml.json()["code"] == "invalid_yaml"
    huge = await api.client.post(
        "/api/journeys/validate",
        content=b"{" + b" " * (300 * 1024) + b"}",
        headers={**api.admin, "Content-Type": "application/json"},
    )
    assert huge.status_code == 413


async def test_a_journey_moves_through_its_lifecycle(api_any: ApiHarness) -> None:
    api = api_any
    created = await api.client.post("/api/journeys", json=welcome("v1"), headers=api.admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["state"], body["draft_version"], body["entry_version"]) == ("draft", 1, None)
    assert body["definition"]["name"] == "v1"
    again = await api.client.post("/api/journeys", json=welcome(), headers=api.admin)
    assert again.status_code == 409
    assert again.json()["code"] == "journey_exists"

    published = await api.client.post("/api/journeys/welcome-series/publish", headers=api.admin)
    assert published.status_code == 200, published.text
    assert (published.json()["state"], published.json()["entry_version"]) == ("live", 1)
    twice = await api.client.post("/api/journeys/welcome-series/publish", headers=api.admin)
    assert twice.status_code == 409
    assert twice.json()["code"] == "illegal_transition"

    # A YAML PUT of a published journey starts version 2 as a draft.
    text = yaml.safe_dump(welcome("v2"))
    saved = await api.client.put(
        "/api/journeys/welcome-series", content=text, headers={**api.admin, **YAML_HEADERS}
    )
    assert saved.status_code == 200, saved.text
    assert (saved.json()["draft_version"], saved.json()["entry_version"]) == (2, 1)
    await api.client.post("/api/journeys/welcome-series/publish", headers=api.admin)
    paused = await api.client.post("/api/journeys/welcome-series/pause", headers=api.admin)
    assert paused.json()["state"] == "paused"
    assert [v["status"] for v in paused.json()["versions"]] == ["paused", "paused"]
    resumed = await api.client.post("/api/journeys/welcome-series/resume", headers=api.admin)
    assert [v["status"] for v in resumed.json()["versions"]] == ["published", "published"]
    assert resumed.json()["entry_version"] == 2

    first = await api.client.get("/api/journeys/welcome-series/versions/1", headers=api.admin)
    assert first.status_code == 200
    assert first.json()["definition"]["name"] == "v1"
    assert first.json()["published_at"] is not None
    missing = await api.client.get("/api/journeys/welcome-series/versions/9", headers=api.admin)
    assert missing.status_code == 404

    archived = await api.client.post("/api/journeys/welcome-series/archive", headers=api.admin)
    assert archived.json()["state"] == "archived"
    listed = await api.client.get("/api/journeys", headers=api.admin)
    (journey,) = listed.json()["journeys"]
    assert journey["id"] == "welcome-series" and "definition" not in journey
    assert [v["status"] for v in journey["versions"]] == ["archived", "archived"]


async def test_unknown_journeys_actions_and_ids(api: ApiHarness) -> None:
    missing = await api.client.get("/api/journeys/nope", headers=api.admin)
    assert missing.status_code == 404
    assert missing.json()["code"] == "journey_not_found"
    assert (
        await api.client.post("/api/journeys/nope/publish", headers=api.admin)
    ).status_code == 404
    await api.client.put("/api/journeys/welcome-series", json=welcome(), headers=api.admin)
    unknown = await api.client.post("/api/journeys/welcome-series/launch", headers=api.admin)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "unknown_action"
    bad_id = await api.client.put("/api/journeys/Bad%20Id", json=welcome(), headers=api.admin)
    assert bad_id.status_code == 422
    assert bad_id.json()["code"] == "invalid_journey_id"


async def test_put_takes_the_id_from_the_path_and_refuses_another(api: ApiHarness) -> None:
    document = welcome()
    del document["id"]
    created = await api.client.put("/api/journeys/hello", json=document, headers=api.admin)
    assert created.status_code == 201, created.text
    assert created.json()["definition"]["id"] == "hello"
    other = welcome()
    mismatch = await api.client.put("/api/journeys/hello", json=other, headers=api.admin)
    assert mismatch.status_code == 422
    assert mismatch.json()["field"] == "$.id"


async def test_publishing_needs_the_segments_the_journey_reads(api: ApiHarness) -> None:
    document = example("s1-inconvenience-sms.yaml")
    await api.client.put("/api/journeys/inconvenience-sms", json=document, headers=api.admin)
    refused = await api.client.post("/api/journeys/inconvenience-sms/publish", headers=api.admin)
    assert refused.status_code == 422
    assert refused.json()["code"] == "unknown_segment"
    assert refused.json()["segments"] == ["inconvenienced"]
    segment = {
        "id": "inconvenienced",
        "name": "Inconvenienced",
        "condition": {"trait": "tags", "op": "contains", "value": "inconvenienced"},
    }
    created = await api.client.post("/api/segments", json=segment, headers=api.admin)
    assert created.status_code == 201, created.text
    published = await api.client.post("/api/journeys/inconvenience-sms/publish", headers=api.admin)
    assert published.status_code == 200, published.text


async def test_stored_definitions_are_what_was_sent(api: ApiHarness) -> None:
    document = example("s1-backorder-care.yaml")
    sent = copy.deepcopy(document)
    response = await api.client.post("/api/journeys", json=document, headers=api.admin)
    assert response.status_code == 201, response.text
    shown = await api.client.get("/api/journeys/backorder-care", headers=api.admin)
    assert shown.json()["definition"] == sent
