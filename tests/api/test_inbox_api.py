"""The in-app channel and inbox through the API: a composed message lands in her
inbox once, the app reads it with the write key and her user id, marking it
read appends one In-App Message Read event; a secret key reads any inbox."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rapport.channels.base import Channel, OutgoingMessage, PermanentDeliveryError
from rapport.channels.in_app import InAppChannel
from rapport.channels.links import LinkSigner
from rapport.core.journeys.effects import SendEffect
from rapport.core.policy.checks import GateVerdict
from rapport.runtime.compose import Composer
from rapport.storage.journey_runs import OutboxMessage
from tests.api.conftest import ApiHarness

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def _profile_id(api: ApiHarness, user_id: str) -> str:
    await api.client.post(
        "/v1/identify",
        json={"userId": user_id, "traits": {"first_name": user_id.title()}},
        auth=(api.write_key, ""),
    )
    await api.settle()
    found = await api.client.get(f"/api/profiles/user_id:{user_id}", headers=api.admin)
    profile_id: str = found.json()["id"]
    return profile_id


async def _deliver(api: ApiHarness, profile_id: str, key: str) -> str:
    """Compose and send one in-app message as the sender would; its inbox id."""
    secret = await api.rapport.authenticate(api.secret_key)
    assert secret is not None
    effect = SendEffect(
        idempotency_key=key,
        instance_id="i",
        journey_id="welcome",
        version=1,
        step_id="hello",
        profile_id=profile_id,
        channels=("in_app",),
        template="hello",
        category="promotional",
        topic="news",
    )
    message = OutboxMessage(
        workspace_id=secret.workspace_id,
        idempotency_key=key,
        profile_id=profile_id,
        effect=effect,
        created_at=T0,
        verdict=GateVerdict(outcome="send", channel="in_app", address=profile_id),
    )
    composer = Composer(
        api.rapport.storage, LinkSigner(b"s" * 32), "https://r.test", api.rapport.clock
    )
    channel = InAppChannel(api.rapport.storage.inbox, api.rapport.clock)
    result = await channel.send(await composer(message))
    assert result.provider_message_id is not None
    return result.provider_message_id


async def test_the_app_reads_her_inbox_and_reports_reads(api: ApiHarness) -> None:
    client = api.client
    await client.put(
        "/api/templates/hello",
        json={
            "name": "Hello",
            "channel": "in_app",
            "title": "Hi {{ profile.traits.first_name }}",
            "body": "Welcome to the club",
        },
        headers=api.admin,
    )
    dana = await _profile_id(api, "dana")
    mia = await _profile_id(api, "mia")
    first = await _deliver(api, dana, "journey:a:hello:1")
    assert await _deliver(api, dana, "journey:a:hello:1") == first  # a retry stores it once
    second = await _deliver(api, dana, "journey:b:hello:1")
    mias = await _deliver(api, mia, "journey:c:hello:1")

    inbox = await client.get("/v1/inbox", params={"userId": "dana"}, auth=(api.write_key, ""))
    assert inbox.status_code == 200, inbox.text
    body = inbox.json()
    assert [m["id"] for m in body["messages"]] == [second, first]
    assert body["unread"] == 2 and body["next_before"] is None
    assert body["messages"][0]["title"] == "Hi Dana"
    assert body["messages"][0]["body"] == "Welcome to the club"
    assert body["messages"][0]["read_at"] is None and "metadata" not in body["messages"][0]
    page = await client.get(
        "/v1/inbox", params={"userId": "dana", "limit": 1}, headers={"X-Write-Key": api.write_key}
    )
    assert [m["id"] for m in page.json()["messages"]] == [second]
    assert page.json()["next_before"] is not None

    read = await client.post(
        f"/v1/inbox/{first}/read", params={"userId": "dana"}, auth=(api.write_key, "")
    )
    assert read.status_code == 200, read.text
    assert read.json()["read_at"] is not None
    again = await client.post(
        f"/v1/inbox/{first}/read", params={"userId": "dana"}, auth=(api.write_key, "")
    )
    assert again.json()["read_at"] == read.json()["read_at"]
    await api.settle()
    events = await client.get("/api/profiles/user_id:dana/events", headers=api.admin)
    reads = [e for e in events.json()["events"] if e.get("event") == "In-App Message Read"]
    assert len(reads) == 1
    assert reads[0]["properties"] == {
        "message": "journey:a:hello:1",
        "inbox_message_id": first,
        "channel": "in_app",
        "topic": "news",
        "journey_id": "welcome",
        "step_id": "hello",
        "template": "hello",
    }
    unread = await client.get(
        "/v1/inbox", params={"userId": "dana", "unread": "true"}, auth=(api.write_key, "")
    )
    assert [m["id"] for m in unread.json()["messages"]] == [second]
    assert unread.json()["unread"] == 1

    # Mia's message is not Dana's to read; the secret-key view shows any inbox.
    stolen = await client.post(
        f"/v1/inbox/{mias}/read", params={"userId": "dana"}, auth=(api.write_key, "")
    )
    assert (stolen.status_code, stolen.json()["code"]) == (404, "message_not_found")
    admin_view = await client.get("/api/profiles/user_id:mia/inbox", headers=api.admin)
    assert admin_view.status_code == 200, admin_view.text
    assert admin_view.json()["profile_id"] == mia
    [only] = admin_view.json()["messages"]
    assert only["id"] == mias and only["metadata"]["template_version"] == 1
    nobody = await client.get("/v1/inbox", params={"userId": "zoe"}, auth=(api.write_key, ""))
    assert nobody.json() == {"messages": [], "unread": 0, "next_before": None}


async def test_inbox_requests_without_a_key_or_a_user_are_refused(api: ApiHarness) -> None:
    client = api.client
    no_key = await client.get("/v1/inbox", params={"userId": "dana"})
    assert (no_key.status_code, no_key.json()["field"]) == (401, "writeKey")
    bad_key = await client.get("/v1/inbox", params={"userId": "dana"}, auth=("nope", ""))
    assert bad_key.status_code == 401
    no_user = await client.get("/v1/inbox", auth=(api.write_key, ""))
    assert (no_user.status_code, no_user.json()["field"]) == (422, "userId")
    blank = await client.get("/v1/inbox", params={"anonymousId": " "}, auth=(api.write_key, ""))
    assert (blank.status_code, blank.json()["field"]) == (422, "anonymousId")
    unknown = await client.post(
        "/v1/inbox/inapp_x/read", params={"userId": "dana"}, auth=(api.write_key, "")
    )
    assert unknown.status_code == 404
    write_key_on_admin = await client.get(
        "/api/profiles/user_id:dana/inbox", headers={"Authorization": f"Bearer {api.write_key}"}
    )
    assert write_key_on_admin.status_code == 403


async def test_the_channel_refuses_a_message_without_title_or_body(api: ApiHarness) -> None:
    channel: Channel = InAppChannel(api.rapport.storage.inbox, api.rapport.clock)
    assert channel.name == "in_app"
    message = OutgoingMessage(
        idempotency_key="k",
        workspace_id="ws",
        profile_id="p",
        channel="in_app",
        to="p",
        content={"title": "Only a title"},
    )
    with pytest.raises(PermanentDeliveryError, match="an in-app message needs body"):
        await channel.send(message)
