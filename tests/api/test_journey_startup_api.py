"""A journey's start-up work survives crashes and upgrades; missed schedule runs catch up once.

A virtual clock drives real runtimes (SQLite data dir, and PostgreSQL where
marked) that are closed and reopened on the same data:

* a publish whose process stops right after the transition's commit (the
  relay never ran) still gets its schedule and date timers, exactly once,
  when the runtime comes back, and they fire once;
* a database holding journeys published before start-up signals existed
  (simulated: every timer and signal gone, migration 0016 not applied yet)
  gets them once on upgrade, and never again on later restarts;
* a schedule timer lost for any other reason comes back when the runtime
  reads the workspace's first event after a start;
* several runs missed while the runtime was down make one run, the latest,
  unless it is older than the trigger's ``catch_up`` window.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from rapport.api.app import create_app
from rapport.core.clock import VirtualClock
from rapport.core.model import Identifier
from rapport.runtime.journey_admin import apply_action
from rapport.runtime.service import Rapport
from rapport.settings import load_settings
from rapport.storage.sqlite import RAPPORT_DB
from tests import pg
from tests.api.conftest import ApiHarness
from tests.api.test_journey_triggers_api import BIRTHDAY, at, identify, message, publish, sent

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)  # a Monday
NOON = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)
VIP = {"id": "vip", "name": "VIP", "condition": {"trait": "plan", "op": "equals", "value": "vip"}}


def daily(journey_id: str, template: str, **trigger: Any) -> dict[str, Any]:
    return {
        "id": journey_id,
        "name": journey_id,
        "triggers": [
            {
                "schedule": {"every": "day", "at": "12:00", "time_zone": "UTC"},
                "segment": "vip",
                **trigger,
            }
        ],
        "reentry": "always",
        "start": "digest",
        "steps": {"digest": message(template)},
    }


DAILY = daily("daily", "daily-digest")
PATIENT = daily("patient", "patient-digest", catch_up="2d")


class Runtimes:
    """Opens runtimes one at a time on the same data (SQLite, or a PostgreSQL schema)."""

    def __init__(self, overrides: dict[str, object], clock: VirtualClock) -> None:
        self.overrides = overrides
        self.clock = clock
        self.keys: dict[str, str] = {}
        self.current: ApiHarness | None = None

    async def open(self, *, start: bool = True) -> ApiHarness:
        await self.close()
        settings = load_settings({"sender": "off", **self.overrides}, environ={})
        runtime = await Rapport.open(settings, clock=self.clock)
        if start:
            await runtime.start()
        if not self.keys:
            self.keys["write"] = await runtime.create_key("write")
            self.keys["secret"] = await runtime.create_key("secret")
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://rapport.test"
        )
        self.current = ApiHarness(runtime, client, self.keys["write"], self.keys["secret"])
        return self.current

    async def close(self) -> None:
        if self.current is not None:
            await self.current.client.aclose()
            await self.current.rapport.close()
            self.current = None


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture(params=["sqlite", "postgres"])
async def runtimes(
    request: pytest.FixtureRequest, tmp_path: Path, clock: VirtualClock
) -> AsyncIterator[Runtimes]:
    overrides: dict[str, object] = {"data_dir": str(tmp_path / "data")}
    if request.param == "postgres":
        overrides.update(database_url=pg.postgres_dsn(), database_schema=pg.unique_schema())
    opened = Runtimes(overrides, clock)
    try:
        yield opened
    finally:
        await opened.close()
        if request.param == "postgres":
            await pg.drop_schema(pg.postgres_dsn(), str(overrides["database_schema"]))


@pytest.fixture
async def sqlite_runtimes(tmp_path: Path, clock: VirtualClock) -> AsyncIterator[Runtimes]:
    opened = Runtimes({"data_dir": str(tmp_path / "data")}, clock)
    try:
        yield opened
    finally:
        await opened.close()


async def workspace_id(api: ApiHarness) -> str:
    found = await api.rapport.storage.find_workspace("default")
    assert found is not None
    return found.id


async def timers(api: ApiHarness) -> list[str]:
    """Keys of the stored journey timers and signals (schedules, dates), sorted."""
    rows = await api.rapport.storage.due_scheduled(FAR, 10_000)
    prefixes = ("journey-schedule:", "journey-date:", "journey-signal:")
    return sorted(row.key for row in rows if row.key.startswith(prefixes))


async def audience(api: ApiHarness) -> str:
    """The VIP segment with Ana in it (her birthday set too); her profile id."""
    response = await api.client.post("/api/segments", json=VIP, headers=api.admin)
    assert response.status_code == 201, response.text
    await identify(api, "a1", "ana", plan="vip", birthday="1990-05-12", timezone="UTC")
    ws = await workspace_id(api)
    ana = Identifier("user_id", "ana")
    return (await api.rapport.storage.find_profile_ids(ws, [ana]))[ana]


async def draft(api: ApiHarness, document: dict[str, Any]) -> None:
    response = await api.client.post("/api/journeys", json=document, headers=api.admin)
    assert response.status_code == 201, response.text


async def wipe_timers_and_migration_0016(runtimes: Runtimes) -> None:
    """Make the stored data look as it did before 0016: no journey timers, no signals."""
    deletes = [
        "DELETE FROM scheduled_events WHERE schedule_key LIKE 'journey-%'",
        "DELETE FROM schema_migrations WHERE version = 16",
    ]
    url = runtimes.overrides.get("database_url")
    if url is None:
        conn = sqlite3.connect(Path(str(runtimes.overrides["data_dir"])) / RAPPORT_DB)
        try:
            for sql in deletes:
                conn.execute(sql)
            conn.commit()
        finally:
            conn.close()
        return
    pg_conn = await asyncpg.connect(str(url))
    try:
        await pg_conn.execute(f'SET search_path TO "{runtimes.overrides["database_schema"]}"')
        for sql in deletes:
            await pg_conn.execute(sql)
    finally:
        await pg_conn.close()


# -- a crash between the transition and its start-up work -------------------------


async def test_a_publish_cut_short_by_a_crash_gets_its_timers_once(
    runtimes: Runtimes, clock: VirtualClock
) -> None:
    api = await runtimes.open()
    ana = await audience(api)
    await draft(api, DAILY)
    await draft(api, BIRTHDAY)
    # Published by a process that stops at once: no relay, no consumer ran.
    api = await runtimes.open(start=False)
    ws = await workspace_id(api)
    for journey_id in ("daily", "birthday"):
        await apply_action(api.rapport.storage, ws, journey_id, "publish", clock.now())
    assert await timers(api) == [
        "journey-signal:birthday:published:v1",
        "journey-signal:daily:published:v1",
    ], "the signals committed with the transitions"

    wanted = [f"journey-date:birthday:0:{ana}", "journey-schedule:daily:1:0"]
    api = await runtimes.open()
    await api.settle()
    assert await timers(api) == wanted
    api = await runtimes.open()  # a restart sets up nothing twice
    await api.settle()
    assert await timers(api) == wanted

    await at(api, clock, NOON)
    assert await sent(api) == [("daily-digest", "ana")]
    # (The clock jumps a week: the daily runs in between count as missed.)
    await at(api, clock, datetime(2026, 5, 12, 9, 0, tzinfo=UTC))
    both = [("birthday-wishes", "ana"), ("daily-digest", "ana")]
    assert await sent(api) == both
    api = await runtimes.open()
    await at(api, clock, datetime(2026, 5, 12, 9, 30, tzinfo=UTC))
    assert await sent(api) == both


async def test_a_resume_cut_short_by_a_crash_still_resumes(
    sqlite_runtimes: Runtimes, clock: VirtualClock
) -> None:
    runtimes = sqlite_runtimes
    api = await runtimes.open()
    patient = {
        "id": "patient",
        "name": "Patient",
        "triggers": [{"event": "Signed Up"}],
        "start": "later",
        "steps": {"later": {"wait": {"for": "1h"}, "next": "hello"}, "hello": message("hello")},
    }
    await publish(api, patient)
    await send_signed_up(api)
    response = await api.client.post("/api/journeys/patient/pause", headers=api.admin)
    assert response.status_code == 200
    await at(api, clock, T0 + timedelta(hours=2))
    api = await runtimes.open(start=False)
    await apply_action(
        api.rapport.storage, await workspace_id(api), "patient", "resume", clock.now()
    )
    assert await sent(api) == []
    api = await runtimes.open()
    await api.settle()
    assert await sent(api) == [("hello", "ana")]


async def send_signed_up(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/track",
        json={"userId": "ana", "event": "Signed Up", "messageId": "s1"},
        headers={"Authorization": f"Bearer {api.write_key}"},
    )
    assert response.status_code == 200, response.text
    await api.settle()


# -- journeys published before start-up signals existed ---------------------------


async def test_an_upgrade_gives_earlier_journeys_their_timers_once(
    runtimes: Runtimes, clock: VirtualClock
) -> None:
    api = await runtimes.open()
    ana = await audience(api)
    await publish(api, DAILY)
    await publish(api, BIRTHDAY)
    await runtimes.close()
    await wipe_timers_and_migration_0016(runtimes)

    wanted = [f"journey-date:birthday:0:{ana}", "journey-schedule:daily:1:0"]
    api = await runtimes.open()  # applies 0016
    await api.settle()
    assert await timers(api) == wanted
    await at(api, clock, NOON)
    assert await sent(api) == [("daily-digest", "ana")]
    api = await runtimes.open()  # 0016 is not applied again: nothing runs twice
    await api.settle()
    assert await timers(api) == wanted
    assert await sent(api) == [("daily-digest", "ana")]
    await at(api, clock, datetime(2026, 5, 12, 9, 0, tzinfo=UTC))
    assert (await sent(api)).count(("birthday-wishes", "ana")) == 1


async def test_a_lost_schedule_timer_comes_back_after_a_restart(
    sqlite_runtimes: Runtimes, clock: VirtualClock
) -> None:
    runtimes = sqlite_runtimes
    api = await runtimes.open()
    await audience(api)
    await publish(api, DAILY)
    await runtimes.close()
    conn = sqlite3.connect(Path(str(runtimes.overrides["data_dir"])) / RAPPORT_DB)
    with conn:
        conn.execute("DELETE FROM scheduled_events WHERE schedule_key LIKE 'journey-schedule:%'")
    conn.close()

    api = await runtimes.open()
    await identify(api, "b1", "ben", plan="free")  # the workspace's first event since start
    assert await timers(api) == ["journey-schedule:daily:1:0"]
    api = await runtimes.open()
    await identify(api, "b2", "ben", plan="free")
    assert await timers(api) == ["journey-schedule:daily:1:0"]
    await at(api, clock, NOON)
    assert await sent(api) == [("daily-digest", "ana")]


# -- missed runs -------------------------------------------------------------------


async def test_missed_runs_make_one_run_within_the_catch_up_window(
    sqlite_runtimes: Runtimes, clock: VirtualClock
) -> None:
    runtimes = sqlite_runtimes
    api = await runtimes.open()
    await audience(api)
    await publish(api, DAILY)  # catch_up: 1h, the default
    await publish(api, PATIENT)  # catch_up: 2d

    def count(found: list[tuple[str, str]], template: str) -> int:
        return found.count((template, "ana"))

    await at(api, clock, NOON)
    found = await sent(api)
    assert (count(found, "daily-digest"), count(found, "patient-digest")) == (1, 1)

    # Down from Monday afternoon to Thursday 12:30: three runs missed, one made.
    await runtimes.close()
    clock.set(NOON + timedelta(days=3, minutes=30))
    api = await runtimes.open()
    await api.settle()
    found = await sent(api)
    assert (count(found, "daily-digest"), count(found, "patient-digest")) == (2, 2)

    # Down until Saturday 15:00: Saturday's run is three hours old.
    await runtimes.close()
    clock.set(NOON + timedelta(days=5, hours=3))
    api = await runtimes.open()
    await api.settle()
    found = await sent(api)
    assert (count(found, "daily-digest"), count(found, "patient-digest")) == (2, 3)

    # Both go on with Sunday's run, on time.
    await at(api, clock, NOON + timedelta(days=6))
    found = await sent(api)
    assert (count(found, "daily-digest"), count(found, "patient-digest")) == (3, 4)
    assert await timers(api) == ["journey-schedule:daily:1:0", "journey-schedule:patient:1:0"]
