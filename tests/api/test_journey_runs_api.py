"""Journeys end to end: published through the admin API, run by the processor, read back.

Events go in through ``/v1/batch`` on SQLite and PostgreSQL with a virtual
clock; the outbox (``storage.pending_outbox``) must then hold exactly the
messages the journey sends, under their idempotency keys, and a wait must
fire once when the clock reaches it, also across a restart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from rapport.api.app import create_app
from rapport.core.clock import VirtualClock
from rapport.core.journeys.effects import SendEffect
from rapport.runtime.service import Rapport
from rapport.settings import load_settings
from tests import pg
from tests.api.conftest import ApiHarness

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)

# In-app and transactional: the policy gate (docs/policies.md) lets it through
# without consent or an address, so the outbox shows the journey's own behaviour.
WELCOME: dict[str, Any] = {
    "id": "welcome",
    "name": "Welcome",
    "triggers": [{"event": "Signed Up"}],
    "exit_when": [{"event": "Unsubscribed"}],
    "start": "hello",
    "steps": {
        "hello": {
            "message": {
                "channel": "in_app",
                "template": "welcome-1",
                "topic": "news",
                "category": "transactional",
            },
            "next": "pause",
        },
        "pause": {"wait": {"for": "2d"}, "next": "tips"},
        "tips": {
            "message": {
                "channel": "in_app",
                "template": "welcome-2",
                "topic": "news",
                "category": "transactional",
            }
        },
    },
}

Opener = Callable[[], Awaitable[ApiHarness]]


@pytest.fixture(params=["sqlite", "postgres"])
async def runs(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Opener, VirtualClock]]:
    """``(open, clock)``: ``open()`` closes the running Rapport (if any) and opens it again."""
    overrides: dict[str, object] = {"data_dir": str(tmp_path / "data")}
    cleanup = None
    if request.param == "postgres":
        dsn, schema = pg.postgres_dsn(), pg.unique_schema()
        overrides.update(database_url=dsn, database_schema=schema)
        cleanup = (dsn, schema)
    clock = VirtualClock(T0)
    opened: list[ApiHarness] = []
    keys: dict[str, str] = {}

    async def close() -> None:
        if opened:
            harness = opened.pop()
            await harness.client.aclose()
            await harness.rapport.close()

    async def open_() -> ApiHarness:
        await close()
        # No sender: these tests read the outbox as the processing steps left it.
        settings = load_settings({"sender": "off", **overrides}, environ={})
        runtime = await Rapport.open(settings, clock=clock)
        await runtime.start()
        if not keys:
            keys["write"] = await runtime.create_key("write")
            keys["secret"] = await runtime.create_key("secret")
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://rapport.test"
        )
        harness = ApiHarness(runtime, client, keys["write"], keys["secret"])
        opened.append(harness)
        return harness

    try:
        yield open_, clock
    finally:
        await close()
        if cleanup is not None:
            await pg.drop_schema(*cleanup)


async def publish(api: ApiHarness, document: dict[str, Any]) -> None:
    response = await api.client.post("/api/journeys", json=document, headers=api.admin)
    assert response.status_code == 201, response.text
    response = await api.client.post(f"/api/journeys/{document['id']}/publish", headers=api.admin)
    assert response.status_code == 200, response.text


async def track(api: ApiHarness, message_id: str, user: str, name: str) -> None:
    event = {"type": "track", "event": name, "userId": user, "messageId": message_id}
    response = await api.client.post(
        "/v1/batch", json={"batch": [event]}, headers={"Authorization": f"Bearer {api.write_key}"}
    )
    assert response.status_code == 200, response.text
    await api.settle()


async def outbox(api: ApiHarness) -> list[tuple[str, str, str]]:
    """``(idempotency key, template, profile id)`` of every pending message."""
    found = []
    for message in await api.rapport.storage.pending_outbox(100):
        assert isinstance(message.effect, SendEffect)
        found.append((message.idempotency_key, message.effect.template, message.profile_id))
    return found


async def instances(api: ApiHarness) -> dict[str, dict[str, Any]]:
    """Instance id -> instance as the API answers, by the profile's user id order of entry."""
    response = await api.client.get("/api/journeys/welcome/instances", headers=api.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_after"] is None
    return {i["id"]: i for i in body["instances"]}


async def test_a_published_journey_sends_its_messages_once_each(
    runs: tuple[Opener, VirtualClock],
) -> None:
    open_, clock = runs
    api = await open_()
    await publish(api, WELCOME)
    await track(api, "m1", "ana", "Signed Up")
    await track(api, "m2", "ben", "Signed Up")
    clock.advance(timedelta(days=1))
    await track(api, "m3", "ben", "Unsubscribed")
    await track(api, "m4", "ana", "Signed Up")  # already in: no second entry

    first = await instances(api)
    by_status = {i["status"]: i for i in first.values()}
    assert sorted(by_status) == ["exited", "waiting"]
    ana, ben = by_status["waiting"], by_status["exited"]
    assert await outbox(api) == [
        (f"journey:{ana['id']}:hello:1", "welcome-1", ana["profile_id"]),
        (f"journey:{ben['id']}:hello:1", "welcome-1", ben["profile_id"]),
    ]

    clock.advance(timedelta(days=1) - timedelta(seconds=1))
    await api.settle()
    assert len(await outbox(api)) == 2, "not due yet"
    clock.advance(timedelta(seconds=1))
    await api.settle()
    clock.advance(timedelta(days=7))
    await api.settle()
    assert await outbox(api) == [
        (f"journey:{ana['id']}:hello:1", "welcome-1", ana["profile_id"]),
        (f"journey:{ben['id']}:hello:1", "welcome-1", ben["profile_id"]),
        (f"journey:{ana['id']}:tips:1", "welcome-2", ana["profile_id"]),
    ]
    after = await instances(api)
    assert after[ana["id"]]["status"] == "completed"
    assert any("wait over" in line for line in after[ana["id"]]["trace"])

    response = await api.client.get("/api/journeys/welcome/metrics", headers=api.admin)
    assert response.status_code == 200, response.text
    metrics = response.json()
    assert metrics["instances"] == {"completed": 1, "exited": 1}
    assert metrics["steps"]["hello"]["sent"] == 2
    assert metrics["steps"]["tips"]["sent"] == 1
    assert metrics["steps"]["pause"]["exited"] == 1
    assert metrics["totals"]["sent"] == 3


async def test_waits_fire_once_after_a_restart(runs: tuple[Opener, VirtualClock]) -> None:
    open_, clock = runs
    api = await open_()
    await publish(api, WELCOME)
    await track(api, "m1", "ana", "Signed Up")
    clock.advance(timedelta(hours=1))
    await track(api, "m2", "ben", "Signed Up")
    waiting = await instances(api)
    assert [i["status"] for i in waiting.values()] == ["waiting", "waiting"]

    api = await open_()  # the runtime closed and opened again while both wait
    clock.advance(timedelta(days=3))
    await api.settle()
    api = await open_()
    await api.settle()
    sent = await outbox(api)
    assert sorted(key for key, _, _ in sent) == sorted(
        [f"journey:{i}:hello:1" for i in waiting] + [f"journey:{i}:tips:1" for i in waiting]
    )
    assert {i["status"] for i in (await instances(api)).values()} == {"completed"}


async def test_run_reads_refuse_bad_input(runs: tuple[Opener, VirtualClock]) -> None:
    open_, _ = runs
    api = await open_()
    missing = await api.client.get("/api/journeys/nope/metrics", headers=api.admin)
    assert (missing.status_code, missing.json()["field"]) == (404, "journey_id")
    await publish(api, WELCOME)
    bad = await api.client.get(
        "/api/journeys/welcome/instances", params={"status": "sleeping"}, headers=api.admin
    )
    assert (bad.status_code, bad.json()["field"]) == (422, "status")
    empty = await api.client.get(
        "/api/journeys/welcome/instances", params={"status": "waiting"}, headers=api.admin
    )
    assert empty.json() == {"instances": [], "next_after": None}
