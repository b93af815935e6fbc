"""Code pools through the admin API: create, upload JSON and CSV, counts, errors."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.api.conftest import ApiHarness


async def test_create_upload_and_count(api: ApiHarness) -> None:
    client = api.client
    created = await client.post(
        "/api/code-pools", json={"id": "welcome-10", "description": "10% off"}, headers=api.admin
    )
    assert created.status_code == 201, created.text
    assert created.json()["available"] == 0 and created.json()["id"] == "welcome-10"
    again = await client.post("/api/code-pools", json={"id": "welcome-10"}, headers=api.admin)
    assert (again.status_code, again.json()["code"]) == (409, "code_pool_exists")

    upload = await client.post(
        "/api/code-pools/welcome-10/codes", json=["W-1", "W-2", "W-1", " "], headers=api.admin
    )
    assert upload.status_code == 200, upload.text
    assert {k: upload.json()[k] for k in ("added", "duplicates", "available")} == {
        "added": 2,
        "duplicates": 1,
        "available": 2,
    }
    csv_upload = await client.post(
        "/api/code-pools/welcome-10/codes",
        content=b"\xef\xbb\xbfcode\r\nW-2\r\nW-3,unused column\r\n\r\nW-4\r\n",
        headers={**api.admin, "Content-Type": "text/csv"},
    )
    assert csv_upload.status_code == 200, csv_upload.text
    assert (csv_upload.json()["added"], csv_upload.json()["duplicates"]) == (2, 1)
    wrapped = await client.post(
        "/api/code-pools/welcome-10/codes", json={"codes": ["W-5"]}, headers=api.admin
    )
    assert wrapped.json()["added"] == 1

    now = datetime(2026, 3, 1, tzinfo=UTC)
    key = await api.rapport.authenticate(api.secret_key)
    assert key is not None
    pools = api.rapport.storage.code_pools
    code = await pools.claim_code(key.workspace_id, "welcome-10", "p1", "m", now=now)
    assert code == "W-1"

    stats = await client.get("/api/code-pools/welcome-10/stats", headers=api.admin)
    assert stats.json() == {"id": "welcome-10", "available": 4, "claimed": 1, "total": 5}
    one = await client.get("/api/code-pools/welcome-10", headers=api.admin)
    assert one.json()["description"] == "10% off" and one.json()["claimed"] == 1
    listed = await client.get("/api/code-pools", headers=api.admin)
    assert [p["id"] for p in listed.json()["code_pools"]] == ["welcome-10"]


async def test_bad_requests_name_the_field(api: ApiHarness) -> None:
    client = api.client
    bad_id = await client.post("/api/code-pools", json={"id": "Not OK"}, headers=api.admin)
    assert (bad_id.status_code, bad_id.json()["field"]) == (422, "id")
    unknown = await client.post("/api/code-pools", json={"id": "a", "size": 3}, headers=api.admin)
    assert (unknown.status_code, unknown.json()["field"]) == (422, "size")
    missing = await client.post("/api/code-pools/nope/codes", json=["A"], headers=api.admin)
    assert (missing.status_code, missing.json()["code"]) == (404, "code_pool_not_found")
    assert (await client.get("/api/code-pools/nope/stats", headers=api.admin)).status_code == 404

    await client.post("/api/code-pools", json={"id": "p"}, headers=api.admin)
    not_strings = await client.post("/api/code-pools/p/codes", json=["A", 3], headers=api.admin)
    assert (not_strings.status_code, not_strings.json()["field"]) == (422, "codes[1]")
    not_list = await client.post("/api/code-pools/p/codes", json={"a": 1}, headers=api.admin)
    assert (not_list.status_code, not_list.json()["field"]) == (422, "codes")
    empty = await client.post("/api/code-pools/p/codes", json=[], headers=api.admin)
    assert (empty.status_code, empty.json()["field"]) == (422, "codes")
    broken = await client.post(
        "/api/code-pools/p/codes",
        content=b"[",
        headers={**api.admin, "Content-Type": "application/json"},
    )
    assert (broken.status_code, broken.json()["code"]) == (400, "invalid_json")
    xml = await client.post(
        "/api/code-pools/p/codes",
        content=b"<codes/>",
        headers={**api.admin, "Content-Type": "application/xml"},
    )
    assert (xml.status_code, xml.json()["field"]) == (415, "Content-Type")
    no_key = await client.get("/api/code-pools")
    assert no_key.status_code == 401
