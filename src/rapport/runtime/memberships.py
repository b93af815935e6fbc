"""The segment membership index: its own consumer of the event log.

The processor records every membership change as an internal ``Segment
Entered`` / ``Segment Exited`` track event (source ``rapport:segments``,
properties ``{segment_id, version}``, the profile id on the event). This
consumer (``memberships`` in the consumer offsets) reads the log in offset
order, keeps those events, and commits them with its offset in ONE
``commit_memberships`` call: the current members of each segment, a member
count per segment, and a history row per change (see
``rapport.storage.membership_index`` for why a replayed batch is harmless).
It is a consumer of its own rather than part of the processor's commit so
that profile processing, the hot path, carries none of it, and so that the
index can be rebuilt by replaying the log from offset 0.

Freshness: the membership events of a processing step are committed with
it (as scheduled events, the outbox) and appended to the log by the relay
right after. The relay wakes the index when it appends (``notify()``, wired
in ``service``), and the index also wakes when the processor's offset moves
(``upstream``), polling only as a fallback: it trails the profiles by a
relay append, one read and one commit -- milliseconds. It runs wherever the
processor runs (inline in ``rapport serve``, or ``rapport worker``).

Events are per profile id and the index has no merge logic: a merge makes
the processor emit ``Segment Exited`` for the merged-away profile, and the
history of the surviving profile is asked for with the ids it absorbed
(``Profile.merged_from``).

Most of the log is other events. A step that found no membership event only
moves the offset in memory, committed at most every
``OFFSET_COMMIT_INTERVAL`` seconds (and on stop): re-reading such a stretch
after a crash changes nothing, and it spares the storage a commit per step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from rapport.core.model import LogEntry
from rapport.core.segments import is_segment_id
from rapport.runtime.log_consumer import LogConsumer
from rapport.runtime.processor import SEGMENT_ENTERED, SEGMENT_EVENT_SOURCE, SEGMENT_EXITED
from rapport.storage.base import EventLog, Storage
from rapport.storage.membership_index import MembershipBatch, SegmentChange

log = structlog.get_logger("rapport.memberships")

CONSUMER = "memberships"
POLL_INTERVAL = 0.25
"""Seconds an idle index waits for the processor (or ``notify()``) before reading the log."""
OFFSET_COMMIT_INTERVAL = 1.0
"""Seconds an offset with no membership change behind it may stay uncommitted."""
MAX_BACKOFF = 5.0
MAX_VERSION = 2**63 - 1


class Upstream(Protocol):
    """What the index follows to know when to read: the processor."""

    @property
    def processed_offset(self) -> int: ...

    async def wait_processed(self, offset: int, timeout: float) -> bool: ...


def segment_change(entry: LogEntry) -> SegmentChange | None:
    """The membership change a log entry records; None for any other event.

    Ingest never gives an event the source ``rapport:segments`` (it names the
    key), so only the processor emits these; a malformed one is still
    refused here (logged) rather than stored.
    """
    event = entry.event
    if event.source != SEGMENT_EVENT_SOURCE or event.type != "track":
        return None
    if event.event not in (SEGMENT_ENTERED, SEGMENT_EXITED):
        return None
    segment_id = event.properties.get("segment_id")
    version = event.properties.get("version")
    profile_id = event.profile_id
    if (
        not isinstance(segment_id, str)
        or not is_segment_id(segment_id)
        or isinstance(version, bool)
        or not isinstance(version, int)
        or not 1 <= version <= MAX_VERSION
        or not profile_id
        or "\x00" in profile_id
    ):
        log.warning(
            "memberships.malformed_event",
            offset=entry.offset,
            message_id=event.message_id,
            workspace_id=event.workspace_id,
        )
        return None
    return SegmentChange(
        workspace_id=event.workspace_id,
        offset=entry.offset,
        profile_id=profile_id,
        segment_id=segment_id,
        version=version,
        entered=event.event == SEGMENT_ENTERED,
        at=event.timestamp,
    )


class MembershipIndexer(LogConsumer):
    """Keeps the membership index up to date with the event log."""

    def __init__(
        self,
        storage: Storage,
        log: EventLog,
        *,
        upstream: Upstream | None = None,
        consumer: str = CONSUMER,
        batch_size: int = 1000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        super().__init__(storage, consumer)
        self._log = log
        self._upstream = upstream
        self.batch_size = batch_size
        self._monotonic = monotonic
        self._committed_at = monotonic()
        self.changes_total = 0
        """Membership changes indexed since start."""

    @property
    def indexed_offset(self) -> int:
        """Offset up to which every membership change in the log is in the index."""
        return self.consumed_offset

    async def load_offset(self) -> int:
        self._committed_at = self._monotonic()
        return await super().load_offset()

    async def wait_indexed(self, offset: int, timeout: float) -> bool:
        """Wait until the index covers the log up to ``offset``; False on timeout."""
        return await self.reached(offset, timeout)

    # -- one step ------------------------------------------------------------
    async def run_once(self) -> int:
        """Index the next batch of the log; returns how many entries it read."""
        if self._offset is None:
            await self.load_offset()
        after = self.indexed_offset
        entries = await self._log.read(after, self.batch_size)
        if not entries:
            return 0
        changes = [c for c in map(segment_change, entries) if c is not None]
        offset = entries[-1].offset
        due = self._monotonic() - self._committed_at >= OFFSET_COMMIT_INTERVAL
        if changes or due:
            await self._commit(
                MembershipBatch(consumer=self.consumer, offset=offset, changes=changes)
            )
        self._offset = offset
        self.changes_total += len(changes)
        await self._announce()
        return len(entries)

    async def flush(self) -> None:
        """Commit an offset that only moved in memory (called on stop)."""
        if self._offset is not None and self._offset > self._committed:
            await self._commit(MembershipBatch(consumer=self.consumer, offset=self._offset))

    async def _commit(self, batch: MembershipBatch) -> None:
        await self._storage.commit_memberships(batch)
        self._committed = batch.offset
        self._committed_at = self._monotonic()

    # -- the loop ------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Index until ``stop`` is set; wait for the processor (or a poll) when idle."""
        attempts = 0
        try:
            while not stop.is_set():
                self._wake.clear()
                # Read before the log: progress made while reading the log
                # then ends the wait below at once instead of being missed.
                seen = self._upstream.processed_offset if self._upstream is not None else 0
                try:
                    done = await self.run_once()
                except Exception as exc:  # storage/log trouble: logged and retried
                    attempts += 1
                    log.error(
                        "memberships.batch_failed",
                        after_offset=self.indexed_offset,
                        attempt=attempts,
                        exc_info=exc,
                    )
                    await self._idle(stop, min(MAX_BACKOFF, POLL_INTERVAL * 2**attempts), None)
                    continue
                attempts = 0
                if done == 0:
                    await self._idle(stop, POLL_INTERVAL, seen)
        finally:
            try:
                await self.flush()
            except Exception as exc:  # the next start re-reads from the committed offset
                log.warning("memberships.flush_failed", offset=self.indexed_offset, exc_info=exc)

    async def _idle(self, stop: asyncio.Event, seconds: float, upstream_seen: int | None) -> None:
        waits: list[asyncio.Future[object]] = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._wake.wait()),
        ]
        if self._upstream is not None and upstream_seen is not None:
            waits.append(
                asyncio.ensure_future(self._upstream.wait_processed(upstream_seen + 1, seconds))
            )
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
