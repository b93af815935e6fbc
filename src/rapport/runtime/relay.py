"""The relay: scheduled internal events -> the event log, once they are due.

A processing step never appends to the event log itself. What it decides
to emit (``Segment Entered`` now, a segment timer at 13:00, later a
journey's "wait 2 days") is stored as ``ScheduledEvent`` rows in the same
transaction as the profiles it changed (``ProcessingBatch.scheduled``), so
an emitted event can never disagree with what storage holds: if the commit
fails, neither exists. The relay then delivers each row whose ``due_at``
has come:

1. read due rows (``due_at <= clock.now()``), earliest first, a batch at a
   time (``BATCH_SIZE``);
2. append their events to the log -- their message ids are derived from
   what scheduled them, so appending a row twice (a crash between 2 and 4,
   a replayed processing step writing a delivered row again) adds nothing;
3. wake the processor, which handles the events like any other (while
   the rows are deleted: the events are in the log already);
4. delete exactly those rows: a row rescheduled in the meantime (same key,
   another due instant or event) stays for its new time.

When idle it sleeps until the earliest ``due_at`` (at most ``MAX_SLEEP``, so
rows written by another process or a clock that jumped are seen soon
anyway), and ``notify()`` wakes it at once: the processor calls it after a
commit that scheduled something, so an outbox row goes out within
milliseconds of its commit, not after a poll interval. Time is the
injected ``Clock``'s: with a ``VirtualClock`` the sleeps are only naps
between checks, and tests call ``run_due()`` after moving the clock.

One relay delivers at a time, which is what keeps the events of one
profile in the order they were scheduled: within a process through a lock,
across processes through ``Storage.relay_turn`` (a PostgreSQL advisory
lock: the other workers' relays find it taken and sleep, rather than all
reading the same rows).

A storage and log that keep events as the same JSON (SQLite: the
``EncodedSchedule`` and ``EncodedLog`` protocols below) take the same three
steps with the rows as stored: the events go from one file to the other
without being decoded and encoded again on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import structlog

from rapport.core.clock import Clock
from rapport.storage.base import EventLog, Storage

log = structlog.get_logger("rapport.relay")

BATCH_SIZE = 1000
"""Rows read, appended and deleted at a time. Each batch costs three round
trips (read, log append, delete) and two commits whatever its size: a burst
of due timers (a journey's waits ending together) goes out in fewer."""
MAX_SLEEP = 1.0
"""Seconds an idle relay sleeps at most before looking at the schedule again."""
BUSY_RETRY = 0.1
"""Seconds to wait when another process's relay holds the turn."""
MAX_BACKOFF = 5.0


EncodedEvent = tuple[str, str, int, bytes]
"""``(workspace_id, message_id, received_at in microseconds since the epoch, Event JSON)``."""


class EncodedRows(Protocol):
    """Due rows read by an ``EncodedSchedule``."""

    @property
    def events(self) -> Sequence[EncodedEvent]:
        """Their events, in delivery order, as ``EncodedLog.append_encoded`` takes them."""
        ...


@runtime_checkable
class EncodedSchedule(Protocol):
    """A storage that hands due rows over as stored (``SqliteStorage``)."""

    async def due_encoded(self, now: datetime, limit: int) -> EncodedRows:
        """What ``Storage.due_scheduled`` reads, events still encoded."""
        ...

    async def delete_due(self, rows: object) -> int:
        """``Storage.delete_scheduled`` for rows ``due_encoded`` returned."""
        ...


@runtime_checkable
class EncodedLog(Protocol):
    """An event log appending events as their JSON (``SqliteEventLog``)."""

    async def append_encoded(self, events: Sequence[EncodedEvent]) -> list[bool]: ...


class Relay:
    """Delivers due ``ScheduledEvent`` rows to the event log (see the module doc)."""

    def __init__(
        self,
        storage: Storage,
        log: EventLog,
        clock: Clock,
        *,
        on_appended: Callable[[], None] | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        """``on_appended`` is called after events were appended (the processor's ``notify``)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._storage = storage
        self._log = log
        self._encoded: tuple[EncodedSchedule, EncodedLog] | None = None
        if isinstance(storage, EncodedSchedule) and isinstance(log, EncodedLog):
            self._encoded = (storage, log)
        self._clock = clock
        self.on_appended = on_appended
        self.batch_size = batch_size
        self._wake = asyncio.Event()
        self._turn = asyncio.Lock()
        self._turn_missed = False
        self.delivered_total = 0
        """Rows delivered (appended and deleted) since start."""

    def notify(self) -> None:
        """Wake an idle ``run`` loop: rows were scheduled."""
        self._wake.set()

    async def run_due(self) -> int:
        """Deliver every row due now; return how many rows were delivered.

        Returns 0 without delivering when another process's relay holds the
        turn (it delivers them).
        """
        async with self._turn, self._storage.relay_turn() as granted:
            self._turn_missed = not granted
            if not granted:
                return 0
            delivered = 0
            while True:
                count = await self._deliver_batch()
                if not count:
                    break
                delivered += count
                self.delivered_total += count
                if count < self.batch_size:
                    break
        if delivered:
            log.debug("relay.delivered", rows=delivered)
        return delivered

    async def _deliver_batch(self) -> int:
        """Read, append and delete one batch of due rows; return how many."""
        if self._encoded is not None:
            storage, event_log = self._encoded
            encoded = await storage.due_encoded(self._clock.now(), self.batch_size)
            if not encoded.events:
                return 0
            await event_log.append_encoded(encoded.events)
            self._appended()
            await storage.delete_due(encoded)
            return len(encoded.events)
        rows = await self._storage.due_scheduled(self._clock.now(), self.batch_size)
        if not rows:
            return 0
        await self._log.append([row.event for row in rows])
        self._appended()
        await self._storage.delete_scheduled(rows)
        return len(rows)

    def _appended(self) -> None:
        if self.on_appended is not None:
            self.on_appended()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; sleep until the next due row or ``notify()``."""
        failures = 0
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.run_due()
                delay = BUSY_RETRY if self._turn_missed else await self._until_next()
                failures = 0
            except Exception as exc:  # storage/log trouble: logged, retried with backoff
                failures += 1
                log.error("relay.failed", attempt=failures, exc_info=exc)
                delay = min(MAX_BACKOFF, BUSY_RETRY * 2**failures)
            await self._sleep(stop, delay)

    async def _until_next(self) -> float:
        """Seconds until the earliest row is due, at most ``MAX_SLEEP``."""
        due = await self._storage.next_scheduled_at()
        if due is None:
            return MAX_SLEEP
        return min(MAX_SLEEP, max(0.0, (due - self._clock.now()).total_seconds()))

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        if stop.is_set() or self._wake.is_set():
            return
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
