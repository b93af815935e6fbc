"""The in-memory event log: the in-memory backend's ``EventLog``.

Events are kept encoded, so a caller that mutates an event it appended (or
read back) never changes the log. Every method finishes without awaiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from rapport.core.model import Event, LogEntry
from rapport.storage.base import EventLog

# JSON rather than msgpack: msgpack timestamps drop the UTC offset, and the
# contract says an event's datetimes come back as they went in.
_ENCODER = msgspec.json.Encoder()
_EVENT_DECODER = msgspec.json.Decoder(Event)


class MemoryEventLog(EventLog):
    """The event log as a list of encoded events; offset ``n`` is item ``n - 1``."""

    def __init__(self) -> None:
        self._entries: list[bytes] = []
        self._first_seen: dict[tuple[str, str], datetime] = {}
        """(workspace, message id) -> when it was first appended (its ``received_at``)."""

    async def append(self, events: Sequence[Event]) -> list[bool]:
        # Encode everything before changing anything, so a bad event leaves
        # the log as it was.
        fresh: dict[tuple[str, str], tuple[datetime, bytes]] = {}
        results: list[bool] = []
        for event in events:
            key = (event.workspace_id, event.message_id)
            if key in self._first_seen or key in fresh:
                results.append(False)
                continue
            fresh[key] = (event.received_at, _ENCODER.encode(event))
            results.append(True)
        for key, (seen_at, body) in fresh.items():
            self._first_seen[key] = seen_at
            self._entries.append(body)
        return results

    async def read(self, after: int, limit: int) -> list[LogEntry]:
        start = max(after, 0)
        if limit <= 0:
            return []
        chunk = self._entries[start : start + limit]
        return [
            LogEntry(offset=start + i + 1, event=_EVENT_DECODER.decode(body))
            for i, body in enumerate(chunk)
        ]

    async def end_offset(self) -> int:
        return len(self._entries)

    async def prune_dedup(self, older_than: datetime) -> int:
        stale = [key for key, seen in self._first_seen.items() if seen < older_than]
        for key in stale:
            del self._first_seen[key]
        return len(stale)
