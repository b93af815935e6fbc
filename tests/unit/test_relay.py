"""The relay: due scheduled rows -> the event log, on the in-memory backend."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from rapport.core.clock import VirtualClock
from rapport.core.model import Event, ScheduledEvent
from rapport.runtime import relay as relay_module
from rapport.runtime.clock import SystemClock
from rapport.runtime.relay import Relay
from rapport.storage.base import ProcessingBatch
from rapport.storage.memory import MemoryEventLog, MemoryStorage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WS = "ws"
US = timedelta(microseconds=1)


def row(key: str, due_at: datetime, message_id: str | None = None) -> ScheduledEvent:
    return ScheduledEvent(
        workspace_id=WS,
        key=key,
        due_at=due_at,
        event=Event(
            workspace_id=WS,
            message_id=message_id or f"{key}@{due_at.isoformat()}",
            type="track",
            event="Segment Timer Due",
            timestamp=due_at,
            received_at=due_at,
            source="rapport:timers",
            profile_id="prof_1",
        ),
    )


async def schedule(storage: MemoryStorage, *rows: ScheduledEvent, offset: int = 1) -> None:
    await storage.commit_processing(
        ProcessingBatch(consumer="profiles", offset=offset, scheduled=list(rows))
    )


async def logged(log: MemoryEventLog) -> list[str]:
    return [entry.event.message_id for entry in await log.read(0, 1000)]


class Setup:
    def __init__(self, storage: MemoryStorage | None = None, batch_size: int = 200) -> None:
        self.storage = storage or MemoryStorage()
        self.log = MemoryEventLog()
        self.clock = VirtualClock(T0)
        self.woken = 0
        self.relay = Relay(
            self.storage, self.log, self.clock, on_appended=self.wake, batch_size=batch_size
        )

    def wake(self) -> None:
        self.woken += 1


async def test_only_due_rows_go_out_in_order_and_are_deleted() -> None:
    s = Setup()
    hour = T0 + timedelta(hours=1)
    await schedule(s.storage, row("b", T0), row("a", T0), row("later", hour))
    assert await s.relay.run_due() == 2
    assert await logged(s.log) == [f"b@{T0.isoformat()}", f"a@{T0.isoformat()}"]
    assert s.woken == 1
    assert await s.storage.next_scheduled_at() == hour

    s.clock.set(hour - US)
    assert await s.relay.run_due() == 0
    assert s.woken == 1, "nothing appended, nobody woken"
    s.clock.set(hour)
    assert await s.relay.run_due() == 1
    assert (await logged(s.log))[-1] == f"later@{hour.isoformat()}"
    assert await s.storage.next_scheduled_at() is None
    assert s.relay.delivered_total == 3


async def test_small_batches_until_nothing_is_due() -> None:
    s = Setup(batch_size=2)
    await schedule(s.storage, *(row(f"k{n}", T0 + n * US) for n in range(5)))
    s.clock.set(T0 + timedelta(seconds=1))
    assert await s.relay.run_due() == 5
    assert s.woken == 3
    assert await logged(s.log) == [f"k{n}@{(T0 + n * US).isoformat()}" for n in range(5)]


class FailingDelete(MemoryStorage):
    """Crashes between the append and the delete, once."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    async def delete_scheduled(self, rows: Sequence[ScheduledEvent]) -> int:
        if self.fail:
            self.fail = False
            raise OSError("crashed before deleting")
        return await super().delete_scheduled(rows)


async def test_a_crash_between_append_and_delete_appends_a_duplicate_the_log_drops() -> None:
    s = Setup(FailingDelete())
    await schedule(s.storage, row("a", T0), row("b", T0))
    with pytest.raises(OSError):
        await s.relay.run_due()
    assert len(await logged(s.log)) == 2
    assert s.woken == 1, "the events are in the log: the processor was woken before the delete"
    assert len(await s.storage.due_scheduled(T0, 10)) == 2, "still there"
    assert await s.relay.run_due() == 2
    assert len(await logged(s.log)) == 2, "the second append was a duplicate"
    assert await s.storage.due_scheduled(T0, 10) == []


