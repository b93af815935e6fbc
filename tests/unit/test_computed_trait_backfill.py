"""Backfill of computed traits: definitions written after the events see the customers' past.

The processor and relay on SQLite, PostgreSQL (``tests.pg``) and memory,
with a virtual clock. The same history is played into two stores: in one
the definitions exist from the start (streaming), in the other they are
written once the history is in and the backfill walks it. Every trait of
every customer, and the segment reading one, must end up the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rapport.core.backfill import COMPUTED_TRAIT, DONE, RUNNING, advance_backfill
from rapport.core.clock import VirtualClock
from rapport.core.computed_traits import ComputedTraitDraft
from rapport.core.identity import IdentityRules
from rapport.core.ids import SequentialIds
from rapport.core.model import Event, Identifier, Profile
from rapport.core.segments import SegmentDraft
from rapport.runtime.processor import Processor
from rapport.runtime.relay import Relay
from rapport.storage import memory, postgres, sqlite
from rapport.storage.base import EventLog, Storage
from tests import pg

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
WS = "ws"
DEFINITIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "orders_90d": ("aggregate", {"event": "Order Completed", "window": "90d"}),
    "lifetime_revenue": (
        "aggregate",
        {"event": "Order Completed", "aggregate": "sum", "of": "properties.revenue"},
    ),
    "favourite_category": (
        "aggregate",
        {"event": "Product Viewed", "window": "30d", "key": "properties.category"},
    ),
    "last_category": (
        "aggregate",
        {"event": "Product Viewed", "aggregate": "last", "of": "properties.category"},
    ),
    "engagement": ("engagement_score", {"core_actions": {"events": ["Order Completed"]}}),
    "usual_visit": ("usual_time", {"window": "30d"}),
    "reminder_lead": (
        "typical_lead",
        {"event": "Email Opened", "reference": "properties.appointment_at", "window": "60d"},
    ),
}
RECENT_BUYERS = {"trait": "orders_90d", "op": "gte", "value": 1}

Opener = Callable[[], Awaitable[tuple[Storage, EventLog]]]


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens fresh, independent stores of one backend (each test wants two)."""
    opened: list[tuple[Storage, EventLog]] = []
    schemas: list[str] = []
    dsn = pg.postgres_dsn() if request.param == "postgres" else ""

    async def open_store() -> tuple[Storage, EventLog]:
        store: tuple[Storage, EventLog]
        if request.param == "sqlite":
            store = await sqlite.open_sqlite(tmp_path / f"data{len(opened)}")
        elif request.param == "postgres":
            schemas.append(pg.unique_schema())
            store = await postgres.open_postgres(dsn, schema=schemas[-1])
        else:
            store = memory.open_memory()
            await store[0].open()
            await store[1].open()
        opened.append(store)
        return store

    try:
        yield open_store
    finally:
        for storage, event_log in opened:
            await event_log.close()
            await storage.close()
        for schema in schemas:
            await pg.drop_schema(dsn, schema)


class Harness:
    def __init__(self, storage: Storage, event_log: EventLog) -> None:
        self.storage = storage
        self.log = event_log
        self.clock = VirtualClock(T0)
        self.relay = Relay(storage, event_log, self.clock)
        self.processor = Processor(
            storage,
            event_log,
            self.clock,
            SequentialIds(),
            IdentityRules(),
            on_scheduled=self.relay.notify,
        )

    async def drain(self) -> None:
        """Process everything, membership events and due timers included."""
        while True:
            processed = await self.processor.run_once()
            delivered = await self.relay.run_due()
            if not processed and not delivered:
                return

    async def send(self, *events: Event) -> None:
        await self.log.append(list(events))
        await self.drain()

    async def walk(self) -> int:
        pages = 0
        while await self.processor.run_backfill_page():
            pages += 1
            await self.drain()
        await self.drain()
        return pages

    async def define(self, trait_id: str, kind: str, compute: Any) -> int:
        draft = ComputedTraitDraft(workspace_id=WS, id=trait_id, kind=kind, compute=compute)
        return (await self.storage.put_computed_trait(draft, self.clock.now())).version

    async def segment(self, segment_id: str, condition: Any) -> None:
        draft = SegmentDraft(
            workspace_id=WS, id=segment_id, name=segment_id, kind="dynamic", condition=condition
        )
        await self.storage.put_segment(draft, self.clock.now())

    async def profile(self, user: str) -> Profile:
        ident = Identifier("user_id", user)
        owner = (await self.storage.find_profile_ids(WS, [ident]))[ident]
        return (await self.storage.load_profiles(WS, [owner]))[owner]

    async def traits(self, users: list[str]) -> dict[str, dict[str, Any]]:
        found = {}
        for user in users:
            profile = await self.profile(user)
            found[user] = {
                name: profile.traits[name].value for name in DEFINITIONS if name in profile.traits
            }
        return found


