"""The scheduled-events part of the ``Storage`` contract, over every backend.

Rows are written only through ``commit_processing`` (in the transaction of
the step that decided them) and read and deleted by the relay.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from rapport.core.model import Event, Profile, ScheduledEvent
from rapport.storage.base import ProcessingBatch
from rapport.storage.postgres import PostgresStorage
from tests.contract.conftest import Backend, BackendFactory

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PARIS_WINTER = timezone(timedelta(hours=1))
US = timedelta(microseconds=1)
WS = "ws_a"


def event(message_id: str, *, ws: str = WS, **fields: Any) -> Event:
    values: dict[str, Any] = {
        "type": "track",
        "event": "Segment Timer Due",
        "timestamp": T0,
        "received_at": T0,
        "source": "rapport:timers",
        "profile_id": "prof_1",
        **fields,
    }
    return Event(workspace_id=ws, message_id=message_id, **values)


def row(
    key: str, due_at: datetime, *, ws: str = WS, message_id: str | None = None
) -> ScheduledEvent:
    return ScheduledEvent(
        workspace_id=ws,
        key=key,
        due_at=due_at,
        event=event(message_id or f"{key}@{due_at.isoformat()}", ws=ws),
    )


async def commit(
    backend: Backend,
    offset: int,
    scheduled: list[ScheduledEvent] | None = None,
    unscheduled: list[tuple[str, str]] | None = None,
    profiles: list[Profile] | None = None,
) -> None:
    storage, _ = backend
    await storage.commit_processing(
        ProcessingBatch(
            consumer="profiles",
            offset=offset,
            scheduled=scheduled or [],
            unscheduled=unscheduled or [],
            profiles=profiles or [],
        )
    )


def keys(rows: list[ScheduledEvent]) -> list[str]:
    return [r.key for r in rows]


async def test_a_row_reads_back_whole(backend: Backend) -> None:
    storage, _ = backend
    due = datetime(2026, 3, 1, 13, 0, 0, 250001, tzinfo=PARIS_WINTER)
    stored = ScheduledEvent(
        workspace_id=WS,
        key="segments:prof_1",
        due_at=due,
        event=event(
            "timer:1",
            properties={"note": "a\x00b 🧥", "n": 1.5},
            timestamp=due,
            original_timestamp=datetime(2026, 3, 1, 13, 0, tzinfo=PARIS_WINTER),
        ),
    )
    assert await storage.get_scheduled(WS, "segments:prof_1") is None
    assert await storage.next_scheduled_at() is None
    await commit(backend, 1, [stored])
    read = await storage.get_scheduled(WS, "segments:prof_1")
    assert read == stored
    assert read is not None and read.event.original_timestamp is not None
    assert read.event.original_timestamp.utcoffset() == timedelta(hours=1)
    assert await storage.next_scheduled_at() == due
    assert await storage.get_scheduled("ws_b", "segments:prof_1") is None


async def test_due_rows_come_earliest_first_then_in_write_order(backend: Backend) -> None:
    storage, _ = backend
    at = T0 + timedelta(hours=1)
    await commit(backend, 5, [row("late", at + US), row("c", at), row("a", at, ws="ws_b")])
    await commit(backend, 9, [row("b", at), row("early", at - timedelta(minutes=5))])
    assert keys(await storage.due_scheduled(at - timedelta(minutes=5) - US, 10)) == []
    assert keys(await storage.due_scheduled(at, 10)) == ["early", "c", "a", "b"]
    assert keys(await storage.due_scheduled(at, 2)) == ["early", "c"]
    assert keys(await storage.due_scheduled(at + US, 10)) == ["early", "c", "a", "b", "late"]
    assert await storage.due_scheduled(at, 0) == []
    assert await storage.next_scheduled_at() == at - timedelta(minutes=5)


async def test_writing_a_key_again_replaces_its_row(backend: Backend) -> None:
    storage, _ = backend
    first = row("segments:prof_1", T0 + timedelta(hours=1))
    await commit(backend, 1, [first, row("other", T0 + timedelta(hours=2))])
    moved = row("segments:prof_1", T0 + timedelta(hours=3))
    await commit(backend, 2, [moved])
    assert await storage.get_scheduled(WS, "segments:prof_1") == moved
    far = T0 + timedelta(days=1)
    assert keys(await storage.due_scheduled(far, 10)) == ["other", "segments:prof_1"]
    # Within one batch the last row of a key wins.
    last = row("segments:prof_1", T0 + timedelta(minutes=1), message_id="last")
    await commit(backend, 3, [row("segments:prof_1", T0, message_id="first"), last])
    assert await storage.get_scheduled(WS, "segments:prof_1") == last
    assert len(await storage.due_scheduled(far, 10)) == 2


async def test_unscheduled_rows_are_deleted_and_a_missing_one_is_fine(backend: Backend) -> None:
    storage, _ = backend
    await commit(backend, 1, [row("a", T0), row("b", T0)])
    await commit(backend, 2, unscheduled=[(WS, "a"), (WS, "never"), ("ws_b", "b")])
    assert keys(await storage.due_scheduled(T0, 10)) == ["b"]
    # Cancels apply before upserts: a batch can cancel a key and schedule it again.
    await commit(backend, 3, [row("b", T0 + US)], unscheduled=[(WS, "b")])
    assert (await storage.get_scheduled(WS, "b")) == row("b", T0 + US)


async def test_delete_takes_exactly_the_rows_read_not_a_rescheduled_one(backend: Backend) -> None:
    storage, _ = backend
    await commit(backend, 1, [row("a", T0), row("b", T0), row("c", T0)])
    read = await storage.due_scheduled(T0, 10)
    # Meanwhile a processing step moved "b" (same key, another instant and event).
    await commit(backend, 2, [row("b", T0 + timedelta(minutes=1))])
    assert await storage.delete_scheduled(read) == 2
    assert await storage.delete_scheduled(read) == 0
    assert await storage.delete_scheduled([]) == 0
    left = await storage.due_scheduled(T0 + timedelta(days=1), 10)
    assert left == [row("b", T0 + timedelta(minutes=1))]
    # Same key and instant but another event: not the row that was read either.
    same_time = [row("b", T0 + timedelta(minutes=1), message_id="other")]
    assert await storage.delete_scheduled(same_time) == 0
    assert await storage.next_scheduled_at() == T0 + timedelta(minutes=1)


async def test_a_large_delete_takes_every_row_read_across_statements(backend: Backend) -> None:
    storage, _ = backend
    # More rows than one SQLite statement deletes (256), some in another workspace.
    rows = [row(f"k{n:04d}", T0 + n * US, ws="ws_b" if n % 5 == 0 else WS) for n in range(700)]
    await commit(backend, 1, rows)
    read = await storage.due_scheduled(T0 + timedelta(seconds=1), 1000)
    assert len(read) == 700
    # Meanwhile every 100th row is moved: it stays for its new time.
    moved = [row(r.key, T0 + timedelta(hours=1), ws=r.workspace_id) for r in read[::100]]
    await commit(backend, 2, moved)
    assert await storage.delete_scheduled(read) == 700 - len(moved)
    left = await storage.due_scheduled(T0 + timedelta(days=1), 1000)
    assert sorted(keys(left)) == sorted(r.key for r in moved)


async def test_replaying_a_batch_leaves_the_same_rows(backend: Backend) -> None:
    storage, _ = backend
    batch = [row("x", T0), row("y", T0), row("z", T0 - US)]
    await commit(backend, 7, batch, unscheduled=[(WS, "gone")])
    before = await storage.due_scheduled(T0, 10)
    await commit(backend, 7, batch, unscheduled=[(WS, "gone")])
    assert await storage.due_scheduled(T0, 10) == before
    assert keys(before) == ["z", "x", "y"]
    # A replay after delivery brings the row back: delivering it again is
    # harmless because its message id is already in the log.
    await storage.delete_scheduled(before)
    await commit(backend, 7, batch)
    assert await storage.due_scheduled(T0, 10) == before


async def test_a_bad_row_fails_the_whole_batch(backend: Backend) -> None:
    storage, _ = backend
    profile = Profile(id="prof_1", workspace_id=WS, created_at=T0, updated_at=T0)
    naive = ScheduledEvent(
        workspace_id=WS, key="k", due_at=datetime(2026, 3, 1, 12), event=event("m")
    )
    with pytest.raises(ValueError):
        await commit(backend, 1, [row("ok", T0), naive], profiles=[profile])
    foreign = ScheduledEvent(workspace_id=WS, key="k", due_at=T0, event=event("m", ws="ws_b"))
    with pytest.raises(ValueError, match="another workspace"):
        await commit(backend, 1, [foreign], profiles=[profile])
    assert await storage.due_scheduled(T0 + timedelta(days=1), 10) == []
    assert await storage.load_profiles(WS, ["prof_1"]) == {}
    assert await storage.consumer_offset("profiles") == 0


async def test_rows_survive_a_reopen(backend_factory: BackendFactory) -> None:
    if not backend_factory.supports_reopen:
        pytest.skip("nothing survives closing this backend")
    opened = await backend_factory.open()
    await commit(opened, 1, [row("b", T0), row("a", T0)])
    await commit(opened, 2, [row("c", T0 - US)])
    await backend_factory.close(opened)
    storage, _ = await backend_factory.open()
    assert await storage.due_scheduled(T0, 10) == [row("c", T0 - US), row("b", T0), row("a", T0)]
    assert await storage.next_scheduled_at() == T0 - US


async def test_relays_take_turns(backend_factory: BackendFactory) -> None:
    first, _ = await backend_factory.open()
    async with first.relay_turn() as granted:
        assert granted
    if not isinstance(first, PostgresStorage):
        return  # one process per data dir: the relay's own lock is the turn
    # Two processes (two pools) on one database: one turn at a time.
    second, _ = await backend_factory.open()
    async with first.relay_turn() as mine, second.relay_turn() as theirs:
        assert (mine, theirs) == (True, False)
    async with second.relay_turn() as theirs:
        assert theirs


def emitted(message_id: str, due_at: datetime, *, ws: str = WS) -> ScheduledEvent:
    """An outbox row as a processing step writes it: its key names its event."""
    return ScheduledEvent(
        workspace_id=ws,
        key=f"outbox:{message_id}",
        due_at=due_at,
        event=event(message_id, ws=ws, event="Segment Entered", source="rapport:segments"),
    )


async def test_emitted_rows_and_timers_go_out_in_one_order(backend: Backend) -> None:
    # SQLite keeps emitted rows in a table of their own: the two merge.
    storage, _ = backend
    at = T0 + timedelta(hours=1)
    await commit(backend, 5, [emitted("e1", at), row("t1", at), emitted("e2", at, ws="ws_b")])
    await commit(backend, 6, [row("t2", at - US), emitted("e3", at + US), emitted("e4", at)])
    # Written after a later instant (a clock set back, a replayed step): still in order.
    await commit(backend, 7, [emitted("e5", at - 2 * US), row("t3", at + US)])
    expected = [
        "outbox:e5",
        "t2",
        "outbox:e1",
        "t1",
        "outbox:e2",
        "outbox:e4",
        "outbox:e3",
        "t3",
    ]
    assert keys(await storage.due_scheduled(at + US, 100)) == expected
    assert keys(await storage.due_scheduled(at, 100)) == expected[:6]
    assert keys(await storage.due_scheduled(at + US, 3)) == expected[:3]
    assert await storage.next_scheduled_at() == at - 2 * US
    assert await storage.get_scheduled(WS, "outbox:e4") == emitted("e4", at)
    assert await storage.get_scheduled("ws_b", "outbox:e1") is None

    first = await storage.due_scheduled(at, 4)
    assert await storage.delete_scheduled(first) == 4
    assert keys(await storage.due_scheduled(at + US, 100)) == expected[4:]
    assert await storage.next_scheduled_at() == at
    assert await storage.get_scheduled(WS, "outbox:e1") is None
    rest = await storage.due_scheduled(at + US, 100)
    assert await storage.delete_scheduled(rest) == 4
    assert await storage.delete_scheduled(rest) == 0
    assert await storage.next_scheduled_at() is None


async def test_emitted_rows_read_earlier_are_deleted_too(backend: Backend) -> None:
    storage, _ = backend
    await commit(backend, 1, [emitted("e1", T0), emitted("e2", T0), row("t", T0)])
    earlier = await storage.due_scheduled(T0, 10)
    await commit(backend, 2, [emitted("e3", T0 + US)])
    assert len(await storage.due_scheduled(T0 + US, 10)) == 4
    # Rows of an older read, and copies equal to rows read: deleted just the same.
    copies = [ScheduledEvent(**{f: getattr(r, f) for f in r.__struct_fields__}) for r in earlier]
    assert await storage.delete_scheduled(copies[:1]) == 1
    assert await storage.delete_scheduled(earlier) == 2
    assert keys(await storage.due_scheduled(T0 + US, 10)) == ["outbox:e3"]


async def test_an_emitted_row_can_be_unscheduled(backend: Backend) -> None:
    storage, _ = backend
    await commit(backend, 1, [emitted("e1", T0), emitted("e2", T0)])
    await commit(backend, 2, unscheduled=[(WS, "outbox:e1"), ("ws_b", "outbox:e2")])
    assert keys(await storage.due_scheduled(T0, 10)) == ["outbox:e2"]


async def test_emitted_rows_survive_a_reopen(backend_factory: BackendFactory) -> None:
    if not backend_factory.supports_reopen:
        pytest.skip("nothing survives closing this backend")
    opened = await backend_factory.open()
    await commit(opened, 1, [emitted("e1", T0), row("t", T0)])
    await commit(opened, 2, [emitted("e2", T0 + US)])
    await backend_factory.close(opened)
    storage, _ = await backend_factory.open()
    assert keys(await storage.due_scheduled(T0 + US, 10)) == ["outbox:e1", "t", "outbox:e2"]
    await commit((storage, _), 3, [emitted("e3", T0 + US)])
    assert keys(await storage.due_scheduled(T0 + US, 10))[-1] == "outbox:e3"
