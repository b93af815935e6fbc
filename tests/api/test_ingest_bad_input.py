"""Bad input at ingest: always a clear 4xx naming what is wrong, never a 500."""

from __future__ import annotations

import base64
import gzip
import json
import random
import tracemalloc
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from rapport.runtime.keys import generate_key, hash_key
from rapport.storage.base import ApiKey
from tests.api.conftest import ApiHarness, open_harness


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(message_id: str = "m1", **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "E", "userId": "u", "messageId": message_id, **extra}


def assert_error(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["message"]
    assert body.get("field") == field, body
    return body


async def log_size(api: ApiHarness) -> int:
    return await api.rapport.event_log.end_offset()


async def rejections(api: ApiHarness) -> list[dict[str, Any]]:
    response = await api.client.get("/api/rejections", headers=api.admin)
    assert response.status_code == 200
    rows: list[dict[str, Any]] = response.json()["rejections"]
    return rows


# -- the body ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b'{"batch": [}', b"{'batch': []}", b"\xff\xfe\x00garbage", b'{"batch": [] } x'],
)
async def test_malformed_json_is_a_400(api: ApiHarness, content: bytes) -> None:
    response = await api.client.post("/v1/batch", content=content, headers=basic(api.write_key))
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize("content", [b"[]", b"[{}]", b'"batch"', b"42", b"null", b"true"])
@pytest.mark.parametrize("path", ["/v1/batch", "/v1/track"])
async def test_a_body_that_is_not_an_object_is_a_400(
    api: ApiHarness, content: bytes, path: str
) -> None:
    response = await api.client.post(path, content=content, headers=basic(api.write_key))
    assert_error(response, 400, "invalid_json")


async def test_refused_requests_are_recorded_when_the_key_is_known(api: ApiHarness) -> None:
    await api.client.post("/v1/batch", content=b'{"batch": [', headers=basic(api.write_key))
    [row] = await rejections(api)
    assert row["code"] == "invalid_json"
    assert row["payload"] == '{"batch": ['
    assert row["source"].startswith("write_key:")


async def test_refused_requests_with_an_unknown_sender_are_not_recorded(api: ApiHarness) -> None:
    response = await api.client.post("/v1/batch", content=b'{"batch": [')
    assert_error(response, 400, "invalid_json")
    assert await rejections(api) == []
    metrics = (await api.client.get("/metrics")).text
    assert 'rapport_events_rejected_total{code="invalid_json"} 1.0' in metrics


@pytest.mark.parametrize(
    ("envelope", "field"),
    [
        ({}, "batch"),
        ({"batch": {"0": {}}}, "batch"),
        ({"batch": "events"}, "batch"),
        ({"batch": [], "context": []}, "context"),
        ({"batch": [], "integrations": 1}, "integrations"),
        ({"batch": [], "sentAt": {}}, "sentAt"),
    ],
)
async def test_wrong_batch_fields_are_named(
    api: ApiHarness, envelope: dict[str, Any], field: str
) -> None:
    response = await api.client.post("/v1/batch", json=envelope, headers=basic(api.write_key))
    body = assert_error(
        response, 400, "missing_field" if envelope == {} else "invalid_field", field
    )
    assert field in body["message"]


async def test_bad_batch_sent_at_is_a_400(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/batch",
        json={"batch": [track()], "sentAt": "soon"},
        headers=basic(api.write_key),
    )
    assert_error(response, 400, "invalid_timestamp", "sentAt")


# -- limits ------------------------------------------------------------------------


async def test_a_body_over_500kb_is_refused_whole(api: ApiHarness) -> None:
    events = [track(f"m{i}", properties={"pad": "x" * 20_000}) for i in range(30)]
    content = json.dumps({"batch": events}).encode()
    assert len(content) > 500 * 1024
    response = await api.client.post("/v1/batch", content=content, headers=basic(api.write_key))
    assert_error(response, 400, "batch_too_large")
    assert await log_size(api) == 0


async def test_a_streamed_body_over_the_limit_is_refused_without_content_length(
    api: ApiHarness,
) -> None:
    async def chunks() -> Any:
        for _ in range(100):
            yield b" " * 10_000

    response = await api.client.post("/v1/batch", content=chunks(), headers=basic(api.write_key))
    assert_error(response, 400, "batch_too_large")


async def test_more_than_2500_events_is_refused_whole(api: ApiHarness) -> None:
    events = [{"type": "track", "event": "E", "userId": "u"} for _ in range(2501)]
    response = await api.client.post(
        "/v1/batch", json={"batch": events}, headers=basic(api.write_key)
    )
    assert_error(response, 400, "too_many_events", "batch")
    assert await log_size(api) == 0


