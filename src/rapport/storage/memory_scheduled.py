"""Scheduled events in memory: the in-memory backend's delivery schedule.

Rows are kept encoded, so a caller that mutates an event it scheduled (or got
back) never changes what is stored. ``prepare`` checks and encodes a batch's
rows before anything is applied (``MemoryStorage.commit_processing`` applies
nothing when one part of the batch cannot be stored); ``put`` cannot fail.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from rapport.core.model import Event, ScheduledEvent
from rapport.storage.base import ProcessingBatch

# JSON rather than msgpack: msgpack timestamps drop the UTC offset, and the
# contract says an event's datetimes come back as they went in.
_ENCODER = msgspec.json.Encoder()
_EVENT_DECODER = msgspec.json.Decoder(Event)


class MemoryScheduled:
    """The scheduled-event methods of ``Storage``, over a dict and a sorted list."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], _ScheduledRow] = {}
        """(workspace, key) -> its row."""
        self._order: list[tuple[int, int, int, str, str]] = []
        """``_ScheduledRow.order`` of every row, ascending: the delivery order."""

    @staticmethod
    def prepare(batch: ProcessingBatch) -> list[_ScheduledRow]:
        """The batch's rows, encoded; the last of each key wins (as in the SQL backends)."""
        rows: dict[tuple[str, str], _ScheduledRow] = {}
        for index, row in enumerate(batch.scheduled):
            stored = _ScheduledRow(row, batch.offset, index)
            rows.pop(stored.key, None)
            rows[stored.key] = stored
        return list(rows.values())

    def put(self, rows: Sequence[_ScheduledRow]) -> None:
        """Store prepared rows, each replacing any row of its key."""
        for row in rows:
            self.cancel(row.key)
            self._rows[row.key] = row
            bisect.insort(self._order, row.order)

    def cancel(self, key: tuple[str, str]) -> None:
        row = self._rows.pop(key, None)
        if row is not None:
            index = bisect.bisect_left(self._order, row.order)
            del self._order[index]

    def due(self, now: datetime, limit: int) -> list[ScheduledEvent]:
        end = bisect.bisect_right(self._order, (_micros(now), _LAST, _LAST))
        chosen = self._order[: min(end, max(limit, 0))]
        return [self._rows[(ws, key)].decoded() for *_, ws, key in chosen]

    def next_at(self) -> datetime | None:
        if not self._order:
            return None
        ws, key = self._order[0][3:]
        return self._rows[(ws, key)].due_at

    def get(self, workspace_id: str, key: str) -> ScheduledEvent | None:
        row = self._rows.get((workspace_id, key))
        return None if row is None else row.decoded()

    def delete(self, rows: Sequence[ScheduledEvent]) -> int:
        deleted = 0
        for wanted in rows:
            key = (wanted.workspace_id, wanted.key)
            row = self._rows.get(key)
            if row is not None and row.same(wanted):
                self.cancel(key)
                deleted += 1
        return deleted


_LAST = 2**63
"""Above any offset or index: bisects past every row due at one instant."""


def _micros(value: datetime) -> int:
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: only aware datetimes are stored")
    return (value - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _ScheduledRow:
    """A stored scheduled event: the event encoded, and its place in the delivery order."""

    __slots__ = ("body", "due_at", "key", "message_id", "order")

    def __init__(self, row: ScheduledEvent, offset: int, index: int) -> None:
        if row.event.workspace_id != row.workspace_id:
            raise ValueError(f"scheduled event {row.key!r} belongs to another workspace")
        self.key = (row.workspace_id, row.key)
        self.due_at = row.due_at
        self.message_id = row.event.message_id
        self.body = _ENCODER.encode(row.event)
        self.order: tuple[int, int, int, str, str] = (
            _micros(row.due_at),
            offset,
            index,
            row.workspace_id,
            row.key,
        )

    def same(self, row: ScheduledEvent) -> bool:
        return self.due_at == row.due_at and self.message_id == row.event.message_id

    def decoded(self) -> ScheduledEvent:
        return ScheduledEvent(
            workspace_id=self.key[0],
            key=self.key[1],
            due_at=self.due_at,
            event=_EVENT_DECODER.decode(self.body),
        )
