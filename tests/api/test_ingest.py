"""The Segment-compatible ingest API over HTTP: routes, auth, encodings, dedup, settings."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from rapport.core.model import Event
from rapport.runtime.service import Rapport
from tests.api.conftest import ApiHarness, open_harness


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(message_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Product Viewed",
        "userId": "dana",
        "messageId": message_id,
        **extra,
    }


async def logged(rapport: Rapport) -> list[Event]:
    return [entry.event for entry in await rapport.event_log.read(0, 10_000)]


async def post_batch(api: ApiHarness, events: list[Any], **envelope: Any) -> httpx.Response:
    return await api.client.post(
        "/v1/batch", json={"batch": events, **envelope}, headers=basic(api.write_key)
    )


# -- routes ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/b", "/batch", "/b"])
async def test_every_batch_path_accepts_a_batch(api: ApiHarness, path: str) -> None:
    response = await api.client.post(
        path,
        json={"batch": [track("m1"), track("m2")]},
        headers=basic(api.write_key),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 2, "duplicates": 0, "rejected": []}
    assert [e.message_id for e in await logged(api.rapport)] == ["m1", "m2"]


SINGLE_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("track", {"event": "Signed Up", "userId": "u1"}),
    ("identify", {"userId": "u1", "traits": {"plan": "gold"}}),
    ("page", {"anonymousId": "a1", "name": "Home"}),
    ("screen", {"anonymousId": "a1", "name": "Cart"}),
    ("group", {"userId": "u1", "groupId": "acme"}),
    ("alias", {"userId": "u1", "previousId": "a1"}),
]


@pytest.mark.parametrize(("event_type", "payload"), SINGLE_CALLS)
@pytest.mark.parametrize("short", [False, True])
async def test_single_calls_take_their_type_from_the_path(
    api: ApiHarness, event_type: str, payload: dict[str, Any], short: bool
) -> None:
    path = f"/v1/{event_type[0]}" if short else f"/v1/{event_type}"
    # A body "type" that disagrees with the path is overruled by the path.
    response = await api.client.post(
        path,
        json={**payload, "type": "identify" if event_type != "identify" else "track"},
        headers=basic(api.write_key),
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    [event] = await logged(api.rapport)
    assert event.type == event_type


async def test_accepted_events_are_normalised_and_attributed(api: ApiHarness) -> None:
    key = await api.rapport.authenticate(api.write_key)
    assert key is not None
    sent_at = datetime.now(UTC) + timedelta(hours=2)  # the device clock is 2h fast
    response = await post_batch(
        api,
        [track("m1", timestamp=(sent_at - timedelta(seconds=30)).isoformat(), userId=42)],
        sentAt=sent_at.isoformat(),
        context={"library": {"name": "analytics-python"}},
    )
    assert response.status_code == 200
    [event] = await logged(api.rapport)
    assert event.workspace_id == key.workspace_id
    assert event.source == f"write_key:{key.id}"
    assert event.user_id == "42"
    assert event.context == {"library": {"name": "analytics-python"}}
    assert event.received_at - event.timestamp == timedelta(seconds=30)
    assert event.original_timestamp == sent_at - timedelta(seconds=30)


async def test_accepted_events_get_processed(api: ApiHarness) -> None:
    response = await post_batch(api, [track("m1", userId="proc-user")])
    assert response.status_code == 200
    await api.settle()
    profile = await api.client.get("/api/profiles/user_id:proc-user", headers=api.admin)
    assert profile.status_code == 200, profile.text


# -- auth --------------------------------------------------------------------------


async def test_write_key_in_the_body(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/batch", json={"batch": [track("m1")], "writeKey": api.write_key}
    )
    assert response.status_code == 200, response.text


async def test_write_key_in_a_single_call_body(api: ApiHarness) -> None:
    response = await api.client.post("/v1/t", json={**track("m1"), "writeKey": api.write_key})
    assert response.status_code == 200, response.text


async def test_write_key_in_x_write_key_header(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/track", json=track("m1"), headers={"X-Write-Key": api.write_key}
    )
    assert response.status_code == 200, response.text


async def test_header_key_wins_over_body_key(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/batch",
        json={"batch": [track("m1")], "writeKey": "wk_someone-else"},
        headers=basic(api.write_key),
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("how", ["basic", "bearer", "body"])
async def test_a_secret_key_can_ingest(api: ApiHarness, how: str) -> None:
    key = await api.rapport.authenticate(api.secret_key)
    assert key is not None
    headers = {
        "basic": basic(api.secret_key),
        "bearer": {"Authorization": f"Bearer {api.secret_key}"},
        "body": {},
    }[how]
    response = await api.client.post(
        "/v1/batch",
        json={"batch": [track("m1")], "writeKey": api.secret_key},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    [event] = await logged(api.rapport)
    assert event.source == f"secret_key:{key.id}"


# -- encodings ---------------------------------------------------------------------


async def test_text_plain_body_is_read_as_json(api: ApiHarness) -> None:
    # What analytics.js sends from a browser (it avoids a CORS preflight).
    response = await api.client.post(
        "/v1/t",
        content=json.dumps({**track("m1"), "writeKey": api.write_key}),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 200, response.text


async def test_gzipped_batch(api: ApiHarness) -> None:
    payload = json.dumps({"batch": [track(f"m{i}") for i in range(50)]}).encode()
    response = await api.client.post(
        "/v1/batch",
        content=gzip.compress(payload),
        headers={**basic(api.write_key), "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 50


async def test_concatenated_gzip_members(api: ApiHarness) -> None:
    payload = json.dumps({"batch": [track("m1")]}).encode()
    compressed = gzip.compress(payload[:10]) + gzip.compress(payload[10:])
    response = await api.client.post(
        "/v1/batch",
        content=compressed,
        headers={**basic(api.write_key), "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.text


async def test_cors_preflight_from_any_origin(api: ApiHarness) -> None:
    response = await api.client.options(
        "/v1/t",
        headers={
            "Origin": "https://shop.example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://shop.example.org"
    assert "POST" in response.headers["access-control-allow-methods"]
    actual = await api.client.post(
        "/v1/t",
        json={**track("m1"), "writeKey": api.write_key},
        headers={"Origin": "https://shop.example.org"},
    )
    assert actual.headers["access-control-allow-origin"] == "https://shop.example.org"


# -- partial batches, dedup --------------------------------------------------------


async def test_partial_batch_accepts_the_good_and_lists_the_bad(api: ApiHarness) -> None:
    response = await post_batch(
        api,
        [
            track("ok-1"),
            {"type": "track", "event": "X", "messageId": "bad-1"},
            track("ok-2", properties=["not", "an", "object"]),
            track("ok-3"),
        ],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["accepted"] == 2
    assert body["duplicates"] == 0
    assert [(r["index"], r["code"], r["field"]) for r in body["rejected"]] == [
        (1, "missing_identity", "batch.1.userId"),
        (2, "invalid_field", "batch.2.properties"),
    ]
    assert all(r["message"] for r in body["rejected"])
    assert [e.message_id for e in await logged(api.rapport)] == ["ok-1", "ok-3"]

    listed = await api.client.get("/api/rejections", headers=api.admin)
    assert listed.status_code == 200, listed.text
    rows = listed.json()["rejections"]
    assert [(r["index"], r["code"], r["field"]) for r in rows] == [
        (2, "invalid_field", "batch.2.properties"),
        (1, "missing_identity", "batch.1.userId"),
    ]
    assert json.loads(rows[1]["payload"]) == {
        "type": "track",
        "event": "X",
        "messageId": "bad-1",
    }
    assert rows[1]["message_id"] == "bad-1"


async def test_replayed_message_id_is_a_duplicate_stored_once(api: ApiHarness) -> None:
    first = await post_batch(api, [track("m1"), track("m2")])
    again = await post_batch(api, [track("m2"), track("m3")])
    assert first.json()["accepted"] == 2
    assert again.status_code == 200
    assert again.json() == {"success": True, "accepted": 1, "duplicates": 1, "rejected": []}
    assert [e.message_id for e in await logged(api.rapport)] == ["m1", "m2", "m3"]


async def test_duplicates_within_one_batch(api: ApiHarness) -> None:
    response = await post_batch(api, [track("m1"), track("m1"), track("m2"), track("m1")])
    assert response.json() == {"success": True, "accepted": 2, "duplicates": 2, "rejected": []}
    assert [e.message_id for e in await logged(api.rapport)] == ["m1", "m2"]


async def test_only_duplicates_is_still_a_200(api: ApiHarness) -> None:
    await post_batch(api, [track("m1")])
    response = await post_batch(api, [track("m1")])
    assert response.status_code == 200
    assert response.json()["duplicates"] == 1


async def test_a_missing_message_id_is_generated(api: ApiHarness) -> None:
    event = {"type": "track", "event": "E", "userId": "u"}
    response = await post_batch(api, [event, event])
    assert response.json()["accepted"] == 2
    ids = [e.message_id for e in await logged(api.rapport)]
    assert len(set(ids)) == 2 and all(ids)


async def test_an_empty_batch_is_fine(api: ApiHarness) -> None:
    response = await post_batch(api, [])
    assert response.status_code == 200
    assert response.json()["accepted"] == 0


# -- accepted means durable --------------------------------------------------------


async def test_no_answer_before_the_append_returned(
    api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    real_append = api.rapport.event_log.append

    async def slow_append(events: Any) -> list[bool]:
        await release.wait()
        return await real_append(events)

    monkeypatch.setattr(api.rapport.event_log, "append", slow_append)
    request = asyncio.create_task(post_batch(api, [track("m1")]))
    await asyncio.sleep(0.1)
    assert not request.done(), "answered before the events were durable"
    release.set()
    response = await request
    assert response.status_code == 200
    assert [e.message_id for e in await logged(api.rapport)] == ["m1"]


async def test_backpressure_answers_429_with_retry_after(tmp_path: Path) -> None:
    runtime, api = await open_harness(tmp_path, max_processing_lag=-1)
    try:
        response = await api.client.post(
            "/v1/batch", content=b"not even json", headers=basic(api.write_key)
        )
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) > 0
        assert response.headers["x-ratelimit-reset"] == response.headers["retry-after"]
        assert response.json()["code"] == "throttled"
        assert await logged(runtime) == []
        metrics = (await api.client.get("/metrics")).text
        assert "rapport_ingest_throttled_total 1.0" in metrics
    finally:
        await api.client.aclose()
        await runtime.close()


# -- metrics -----------------------------------------------------------------------


async def test_metrics_count_accepted_duplicates_and_rejected(api: ApiHarness) -> None:
    await post_batch(
        api,
        [
            track("m1"),
            track("m1"),
            {"type": "identify", "userId": "u", "messageId": "i1"},
            {"type": "track", "userId": "u"},
        ],
    )
    text = (await api.client.get("/metrics")).text
    assert 'rapport_events_accepted_total{type="track"} 1.0' in text
    assert 'rapport_events_accepted_total{type="identify"} 1.0' in text
    assert "rapport_events_duplicate_total 1.0" in text
    assert 'rapport_events_rejected_total{code="missing_field"} 1.0' in text
    assert "rapport_ingest_request_seconds_count 1.0" in text


# -- analytics.js settings ---------------------------------------------------------


async def test_settings_for_analytics_js(api: ApiHarness) -> None:
    response = await api.client.get(f"/v1/projects/{api.write_key}/settings")
    assert response.status_code == 200, response.text
    settings = response.json()
    segment = settings["integrations"]["Segment.io"]
    assert segment["apiKey"] == api.write_key
    assert segment["apiHost"] == "rapport.test/v1"
    assert segment["protocol"] == "http"
    assert settings["plan"]["track"]["__default"]["enabled"] is True
    assert settings["edgeFunction"] == {}
    assert settings["analyticsNextEnabled"] is True
    assert "max-age" in response.headers["cache-control"]


async def test_settings_follow_the_host_and_scheme(api: ApiHarness) -> None:
    response = await api.client.get(
        f"https://events.shop.example:8443/v1/projects/{api.write_key}/settings"
    )
    segment = response.json()["integrations"]["Segment.io"]
    assert segment["apiHost"] == "events.shop.example:8443/v1"
    assert segment["protocol"] == "https"


@pytest.mark.parametrize("which", ["unknown", "secret"])
async def test_settings_are_404_for_anything_but_a_write_key(api: ApiHarness, which: str) -> None:
    key = "wk_nope" if which == "unknown" else api.secret_key
    response = await api.client.get(f"/v1/projects/{key}/settings")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


# -- rejections listing ------------------------------------------------------------


async def test_rejections_are_paged_newest_first(api: ApiHarness) -> None:
    bad = [{"type": "track", "event": "E", "messageId": f"bad-{i}"} for i in range(5)]
    await post_batch(api, [*bad, track("ok")])
    seen: list[str] = []
    before: int | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if before is not None:
            params["before"] = before
        page = await api.client.get("/api/rejections", headers=api.admin, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [r["message_id"] for r in body["rejections"]]
        pages += 1
        before = body["next_before"]
        if before is None:
            break
    assert seen == [f"bad-{i}" for i in reversed(range(5))]
    assert pages == 3


async def test_rejections_need_a_secret_key(api: ApiHarness) -> None:
    missing = await api.client.get("/api/rejections")
    assert missing.status_code == 401
    with_write_key = await api.client.get(
        "/api/rejections", headers={"Authorization": f"Bearer {api.write_key}"}
    )
    assert with_write_key.status_code == 403


async def test_rejections_limit_is_validated(api: ApiHarness) -> None:
    response = await api.client.get("/api/rejections", headers=api.admin, params={"limit": 0})
    assert response.status_code == 422
    assert response.json()["field"] == "limit"


# -- docs --------------------------------------------------------------------------


async def test_openapi_documents_the_canonical_routes(api: ApiHarness) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    paths = schema["paths"]
    for name in ("batch", "track", "identify", "page", "screen", "group", "alias"):
        operation = paths[f"/v1/{name}"]["post"]
        assert operation["summary"]
        assert operation["description"]
        body = operation["requestBody"]["content"]
        assert set(body) == {"application/json", "text/plain"}
    assert "/v1/b" not in paths and "/v1/t" not in paths
    batch_schema = paths["/v1/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert batch_schema["schema"]["required"] == ["batch"]
    assert "/v1/projects/{write_key}/settings" in paths
    assert "/api/rejections" in paths


# -- the fast path and the key cache -----------------------------------------------


async def test_ingest_posts_skip_the_fastapi_stack_but_answer_the_same(
    api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi import FastAPI

    stack_calls: list[str] = []
    full_stack = FastAPI.__call__

    async def counting(self: FastAPI, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            stack_calls.append(f"{scope['method']} {scope['path']}")
        await full_stack(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", counting)
    ok = await api.client.post(
        "/v1/b",
        json={"batch": [track("m1")]},
        headers={**basic(api.write_key), "Origin": "https://shop.example.org"},
    )
    assert ok.status_code == 200
    assert ok.headers["content-type"] == "application/json"
    assert ok.headers["access-control-allow-origin"] == "https://shop.example.org"
    assert ok.headers["access-control-allow-credentials"] == "true"
    refused = await api.client.post("/v1/track", content=b"{", headers=basic(api.write_key))
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_json"
    unknown = await api.client.post("/v1/t", json=track("m2"), headers=basic("wk_nobody"))
    assert unknown.json() == {
        "code": "invalid_key",
        "message": "Unknown or revoked write key",
        "field": "writeKey",
    }
    assert stack_calls == []
    # Other methods and paths still go through FastAPI: 405 in the error shape.
    wrong_method = await api.client.get("/v1/batch")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "method_not_allowed"
    assert stack_calls == ["GET /v1/batch"]


async def test_a_crash_in_ingest_is_a_plain_500(
    api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(events: Any) -> list[bool]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(api.rapport.event_log, "append", broken)
    from rapport.api.app import create_app

    transport = httpx.ASGITransport(app=create_app(api.rapport), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://rapport.test") as client:
        response = await client.post(
            "/v1/batch", json={"batch": [track("m1")]}, headers=basic(api.write_key)
        )
    assert response.status_code == 500
    assert response.text == "Internal Server Error"


async def test_found_keys_are_cached_briefly_and_unknown_keys_never(
    api: ApiHarness, tmp_path: Path
) -> None:
    import sqlite3

    from rapport.runtime.keys import generate_key, hash_key
    from rapport.runtime.service import KEY_CACHE_SECONDS, KeyCache
    from rapport.storage.base import ApiKey

    now = [100.0]
    api.rapport.key_cache = KeyCache(KEY_CACHE_SECONDS, monotonic=lambda: now[0])
    live = await api.rapport.authenticate(api.write_key)
    assert live is not None

    # Unknown, then created: works at once (a miss is never remembered).
    later = generate_key("write")
    assert await api.rapport.authenticate(later) is None
    await api.rapport.storage.create_api_key(
        ApiKey(
            id="key_later",
            workspace_id=live.workspace_id,
            kind="write",
            key_hash=hash_key(later),
            created_at=datetime.now(UTC),
        )
    )
    response = await api.client.post("/v1/t", json=track("m0"), headers=basic(later))
    assert response.status_code == 200

    # Revoked in storage: still trusted until the cached entry expires.
    with sqlite3.connect(tmp_path / "data" / "rapport.db") as db:
        db.execute("UPDATE api_keys SET revoked_at = 1 WHERE id = 'key_later'")
    now[0] += KEY_CACHE_SECONDS - 0.5
    assert (
        await api.client.post("/v1/t", json=track("m1"), headers=basic(later))
    ).status_code == 200
    now[0] += 0.5
    response = await api.client.post("/v1/t", json=track("m2"), headers=basic(later))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_key"
    assert [e.message_id for e in await logged(api.rapport)] == ["m0", "m1"]