async def test_exactly_2500_events_are_accepted(api: ApiHarness) -> None:
    events = [{"type": "track", "event": "E", "userId": "u"} for _ in range(2500)]
    response = await api.client.post(
        "/v1/batch", json={"batch": events}, headers=basic(api.write_key)
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2500


async def test_an_event_over_32kb_is_refused_alone(api: ApiHarness) -> None:
    big = track("big", properties={"pad": "x" * 33 * 1024})
    response = await api.client.post(
        "/v1/batch",
        json={"batch": [track("a"), big, track("b")]},
        headers=basic(api.write_key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2
    [rejected] = body["rejected"]
    assert rejected["code"] == "event_too_large"
    assert rejected["index"] == 1
    assert rejected["field"] == "batch.1"


async def test_a_single_call_over_32kb_is_a_400(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/track",
        json=track("big", properties={"pad": "x" * 33 * 1024}),
        headers=basic(api.write_key),
    )
    assert_error(response, 400, "event_too_large")


# -- identity and fields -----------------------------------------------------------


async def test_an_event_without_ids_is_a_400_naming_user_id(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/batch",
        json={"batch": [{"type": "track", "event": "E"}]},
        headers=basic(api.write_key),
    )
    body = assert_error(response, 400, "missing_identity", "batch.0.userId")
    assert body["accepted"] == 0
    assert body["rejected"][0]["index"] == 0
    [row] = await rejections(api)
    assert row["code"] == "missing_identity"


async def test_the_first_reason_is_given_when_no_event_is_valid(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/batch",
        json={"batch": [{"type": "nope", "userId": "u"}, {"type": "track", "userId": "u"}]},
        headers=basic(api.write_key),
    )
    body = assert_error(response, 400, "invalid_type", "batch.0.type")
    assert [r["code"] for r in body["rejected"]] == ["invalid_type", "missing_field"]
    assert len(await rejections(api)) == 2


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"properties": [1, 2]}, "properties"),
        ({"properties": "x"}, "properties"),
        ({"context": ["ip"]}, "context"),
        ({"integrations": True}, "integrations"),
        ({"userId": {"id": 1}}, "userId"),
        ({"userId": False}, "userId"),
        ({"anonymousId": [1]}, "anonymousId"),
        ({"event": ["E"]}, "event"),
        ({"messageId": 5}, "messageId"),
        ({"timestamp": 1700000000}, "timestamp"),
    ],
)
async def test_wrong_field_types_are_named(
    api: ApiHarness, patch: dict[str, Any], field: str
) -> None:
    response = await api.client.post(
        "/v1/track", json={**track(), **patch}, headers=basic(api.write_key)
    )
    body = assert_error(response, 400, "invalid_field", field)
    assert body["message"].startswith(field)
    batch = await api.client.post(
        "/v1/batch", json={"batch": [{**track(), **patch}]}, headers=basic(api.write_key)
    )
    assert_error(batch, 400, "invalid_field", f"batch.0.{field}")


async def test_bad_timestamp_is_a_400(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/track", json=track(timestamp="31/12/2025"), headers=basic(api.write_key)
    )
    assert_error(response, 400, "invalid_timestamp", "timestamp")


async def test_too_long_message_id_is_a_400(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/track", json=track("m" * 100), headers=basic(api.write_key)
    )
    assert_error(response, 400, "invalid_message_id", "messageId")


# -- keys --------------------------------------------------------------------------


async def test_no_key_is_a_401(api: ApiHarness) -> None:
    response = await api.client.post("/v1/batch", json={"batch": [track()]})
    assert_error(response, 401, "missing_write_key", "writeKey")


@pytest.mark.parametrize(
    "headers",
    [
        basic("wk_unknown"),
        {"X-Write-Key": "wk_unknown"},
        {"Authorization": "Bearer wk_unknown"},
    ],
)
async def test_an_unknown_key_is_a_401(api: ApiHarness, headers: dict[str, str]) -> None:
    response = await api.client.post("/v1/batch", json={"batch": [track()]}, headers=headers)
    assert_error(response, 401, "invalid_key", "writeKey")
    assert await log_size(api) == 0


async def test_an_unknown_key_in_the_body_is_a_401(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/batch", json={"batch": [track()], "writeKey": "wk_unknown"}
    )
    assert_error(response, 401, "invalid_key", "writeKey")


async def test_a_revoked_key_is_a_401(api: ApiHarness) -> None:
    live = await api.rapport.authenticate(api.write_key)
    assert live is not None
    revoked = generate_key("write")
    now = datetime.now(UTC)
    await api.rapport.storage.create_api_key(
        ApiKey(
            id="key_revoked",
            workspace_id=live.workspace_id,
            kind="write",
            key_hash=hash_key(revoked),
            created_at=now,
            revoked_at=now,
        )
    )
    response = await api.client.post("/v1/batch", json={"batch": [track()]}, headers=basic(revoked))
    assert_error(response, 401, "invalid_key", "writeKey")


async def test_broken_basic_auth_is_a_401(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/batch", json={"batch": [track()]}, headers={"Authorization": "Basic %%%"}
    )
    assert_error(response, 401, "invalid_auth", "Authorization")


async def test_an_unknown_header_key_is_refused_before_the_body_is_read(
    api: ApiHarness,
) -> None:
    # Malformed JSON would be a 400; the key is checked first.
    response = await api.client.post("/v1/batch", content=b"{", headers=basic("wk_unknown"))
    assert_error(response, 401, "invalid_key", "writeKey")


# -- gzip --------------------------------------------------------------------------