class ReschedulingLog(MemoryEventLog):
    """A processing step moves timer ``a`` while the relay is delivering it."""

    def __init__(self, storage: MemoryStorage, moved: ScheduledEvent) -> None:
        super().__init__()
        self.storage = storage
        self.moved: ScheduledEvent | None = moved

    async def append(self, events: Sequence[Event]) -> list[bool]:
        appended = await super().append(events)
        if self.moved is not None:
            await schedule(self.storage, self.moved, offset=2)
            self.moved = None
        return appended


async def test_a_row_rescheduled_meanwhile_stays_for_its_new_time() -> None:
    storage = MemoryStorage()
    moved = row("a", T0 + timedelta(minutes=10))
    log = ReschedulingLog(storage, moved)
    relay = Relay(storage, log, VirtualClock(T0))
    await schedule(storage, row("a", T0), row("b", T0))
    assert await relay.run_due() == 2
    assert await storage.get_scheduled(WS, "a") == moved
    assert await storage.get_scheduled(WS, "b") is None


class TakenTurn(MemoryStorage):
    """Another process's relay holds the turn."""

    @contextlib.asynccontextmanager
    async def relay_turn(self) -> AsyncIterator[bool]:
        yield False


async def test_no_turn_no_delivery() -> None:
    s = Setup(TakenTurn())
    await schedule(s.storage, row("a", T0))
    assert await s.relay.run_due() == 0
    assert await logged(s.log) == []


async def run_in_background(relay: Relay) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(0.02)  # asleep: nothing is scheduled
    return stop, task


async def wait_appended(relay: Relay, timeout: float) -> float:
    """Seconds until the relay appends something."""
    appended = asyncio.Event()
    relay.on_appended = appended.set
    start = time.monotonic()
    await asyncio.wait_for(appended.wait(), timeout)
    return time.monotonic() - start


async def test_the_loop_is_woken_by_notify(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_module, "MAX_SLEEP", 30.0)
    s = Setup()
    stop, task = await run_in_background(s.relay)
    await schedule(s.storage, row("a", T0))
    s.relay.notify()
    assert await wait_appended(s.relay, timeout=1.0) < 0.5
    assert await logged(s.log) == [f"a@{T0.isoformat()}"]
    stop.set()
    await asyncio.wait_for(task, timeout=1)


async def test_the_loop_sleeps_until_the_next_row_is_due(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_module, "MAX_SLEEP", 30.0)
    storage, log = MemoryStorage(), MemoryEventLog()
    relay = Relay(storage, log, SystemClock())
    due = datetime.now(UTC) + timedelta(milliseconds=150)
    await schedule(storage, row("a", due))
    stop, task = await run_in_background(relay)
    waited = await wait_appended(relay, timeout=2.0)
    assert datetime.now(UTC) >= due
    assert len(await logged(log)) == 1
    assert waited < 1.0, "woke at the due instant, not after a poll interval"
    stop.set()
    await asyncio.wait_for(task, timeout=1)


class FlakyDue(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 2

    async def due_scheduled(self, now: datetime, limit: int) -> list[ScheduledEvent]:
        if self.failures:
            self.failures -= 1
            raise OSError("database is restarting")
        return await super().due_scheduled(now, limit)


async def test_the_loop_outlives_storage_trouble(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_module, "BUSY_RETRY", 0.01)
    s = Setup(FlakyDue())
    await schedule(s.storage, row("a", T0))
    appended = asyncio.Event()
    s.relay.on_appended = appended.set
    stop, task = await run_in_background(s.relay)
    await asyncio.wait_for(appended.wait(), 2.0)
    assert s.storage.failures == 0
    stop.set()
    await asyncio.wait_for(task, timeout=1)


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Relay(MemoryStorage(), MemoryEventLog(), VirtualClock(T0), batch_size=0)
