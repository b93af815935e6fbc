"""A profile's messages include those sent to the profiles merged into it, on SQLite
and PostgreSQL: newest first across every id, and paged without a gap or a repeat.

Messages are written as a processing step writes them (``commit_processing``)
before the merges; a message keeps the profile id it was sent to.
"""

from __future__ import annotations

from typing import Any

import msgspec

from rapport.storage.base import ProcessingBatch
from tests.api.conftest import ApiHarness
from tests.unit.sender_helpers import send_message


async def send(api: ApiHarness, *events: dict[str, Any]) -> None:
    answer = await api.client.post(
        "/v1/batch", json={"batch": list(events)}, auth=(api.write_key, "")
    )
    assert answer.status_code == 200 and answer.json()["rejected"] == [], answer.text
    await api.settle()


async def profile(api: ApiHarness, ref: str) -> dict[str, Any]:
    answer = await api.client.get(f"/api/profiles/{ref}", headers=api.admin)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def keys(api: ApiHarness, ref: str, limit: int) -> list[list[str]]:
    """Every page of the profile's messages (their idempotency keys), following the cursor."""
    pages: list[list[str]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        answer = await api.client.get(
            f"/api/profiles/{ref}/messages", params=params, headers=api.admin
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append([m["idempotency_key"] for m in body["messages"]])
        if body["next_before"] is None:
            return pages
        params["before"] = body["next_before"]


async def test_merged_profiles_messages_are_listed_with_the_survivors(
    api_any: ApiHarness,
) -> None:
    api = api_any
    await send(
        api,
        {"type": "track", "anonymousId": "anon-1", "event": "Viewed", "messageId": "t1"},
        {"type": "track", "anonymousId": "anon-2", "event": "Viewed", "messageId": "t2"},
        {"type": "identify", "userId": "dana", "messageId": "i1"},
        {"type": "identify", "userId": "eli", "messageId": "i2"},
    )
    first = await profile(api, "anonymous_id:anon-1")
    second = await profile(api, "anonymous_id:anon-2")
    dana = await profile(api, "user_id:dana")
    eli = await profile(api, "user_id:eli")
    ws = dana["workspace_id"]
    # In outbox order (seq): the ids interleave, so only a merge by seq lists them right.
    to = [
        ("a1", first),
        ("d1", dana),
        ("b1", second),
        ("e1", eli),
        ("a2", first),
        ("d2", dana),
    ]
    outbox = [
        msgspec.structs.replace(send_message(key), workspace_id=ws, profile_id=owner["id"])
        for key, owner in to
    ]
    await api.rapport.storage.commit_processing(
        ProcessingBatch(consumer="tests", offset=1, outbox=outbox)
    )
    newest_first = [
        "journey:d2:hello:1",
        "journey:a2:hello:1",
        "journey:b1:hello:1",
        "journey:d1:hello:1",
        "journey:a1:hello:1",
    ]
    # Before the merges: her own messages only.
    assert await keys(api, "user_id:dana", 10) == [["journey:d2:hello:1", "journey:d1:hello:1"]]

    await send(
        api,
        {"type": "alias", "userId": "dana", "previousId": "anon-1", "messageId": "m1"},
        {"type": "alias", "userId": "dana", "previousId": "anon-2", "messageId": "m2"},
    )
    survivor = await profile(api, "user_id:dana")
    assert survivor["id"] == dana["id"]
    assert sorted(survivor["merged_from"]) == sorted([first["id"], second["id"]])

    assert await keys(api, "user_id:dana", 10) == [newest_first]
    assert await keys(api, "user_id:dana", 2) == [
        newest_first[0:2],
        newest_first[2:4],
        newest_first[4:],
    ]
    assert await keys(api, "user_id:dana", 1) == [[key] for key in newest_first]
    # Exactly a page's worth: no empty page after it.
    assert await keys(api, "user_id:dana", 5) == [newest_first]
    # Each message still names the profile it was sent to; eli's stay his.
    answer = await api.client.get("/api/profiles/user_id:dana/messages", headers=api.admin)
    owners = [m["profile_id"] for m in answer.json()["messages"]]
    assert owners == [dana["id"], first["id"], second["id"], dana["id"], first["id"]]
    assert await keys(api, "user_id:eli", 10) == [["journey:e1:hello:1"]]
