"""The condition language's HTTP surface: published schema and validation."""

from __future__ import annotations

import jsonschema

from rapport.core.conditions import CONDITION_SCHEMA
from tests.api.conftest import ApiHarness

S2 = {
    "event": "Product Viewed",
    "aggregate": "count",
    "window": "1h",
    "key": "properties.product_id",
    "op": "gte",
    "value": 3,
}


async def test_schema_is_published_without_a_key(api: ApiHarness) -> None:
    response = await api.client.get("/api/schemas/condition")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/schema+json")
    schema = response.json()
    assert schema == CONDITION_SCHEMA
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(S2, schema)


async def test_a_valid_condition_reports_what_it_depends_on(api: ApiHarness) -> None:
    tree = {"all": [S2, {"trait": "plan", "op": "equals", "value": "gold"}]}
    response = await api.client.post("/api/conditions/validate", json=tree, headers=api.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["valid"] is True
    assert body["depends_on"]["events"] == ["Product Viewed"]
    assert body["depends_on"]["traits"] == ["plan"]
    assert body["time_dependent"] is True


async def test_every_error_is_listed_with_its_path(api: ApiHarness) -> None:
    tree = {"all": [S2, {"trait": "plan", "op": "equalz", "value": 1}, {"nope": 1}]}
    response = await api.client.post("/api/conditions/validate", json=tree, headers=api.admin)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_condition"
    assert body["field"] == "$.all[1].op"
    paths = [e["path"] for e in body["errors"]]
    assert paths[0] == "$.all[1].op"
    assert any(p.startswith("$.all[2]") for p in paths)


async def test_validate_needs_a_secret_key_and_json(api: ApiHarness) -> None:
    assert (await api.client.post("/api/conditions/validate", json=S2)).status_code == 401
    response = await api.client.post(
        "/api/conditions/validate", content=b"{oops", headers=api.admin
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"
