"""S2 end to end with a virtual clock: enter on the third view, leave when time says so.

Events go in through ``/v1/batch`` and everything is read back through the
admin API, on SQLite and on PostgreSQL. The exit needs no customer event:
moving the clock to the instant the first of the three views is one hour
old makes the relay deliver the profile's segment timer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from rapport.api.app import create_app
from rapport.core.clock import VirtualClock
from rapport.runtime.service import Rapport
from rapport.settings import load_settings
from tests import pg
from tests.api.conftest import ApiHarness
from tests.api.test_segments_api import S2_ID, definition

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


@pytest.fixture(params=["sqlite", "postgres"])
async def timed_api(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[ApiHarness, VirtualClock]]:
    overrides: dict[str, object] = {"data_dir": str(tmp_path / "data")}
    cleanup = None
    if request.param == "postgres":
        dsn, schema = pg.postgres_dsn(), pg.unique_schema()
        overrides.update(database_url=dsn, database_schema=schema)
        cleanup = (dsn, schema)
    clock = VirtualClock(T0)
    runtime = await Rapport.open(load_settings(overrides, environ={}), clock=clock)
    await runtime.start()
    write_key = await runtime.create_key("write")
    secret_key = await runtime.create_key("secret")
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://rapport.test"
    )
    try:
        yield ApiHarness(runtime, client, write_key, secret_key), clock
    finally:
        await client.aclose()
        await runtime.close()
        if cleanup is not None:
            await pg.drop_schema(*cleanup)


async def view(api: ApiHarness, n: int, at: datetime, product: str = "jacket") -> None:
    event = {
        "type": "track",
        "event": "Product Viewed",
        "userId": "dana",
        "messageId": f"view-{n}",
        "properties": {"product_id": product},
        "timestamp": at.isoformat(),
    }
    response = await api.client.post(
        "/v1/batch",
        json={"batch": [event]},
        headers={"Authorization": f"Bearer {api.write_key}"},
    )
    assert response.status_code == 200, response.text
    await api.settle()


async def profile(api: ApiHarness) -> dict[str, Any]:
    response = await api.client.get("/api/profiles/user_id:dana", headers=api.admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def timeline(api: ApiHarness) -> list[dict[str, Any]]:
    response = await api.client.get("/api/profiles/user_id:dana/events", headers=api.admin)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def test_s2_enters_on_the_third_view_and_exits_when_the_first_is_an_hour_old(
    timed_api: tuple[ApiHarness, VirtualClock],
) -> None:
    api, clock = timed_api
    created = await api.client.post("/api/segments", json=definition(), headers=api.admin)
    assert created.status_code == 201, created.text

    first = clock.now()
    await view(api, 1, first)
    clock.set(first + timedelta(minutes=10))
    await view(api, 2, clock.now(), "shoes")
    clock.set(first + timedelta(minutes=20))
    await view(api, 3, clock.now())
    assert (await profile(api))["segments"] == {}, "the second view is not enough"
    third = first + timedelta(minutes=40)
    clock.set(third)
    await view(api, 4, third)
    body = await profile(api)
    assert body["segments"] == {S2_ID: {"version": 1, "entered_at": third.isoformat()}}
    assert (await timeline(api))[0]["event"] == "Segment Entered"

    # One microsecond before the hour: still a member, whatever the relay does.
    clock.set(first + timedelta(hours=1) - US)
    assert await api.rapport.relay.run_due() == 0
    await api.settle()
    assert list((await profile(api))["segments"]) == [S2_ID]

    # At the hour, with no event from the customer: the timer fires and she leaves.
    exit_at = first + timedelta(hours=1)
    clock.set(exit_at)
    api.rapport.relay.notify()
    await api.settle()
    after = await profile(api)
    assert after["segments"] == {}
    events = await timeline(api)
    exited = events[0]
    assert exited["event"] == "Segment Exited"
    assert exited["properties"] == {"segment_id": S2_ID, "version": 1}
    assert exited["source"] == "rapport:segments"
    assert datetime.fromisoformat(exited["timestamp"]) == exit_at
    # The timer itself is no activity of hers: not in the timeline, not counted.
    assert [e["event"] for e in events].count("Segment Timer Due") == 0
    assert (after["event_count"], after["last_seen"]) == (body["event_count"], body["last_seen"])
    assert [e["event"] for e in events].count("Segment Exited") == 1
    assert await api.rapport.storage.next_scheduled_at() is None