def history() -> list[tuple[timedelta, Event]]:
    """(clock advance before it arrives, event): five customers over 200 days."""
    played: list[tuple[timedelta, Event]] = []
    now = T0
    seq = 0

    def add(advance: timedelta, user: str, kind: str, ago: timedelta, **fields: Any) -> None:
        nonlocal now, seq
        now += advance
        seq += 1
        at = now - ago
        common: dict[str, Any] = {
            "workspace_id": WS,
            "message_id": f"m{seq}",
            "user_id": user,
            "timestamp": at,
            "received_at": now,
            "source": fields.pop("source", "write_key:k"),
        }
        if kind == "page":
            event = Event(type="page", name="Home", **common, **fields)
        else:
            event = Event(type="track", event=kind, **common, **fields)
        played.append((advance, event))

    day, hour = timedelta(days=1), timedelta(hours=1)
    for week in range(28):
        add(7 * day, "ann", "page", 2 * hour, context={"timezone": "Europe/Paris"})
        if week % 4 == 0:
            add(hour, "ann", "Order Completed", hour, properties={"revenue": 20 + week})
        add(
            hour,
            "bob",
            "Product Viewed",
            0 * day,
            properties={"category": ["shoes", "hats"][week % 2]},
        )
    add(day, "bob", "Order Completed", 3 * day, properties={"revenue": 99.5})
    add(hour, "cy", "Order Completed", 150 * day, properties={"revenue": 10})
    for n in range(4):
        appointment = T0 + 200 * day + n * day
        add(
            hour,
            "dee",
            "Email Opened",
            0 * day,
            source="rapport:channels",
            properties={"appointment_at": (appointment).isoformat()},
        )
    # Internal events are not the customer's: they count for nothing.
    add(hour, "eve", "Order Completed", 0 * day, source="rapport:journeys")
    add(hour, "eve", "Product Viewed", 0 * day, properties={"category": "socks"})
    return played


USERS = ["ann", "bob", "cy", "dee", "eve"]


async def play(h: Harness, played: list[tuple[timedelta, Event]]) -> None:
    for advance, event in played:
        h.clock.advance(advance)
        await h.send(event)


