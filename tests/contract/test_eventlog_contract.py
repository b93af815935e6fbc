"""The ``EventLog`` contract, run over every backend (see ``conftest.backend``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from rapport.core.model import Event
from tests.contract.conftest import Backend, BackendFactory

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PARIS_WINTER = timezone(timedelta(hours=1))


def event(
    message_id: str, *, workspace_id: str = "ws_a", received_at: datetime = T0, **fields: object
) -> Event:
    return Event(
        workspace_id=workspace_id,
        message_id=message_id,
        type="track",
        event="Order Completed",
        timestamp=received_at - timedelta(seconds=2),
        received_at=received_at,
        source="write_key:key_1",
        user_id="user_1",
        **fields,  # type: ignore[arg-type]
    )


async def test_empty_log(backend: Backend) -> None:
    _, log = backend
    assert await log.end_offset() == 0
    assert await log.read(0, 10) == []
    assert await log.append([]) == []


async def test_append_then_read_in_order_with_offsets_from_one(backend: Backend) -> None:
    _, log = backend
    first = [event(f"m{i}") for i in range(3)]
    second = [event(f"m{i}") for i in range(3, 5)]
    assert await log.append(first) == [True, True, True]
    assert await log.append(second) == [True, True]

    entries = await log.read(0, 100)
    assert [entry.offset for entry in entries] == [1, 2, 3, 4, 5]
    assert [entry.event for entry in entries] == first + second
    assert await log.end_offset() == 5


async def test_events_round_trip_every_field_and_timezone(backend: Backend) -> None:
    _, log = backend
    full = Event(
        workspace_id="ws_a",
        message_id="m-full",
        type="identify",
        timestamp=datetime(2026, 3, 1, 13, 0, 0, 123456, tzinfo=PARIS_WINTER),
        received_at=T0,
        source="import:crm",
        user_id="user_1",
        anonymous_id="anon_1",
        previous_id="prev_1",
        group_id="group_1",
        event="Signed Up",
        name="Home",
        category="Docs",
        traits={"email": "dana@example.com", "plan": {"tier": "pro", "seats": 3}},
        properties={"revenue": 12.5, "items": [1, "two", None, True]},
        context={"ip": "203.0.113.9", "locale": "fr-FR"},
        integrations={"All": False},
        original_timestamp=datetime(2026, 3, 1, 13, 0, 5, tzinfo=PARIS_WINTER),
        sent_at=datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC),
    )
    await log.append([full])
    (entry,) = await log.read(0, 1)
    assert entry.event == full
    assert entry.event.timestamp.utcoffset() == timedelta(hours=1)
    assert entry.event.original_timestamp is not None
    assert entry.event.original_timestamp.utcoffset() == timedelta(hours=1)


async def test_read_respects_after_and_limit(backend: Backend) -> None:
    _, log = backend
    await log.append([event(f"m{i}") for i in range(7)])

    assert [e.offset for e in await log.read(0, 3)] == [1, 2, 3]
    assert [e.offset for e in await log.read(3, 3)] == [4, 5, 6]
    assert [e.offset for e in await log.read(6, 3)] == [7]
    assert await log.read(7, 3) == []
    assert await log.read(100, 3) == []
    assert await log.read(0, 0) == []
    assert [e.event.message_id for e in await log.read(2, 1)] == ["m2"]


async def test_duplicates_across_calls_are_refused(backend: Backend) -> None:
    _, log = backend
    assert await log.append([event("a"), event("b")]) == [True, True]
    assert await log.append([event("b"), event("c"), event("a")]) == [False, True, False]

    entries = await log.read(0, 100)
    assert [e.event.message_id for e in entries] == ["a", "b", "c"]
    assert await log.end_offset() == 3


async def test_duplicates_within_one_call_keep_the_first(backend: Backend) -> None:
    _, log = backend
    first_a = event("a", properties={"copy": 1})
    second_a = event("a", properties={"copy": 2})
    assert await log.append([first_a, event("b"), second_a, event("b")]) == [
        True,
        True,
        False,
        False,
    ]
    entries = await log.read(0, 100)
    assert [e.event.message_id for e in entries] == ["a", "b"]
    assert entries[0].event.properties == {"copy": 1}


async def test_dedup_is_per_workspace(backend: Backend) -> None:
    _, log = backend
    assert await log.append([event("same", workspace_id="ws_a")]) == [True]
    assert await log.append(
        [event("same", workspace_id="ws_b"), event("same", workspace_id="ws_a")]
    ) == [True, False]
    entries = await log.read(0, 100)
    assert [(e.event.workspace_id, e.event.message_id) for e in entries] == [
        ("ws_a", "same"),
        ("ws_b", "same"),
    ]


async def test_log_and_dedup_survive_reopen(backend_factory: BackendFactory) -> None:
    if not backend_factory.supports_reopen:
        pytest.skip("this backend keeps nothing across a close")
    first = await backend_factory.open()
    assert await first[1].append([event("a"), event("b")]) == [True, True]
    await backend_factory.close(first)

    _, log = await backend_factory.open()
    assert await log.end_offset() == 2
    assert await log.append([event("b"), event("c")]) == [False, True]
    entries = await log.read(0, 100)
    assert [(e.offset, e.event.message_id) for e in entries] == [(1, "a"), (2, "b"), (3, "c")]


async def test_prune_dedup_forgets_only_old_message_ids(backend: Backend) -> None:
    _, log = backend
    old_time = T0 - timedelta(days=8)
    await log.append([event("old-1", received_at=old_time), event("old-2", received_at=old_time)])
    await log.append([event("recent", received_at=T0)])

    assert await log.prune_dedup(T0 - timedelta(days=7)) == 2
    assert await log.prune_dedup(T0 - timedelta(days=7)) == 0

    # Forgotten ids are accepted again; the recent one is still a duplicate.
    assert await log.append([event("old-1"), event("recent")]) == [True, False]
    # Pruning touches only the dedup memory, never the log itself.
    assert [e.event.message_id for e in await log.read(0, 100)] == [
        "old-1",
        "old-2",
        "recent",
        "old-1",
    ]


async def test_prune_dedup_compares_instants_not_wall_clock_text(backend: Backend) -> None:
    _, log = backend
    # 12:30+01:00 is 11:30 UTC: older than 12:00 UTC even though "12:30" > "12:00".
    await log.append([event("a", received_at=datetime(2026, 3, 1, 12, 30, tzinfo=PARIS_WINTER))])
    assert await log.prune_dedup(datetime(2026, 3, 1, 12, 0, tzinfo=UTC)) == 1


async def test_concurrent_appends_all_land_with_dense_unique_offsets(backend: Backend) -> None:
    _, log = backend
    batches = [[event(f"c{call}-{i}") for i in range(100)] for call in range(20)]

    results = await asyncio.gather(*(log.append(batch) for batch in batches))

    assert all(result == [True] * 100 for result in results)
    assert await log.end_offset() == 2000
    entries = await log.read(0, 5000)
    assert [e.offset for e in entries] == list(range(1, 2001))
    assert {e.event.message_id for e in entries} == {
        e.message_id for batch in batches for e in batch
    }


async def test_concurrent_duplicate_appends_accept_each_id_once(backend: Backend) -> None:
    _, log = backend
    same = [event(f"d{i}") for i in range(50)]

    results = await asyncio.gather(*(log.append(same) for _ in range(10)))

    assert sum(result.count(True) for result in results) == 50
    assert await log.end_offset() == 50
