"""Segment size, paged members and a profile's membership history, over HTTP.

On SQLite and PostgreSQL.

Everything goes the real way: events through ``/v1/batch``, the processor
turning trait changes into ``Segment Entered`` / ``Segment Exited`` events,
the membership index following the log.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import ApiHarness
from tests.api.test_segments_api import settle_all

GOLD = {
    "id": "gold",
    "name": "Gold plan",
    "condition": {"trait": "plan", "op": "equals", "value": "gold"},
}


async def settle_index(api: ApiHarness) -> None:
    """Wait until processing and the membership index reach the end of the log."""
    await settle_all(api)
    end = await api.rapport.event_log.end_offset()
    assert await api.rapport.memberships.wait_indexed(end, 5), "the index stalled"


async def send(api: ApiHarness, *events: dict[str, Any]) -> None:
    response = await api.client.post(
        "/v1/batch", json={"batch": list(events)}, auth=(api.write_key, "")
    )
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == []
    await settle_index(api)


def identify(message_id: str, plan: str, *, user_id: str = "dana", **fields: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": user_id,
        "messageId": message_id,
        "traits": {"plan": plan},
        **fields,
    }


async def get(api: ApiHarness, path: str) -> dict[str, Any]:
    response = await api.client.get(path, headers=api.admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def create_gold(api: ApiHarness) -> None:
    created = await api.client.post("/api/segments", json=GOLD, headers=api.admin)
    assert created.status_code == 201, created.text
    assert created.json()["size"] == 0


async def test_entering_and_leaving_shows_in_size_members_and_history(
    api_any: ApiHarness,
) -> None:
    api = api_any
    await create_gold(api)
    await send(api, identify("m1", "gold"))
    dana = await get(api, "/api/profiles/user_id:dana")
    assert list(dana["segments"]) == ["gold"]

    segment = await get(api, "/api/segments/gold")
    assert segment["size"] == 1
    listed = await get(api, "/api/segments")
    assert [(s["id"], s["size"]) for s in listed["segments"]] == [("gold", 1)]
    members = await get(api, "/api/segments/gold/members")
    assert members["size"] == 1 and members["next_after"] is None
    assert members["members"] == [
        {
            "profile_id": dana["id"],
            "entered_at": dana["segments"]["gold"]["entered_at"],
            "version": 1,
        }
    ]

    await send(api, identify("m2", "silver"))
    assert (await get(api, "/api/profiles/user_id:dana"))["segments"] == {}
    assert (await get(api, "/api/segments/gold"))["size"] == 0
    assert (await get(api, "/api/segments/gold/members"))["members"] == []
    history = await get(api, "/api/profiles/user_id:dana/segments/history")
    assert history["profile_id"] == dana["id"] and history["next_before"] is None
    assert [(h["segment_id"], h["change"], h["version"]) for h in history["history"]] == [
        ("gold", "exited", 1),
        ("gold", "entered", 1),
    ]
    assert history["history"][1]["at"] == dana["segments"]["gold"]["entered_at"]
    assert {h["profile_id"] for h in history["history"]} == {dana["id"]}
    assert history["history"][0]["offset"] > history["history"][1]["offset"]


async def test_members_and_history_page_across_several_pages(api_any: ApiHarness) -> None:
    api = api_any
    await create_gold(api)
    await send(api, *(identify(f"u{n}", "gold", user_id=f"user-{n}") for n in range(5)))
    assert (await get(api, "/api/segments/gold"))["size"] == 5

    pages: list[list[str]] = []
    after: str | None = None
    while True:
        query = "?limit=2" + (f"&after={after}" if after else "")
        page = await get(api, f"/api/segments/gold/members{query}")
        assert page["size"] == 5
        pages.append([m["profile_id"] for m in page["members"]])
        after = page["next_after"]
        if after is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    seen = [profile_id for page_ids in pages for profile_id in page_ids]
    assert seen == sorted(seen) and len(set(seen)) == 5

    # One customer flips plans: five changes, newest first over three pages.
    for n, plan in enumerate(["silver", "gold", "silver", "gold"]):
        await send(api, identify(f"flip-{n}", plan, user_id="user-0"))
    changes: list[str] = []
    offsets: list[int] = []
    before: int | None = None
    while True:
        query = "?limit=2" + (f"&before={before}" if before else "")
        page = await get(api, f"/api/profiles/user_id:user-0/segments/history{query}")
        changes.extend(h["change"] for h in page["history"])
        offsets.extend(h["offset"] for h in page["history"])
        before = page["next_before"]
        if before is None:
            break
    assert changes == ["entered", "exited", "entered", "exited", "entered"]
    assert offsets == sorted(offsets, reverse=True)
    assert (await get(api, "/api/segments/gold"))["size"] == 5


async def test_history_follows_merges_and_merged_away_ids_still_resolve(
    api_any: ApiHarness,
) -> None:
    api = api_any
    await create_gold(api)
    await send(
        api,
        {
            "type": "identify",
            "anonymousId": "anon-1",
            "messageId": "a1",
            "traits": {"plan": "gold"},
        },
    )
    anonymous = await get(api, "/api/profiles/anonymous_id:anon-1")
    await send(api, identify("d1", "silver"))
    await send(api, {"type": "alias", "previousId": "anon-1", "userId": "dana", "messageId": "a2"})
    merged = await get(api, "/api/profiles/user_id:dana")
    assert set(merged["merged_from"]) | {merged["id"]} >= {anonymous["id"]}

    for ref in ("anonymous_id:anon-1", f"id:{anonymous['id']}", "user_id:dana"):
        history = await get(api, f"/api/profiles/{ref}/segments/history")
        assert history["profile_id"] == merged["id"]
        entries = [(h["profile_id"], h["change"]) for h in history["history"]]
        assert (anonymous["id"], "entered") in entries, entries
        # The merged-away profile left with a Segment Exited of its own.
        assert (anonymous["id"], "exited") in entries, entries
    members = await get(api, "/api/segments/gold/members")
    assert anonymous["id"] not in [m["profile_id"] for m in members["members"]]
    assert members["size"] == len(members["members"])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=many", "limit"),
        ("after=", "after"),
        ("after=" + "p" * 201, "after"),
    ],
)
async def test_bad_member_paging_is_422_naming_the_field(
    api: ApiHarness, query: str, field: str
) -> None:
    await create_gold(api)
    response = await api.client.get(f"/api/segments/gold/members?{query}", headers=api.admin)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=501", "limit"), ("before=0", "before"), ("before=x", "before")],
)
async def test_bad_history_paging_is_422_naming_the_field(
    api: ApiHarness, query: str, field: str
) -> None:
    await send(api, identify("m1", "gold"))
    response = await api.client.get(
        f"/api/profiles/user_id:dana/segments/history?{query}", headers=api.admin
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


async def test_unknown_segments_and_profiles_are_404(api: ApiHarness) -> None:
    missing = await api.client.get("/api/segments/nope/members", headers=api.admin)
    assert missing.status_code == 404 and missing.json()["code"] == "segment_not_found"
    await create_gold(api)
    await api.client.delete("/api/segments/gold", headers=api.admin)
    deleted = await api.client.get("/api/segments/gold/members", headers=api.admin)
    assert deleted.status_code == 404
    nobody = await api.client.get(
        "/api/profiles/user_id:nobody/segments/history", headers=api.admin
    )
    assert nobody.status_code == 404 and nobody.json()["code"] == "profile_not_found"
    other_key = await api.rapport.create_key("secret", workspace="other")
    other = {"Authorization": f"Bearer {other_key}"}
    await create_gold(api)
    assert (await api.client.get("/api/segments/gold/members", headers=other)).status_code == 404
    write = {"Authorization": f"Bearer {api.write_key}"}
    assert (await api.client.get("/api/segments/gold/members", headers=write)).status_code == 403
