"""The messages API: why a message was sent, a profile's messages, dead letters and replay.

Messages are written the way a processing step writes them (``commit_processing``),
delivered by the running service's sender through a scripted channel, and read
back over HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import msgspec
import pytest

from rapport.api.app import create_app
from rapport.channels.base import OutgoingMessage, PermanentDeliveryError
from rapport.core.model import Profile
from rapport.runtime.sender import Composer
from rapport.runtime.service import Rapport
from rapport.settings import load_settings
from rapport.storage.base import ProcessingBatch
from rapport.storage.journey_runs import OutboxMessage
from tests.api.conftest import ApiHarness
from tests.unit.sender_helpers import (
    T0,
    ScriptedChannel,
    compose,
    send_message,
    webhook_message,
)


@asynccontextmanager
async def service(
    tmp_path: Path, composer: Composer = compose
) -> AsyncIterator[tuple[ApiHarness, ScriptedChannel]]:
    """A started service whose sender delivers email through a scripted channel."""
    settings = load_settings({"data_dir": str(tmp_path / "data")}, environ={})
    runtime = await Rapport.open(settings)
    email = ScriptedChannel("email", "smtp:mail.test:25")
    runtime.channels.register(email)
    runtime.composer = composer
    await runtime.start()
    secret = await runtime.create_key("secret")
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://rapport.test"
    )
    try:
        yield ApiHarness(runtime, client, "", secret), email
    finally:
        await client.aclose()
        await runtime.close()
    assert email.closed


@pytest.fixture
async def sending(tmp_path: Path) -> AsyncIterator[tuple[ApiHarness, ScriptedChannel]]:
    async with service(tmp_path) as started:
        yield started


async def workspace(api: ApiHarness) -> str:
    found = await api.rapport.storage.find_workspace("default")
    assert found is not None
    return found.id


async def commit_messages(api: ApiHarness, ws: str, *messages: object) -> None:
    import msgspec

    rows = [msgspec.structs.replace(m, workspace_id=ws) for m in messages]  # type: ignore[type-var]
    profiles = {
        m.profile_id: Profile(id=m.profile_id, workspace_id=ws, created_at=T0, updated_at=T0)
        for m in rows
    }
    await api.rapport.storage.commit_processing(
        ProcessingBatch(consumer="tests", offset=1, outbox=rows, profiles=list(profiles.values()))
    )
    assert api.rapport.sender is not None
    api.rapport.sender.notify()


async def wait_for(api: ApiHarness, key: str, status: str) -> dict[str, object]:
    """The message once the service settled (what is due is sent, its events processed)."""
    await api.settle()
    answer = await api.client.get(f"/api/messages/{key}", headers=api.admin)
    assert answer.status_code == 200 and answer.json()["status"] == status, answer.text
    body: dict[str, object] = answer.json()
    return body


async def test_why_did_she_get_this(sending: tuple[ApiHarness, ScriptedChannel]) -> None:
    api, email = sending
    ws = await workspace(api)
    await commit_messages(api, ws, send_message("i1"))
    body = await wait_for(api, "journey:i1:hello:1", "sent")
    assert body["kind"] == "send"
    assert body["trigger"] == {"message_id": "msg-i1"}
    assert body["journey"] == {
        "id": "welcome",
        "version": 2,
        "step_id": "hello",
        "instance_id": "i1",
    }
    # The composer did not say which template it rendered: the step's is shown.
    assert body["template"] == {"id": "welcome-1", "version": 3, "step_template": "welcome-1"}
    assert (body["channel"], body["address"], body["topic"]) == (
        "email",
        "dana@example.test",
        "news",
    )
    assert body["gate"] == {
        "outcome": "send",
        "channel": "email",
        "address": "dana@example.test",
        "checks": [{"name": "consent", "passed": True, "detail": "email consent"}],
    }
    delivery = body["delivery"]
    assert isinstance(delivery, dict)
    assert delivery["attempts"] == 1 and delivery["last_error"] is None
    assert delivery["provider_message_id"] == "smtp:mail.test:25-1"
    assert delivery["sent_at"] is not None and delivery["next_attempt_at"] is None
    assert [m.to for m in email.calls] == ["dana@example.test"]
    # The Message Sent event reached the profile's timeline through the log.
    events = await api.client.get("/api/profiles/id:prof_i1/events", headers=api.admin)
    assert events.status_code == 200
    [event] = [e for e in events.json()["events"] if e.get("event") == "Message Sent"]
    assert event["properties"]["provider_message_id"] == "smtp:mail.test:25-1"


async def test_the_template_shown_is_the_channel_variant_that_was_rendered(
    tmp_path: Path,
) -> None:
    async def variant(message: OutboxMessage) -> OutgoingMessage:
        """As the real composer does for a step whose template has a channel variant."""
        outgoing = await compose(message)
        return msgspec.structs.replace(
            outgoing, metadata={"template": "welcome-1-email", "template_version": 7}
        )

    async with service(tmp_path, variant) as (api, _):
        ws = await workspace(api)
        await commit_messages(api, ws, send_message("i1"))
        body = await wait_for(api, "journey:i1:hello:1", "sent")
        expected = {"id": "welcome-1-email", "version": 7, "step_template": "welcome-1"}
        assert body["template"] == expected
        page = await api.client.get("/api/profiles/id:prof_i1/messages", headers=api.admin)
        assert page.status_code == 200
        [listed] = page.json()["messages"]
        assert listed["template"] == expected


async def test_a_profiles_messages_page_newest_first(
    sending: tuple[ApiHarness, ScriptedChannel],
) -> None:
    api, _ = sending
    ws = await workspace(api)
    hook = webhook_message("i1", "http://127.0.0.1:9/hook")
    first = send_message("i1", not_before=T0.replace(year=2100))
    await commit_messages(api, ws, first, hook)
    page = await api.client.get(
        "/api/profiles/id:prof_i1/messages", params={"limit": 1}, headers=api.admin
    )
    assert page.status_code == 200
    body = page.json()
    assert body["profile_id"] == "prof_i1"
    [newest] = body["messages"]
    assert newest["kind"] == "webhook" and newest["webhook"]["url"] == "http://127.0.0.1:9/hook"
    rest = await api.client.get(
        "/api/profiles/id:prof_i1/messages",
        params={"before": body["next_before"]},
        headers=api.admin,
    )
    [older] = rest.json()["messages"]
    assert older["idempotency_key"] == "journey:i1:hello:1"
    assert older["status"] == "pending" and older["gate"]["outcome"] == "defer"
    assert older["delivery"]["next_attempt_at"].startswith("2100-")
    assert rest.json()["next_before"] is None
    missing = await api.client.get("/api/profiles/id:nobody/messages", headers=api.admin)
    assert missing.status_code == 404
    bad = await api.client.get(
        "/api/profiles/id:prof_i1/messages", params={"limit": 0}, headers=api.admin
    )
    assert bad.status_code == 422 and bad.json()["field"] == "limit"


async def test_dead_letters_list_and_replay(sending: tuple[ApiHarness, ScriptedChannel]) -> None:
    api, email = sending
    ws = await workspace(api)
    email.fail = lambda message: PermanentDeliveryError("550 5.1.1 no such mailbox")
    await commit_messages(api, ws, send_message("i1"), send_message("i2"))
    await wait_for(api, "journey:i1:hello:1", "dead")
    await wait_for(api, "journey:i2:hello:1", "dead")
    listed = await api.client.get("/api/dead-letters", params={"limit": 1}, headers=api.admin)
    assert listed.status_code == 200
    [first] = listed.json()["messages"]
    assert first["delivery"]["last_error"] == "550 5.1.1 no such mailbox"
    after = listed.json()["next_after"]
    rest = await api.client.get("/api/dead-letters", params={"after": after}, headers=api.admin)
    assert [m["idempotency_key"] for m in rest.json()["messages"]] == ["journey:i2:hello:1"]
    email.up()
    replay = await api.client.post("/api/dead-letters/journey:i1:hello:1/replay", headers=api.admin)
    assert replay.status_code == 200
    assert replay.json()["status"] == "pending" and replay.json()["delivery"]["attempts"] == 0
    body = await wait_for(api, "journey:i1:hello:1", "sent")
    assert body["delivery"]["last_error"] == "550 5.1.1 no such mailbox"  # kept, for the record
    again = await api.client.post("/api/dead-letters/journey:i1:hello:1/replay", headers=api.admin)
    assert again.status_code == 409 and again.json()["code"] == "not_dead"
    unknown = await api.client.post("/api/dead-letters/nope/replay", headers=api.admin)
    assert unknown.status_code == 404 and unknown.json()["field"] == "idempotency_key"
    assert (await api.client.get("/api/messages/nope", headers=api.admin)).status_code == 404
    assert [m.idempotency_key for m in email.calls].count("journey:i1:hello:1") == 2


async def test_the_messages_api_takes_a_secret_key(api: ApiHarness) -> None:
    for path in ("/api/dead-letters", "/api/messages/x", "/api/profiles/id:p/messages"):
        answer = await api.client.get(path)
        assert answer.status_code == 401 and answer.json()["field"] == "Authorization"
    written = await api.client.get(
        "/api/dead-letters", headers={"Authorization": f"Bearer {api.write_key}"}
    )
    assert written.status_code == 403