async def test_backfilled_traits_equal_streamed_ones(opener: Opener) -> None:
    played = history()
    streamed = Harness(*await opener())
    for name, (kind, compute) in DEFINITIONS.items():
        await streamed.define(name, kind, compute)
    await streamed.segment("recent-buyers", RECENT_BUYERS)
    await streamed.walk()  # nothing to walk yet: the jobs end at once
    await play(streamed, played)

    walked = Harness(*await opener())
    walked.processor._backfiller.page_size = 2
    await walked.segment("recent-buyers", RECENT_BUYERS)
    await walked.walk()
    await play(walked, played)
    assert await walked.traits(USERS) == {user: {} for user in USERS}
    for name, (kind, compute) in DEFINITIONS.items():
        await walked.define(name, kind, compute)
    job = await walked.storage.get_computed_trait_backfill(WS, "orders_90d")
    assert job is not None
    assert (job.kind, job.status, job.total, job.version) == (COMPUTED_TRAIT, RUNNING, 5, 1)
    assert await walked.walk() == 3 * len(DEFINITIONS)

    got = await walked.traits(USERS)
    assert got == await streamed.traits(USERS)
    # The table the property test (computed_traits/test_rebuild) generalises.
    assert got["ann"]["orders_90d"] == 3 and got["ann"]["lifetime_revenue"] == 7 * 20 + 84
    assert got["bob"]["favourite_category"] == {"hats": 3, "shoes": 2}
    assert got["cy"]["orders_90d"] == 0, "an order from before the window: 0, not none"
    assert got["dee"]["reminder_lead"] == "2d21h30m" and got["ann"]["usual_visit"] == "14:00"
    assert got["eve"]["favourite_category"] == {"socks": 1}
    assert "orders_90d" not in got["eve"] and "lifetime_revenue" not in got["eve"]
    for user in USERS:
        walked_profile, streamed_profile = await walked.profile(user), await streamed.profile(user)
        assert list(walked_profile.segments) == list(streamed_profile.segments)
        # The windowed traits decay on the same timer.
        assert walked_profile.segment_timer_at == streamed_profile.segment_timer_at
    assert list((await walked.profile("ann")).segments) == ["recent-buyers"]
    assert not (await walked.profile("cy")).segments

    job = await walked.storage.get_computed_trait_backfill(WS, "orders_90d")
    assert job is not None
    assert (job.status, job.processed, job.changed, job.entered, job.exited) == (DONE, 5, 3, 2, 0)
    provenance = (await walked.profile("bob")).traits["orders_90d"]
    bobs_order = [e for _, e in played if e.user_id == "bob" and e.event == "Order Completed"]
    assert (provenance.source, provenance.message_id) == (
        "rapport:computed",
        bobs_order[0].message_id,
    )
    assert provenance.received_at == walked.clock.now()
    entered = [
        e.event
        for e in await walked.log.read(0, 10_000)
        if e.event.source == "rapport:segments" and e.event.properties.get("backfill")
    ]
    assert [(e.event, e.message_id.split(":")[2]) for e in entered] == [
        ("Segment Entered", "computed_trait"),
        ("Segment Entered", "computed_trait"),
    ]

    # Walking again changes nothing: the states are rebuilt the same.
    before = {user: await walked.profile(user) for user in USERS}
    for name, (kind, compute) in DEFINITIONS.items():
        await walked.define(name, kind, compute)
    await walked.walk()
    assert {user: await walked.profile(user) for user in USERS} == before
    job = await walked.storage.get_computed_trait_backfill(WS, "lifetime_revenue")
    assert job is not None and (job.version, job.status, job.changed) == (2, DONE, 0)


async def test_a_newer_version_replaces_the_running_job(opener: Opener) -> None:
    h = Harness(*await opener())
    h.processor._backfiller.page_size = 1
    await play(h, history())
    first = await h.define("orders_90d", *DEFINITIONS["orders_90d"])
    assert await h.processor.run_backfill_page()
    job = await h.storage.get_computed_trait_backfill(WS, "orders_90d")
    assert job is not None and (job.version, job.processed, job.running) == (first, 1, True)

    second = await h.define("orders_90d", "aggregate", {"event": "Order Completed", "window": "1d"})
    # Progress of the replaced version is refused; the new job starts over.
    stale = advance_backfill(
        job, cursor=None, processed=4, entered=0, exited=0, finished=True, now=h.clock.now()
    )
    assert not await h.storage.put_backfill(stale)
    assert await h.walk() == 6
    job = await h.storage.get_computed_trait_backfill(WS, "orders_90d")
    assert job is not None and (job.version, job.status, job.processed) == (second, DONE, 5)
    got = await h.traits(USERS)
    assert {user: values.get("orders_90d") for user, values in got.items()} == {
        "ann": 0,
        "bob": 0,
        "cy": 0,
        "dee": None,
        "eve": None,
    }


async def test_a_deleted_trait_ends_its_job_without_walking(opener: Opener) -> None:
    h = Harness(*await opener())
    await play(h, history())
    await h.define("orders_90d", *DEFINITIONS["orders_90d"])
    await h.storage.delete_computed_trait(WS, "orders_90d", h.clock.now())
    assert await h.walk() == 1
    job = await h.storage.get_computed_trait_backfill(WS, "orders_90d")
    assert job is not None and (job.status, job.processed) == (DONE, 0)
    assert await h.traits(USERS) == {user: {} for user in USERS}
    assert not await h.storage.running_backfills()