def gzip_headers(api: ApiHarness) -> dict[str, str]:
    return {**basic(api.write_key), "Content-Encoding": "gzip"}


@pytest.mark.parametrize(
    "content",
    [
        b"definitely not gzip",
        b"",
        gzip.compress(b'{"batch": []}')[:-12],  # truncated
        b"\x1f\x8b\x08\x00" + b"\x00" * 40,  # a gzip header and nonsense
        gzip.compress(b'{"batch": []}') + b"trailing junk",
    ],
)
async def test_garbage_gzip_is_a_400(api: ApiHarness, content: bytes) -> None:
    response = await api.client.post("/v1/batch", content=content, headers=gzip_headers(api))
    assert_error(response, 400, "invalid_gzip", "Content-Encoding")


def gzip_bomb(inflated_bytes: int) -> bytes:
    """A small gzip stream that inflates to ``inflated_bytes`` of spaces."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = b" " * (1 << 20)
    parts = [compressor.compress(b'{"batch": [')]
    parts += [compressor.compress(block) for _ in range(inflated_bytes // len(block))]
    parts.append(compressor.flush())
    return b"".join(parts)


async def test_a_gzip_bomb_is_refused_without_inflating_it(api: ApiHarness) -> None:
    bomb = gzip_bomb(200 * 1024 * 1024)
    assert len(bomb) < 500 * 1024
    tracemalloc.start()
    try:
        response = await api.client.post("/v1/batch", content=bomb, headers=gzip_headers(api))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_error(response, 400, "batch_too_large")
    assert peak < 20 * 1024 * 1024, f"inflating used {peak} bytes"


async def test_an_unsupported_encoding_is_a_415(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/batch",
        content=zlib.compress(b'{"batch": []}'),
        headers={**basic(api.write_key), "Content-Encoding": "br"},
    )
    assert_error(response, 415, "unsupported_encoding", "Content-Encoding")


# -- whatever comes in: never a 500 ------------------------------------------------


async def test_mangled_bodies_never_cause_a_500(api: ApiHarness) -> None:
    valid = json.dumps(
        {
            "batch": [
                track("m1", properties={"a": [1, {"b": None}]}, timestamp="2026-01-01T00:00:00Z"),
                {"type": "alias", "userId": 1, "previousId": "p"},
            ],
            "context": {"ip": "1.2.3.4"},
            "sentAt": "2026-01-01T00:00:01Z",
        }
    ).encode()
    rng = random.Random(7)
    alphabet = b'{}[]",:0123456789.e-tnfalsrue \\x\x00\xff'
    statuses: set[int] = set()
    for _ in range(300):
        mangled = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(mangled))
            if rng.random() < 0.5:
                mangled[position] = rng.choice(alphabet)
            else:
                del mangled[position]
        response = await api.client.post(
            "/v1/batch", content=bytes(mangled), headers=basic(api.write_key)
        )
        assert response.status_code in (200, 400), (response.status_code, response.text)
        body = response.json()
        assert body.get("success") is True or (body["code"] and body["message"])
        statuses.add(response.status_code)
    assert statuses == {200, 400}


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/track"])
async def test_absurd_nesting_is_a_400(api: ApiHarness, path: str) -> None:
    deep = b"[" * 50_000 + b"]" * 50_000
    content = (
        b'{"batch": [' + deep + b"]}"
        if path == "/v1/batch"
        else b'{"userId": "u", "event": "E", "properties": {"x": ' + deep + b"}}"
    )
    response = await api.client.post(path, content=content, headers=basic(api.write_key))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_json"


async def test_an_event_nested_too_deep_is_refused_alone(api: ApiHarness) -> None:
    deep: Any = 1
    for _ in range(100):
        deep = {"k": deep}
    response = await api.client.post(
        "/v1/batch",
        json={"batch": [track("ok"), track("deep", properties=deep)]},
        headers=basic(api.write_key),
    )
    assert response.status_code == 200, response.text
    assert [(r["code"], r["field"]) for r in response.json()["rejected"]] == [
        ("too_deep", "batch.1")
    ]


async def test_limits_follow_the_settings(tmp_path: Path) -> None:
    runtime, api = await open_harness(
        tmp_path, max_batch_events=2, max_event_bytes=200, max_batch_bytes=1000
    )
    try:
        too_many = await api.client.post(
            "/v1/batch",
            json={"batch": [track("1"), track("2"), track("3")]},
            headers=basic(api.write_key),
        )
        assert_error(too_many, 400, "too_many_events", "batch")
        too_big = await api.client.post(
            "/v1/batch",
            json={"batch": [track("1"), track("2", properties={"p": "x" * 300})]},
            headers=basic(api.write_key),
        )
        assert too_big.status_code == 200
        assert too_big.json()["rejected"][0]["code"] == "event_too_large"
        body_too_big = await api.client.post(
            "/v1/batch",
            json={"batch": [track("1", properties={"p": "x" * 1000})]},
            headers=basic(api.write_key),
        )
        assert_error(body_too_big, 400, "batch_too_large")
    finally:
        await api.client.aclose()
        await runtime.close()
