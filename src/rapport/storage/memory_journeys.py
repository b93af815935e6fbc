"""Journey versions in memory: the in-memory backend's part for ``rapport.core.journeys``.

Versions are kept as encoded documents, so a caller that mutates a
definition it got back (or passed in) never changes what is stored: the
same isolation the database backends give.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

import msgspec

from rapport.core.journeys.lifecycle import (
    PUBLISHED,
    JourneyAlreadyExists,
    JourneyNotFound,
    JourneyVersion,
    save_draft,
    transition,
)
from rapport.core.model import ScheduledEvent
from rapport.storage.journey_signals import signal_rows

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(JourneyVersion).decode


class MemoryJourneys:
    """Every version of every journey; the methods mirror ``Storage``'s journey methods."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], dict[int, bytes]] = {}
        """(workspace, journey id) -> version -> the encoded ``JourneyVersion``."""
        self.revision = 0

    def save(
        self,
        workspace_id: str,
        journey_id: str,
        definition: Any,
        now: datetime,
        create_only: bool,
    ) -> JourneyVersion:
        versions = self.versions(workspace_id, journey_id)
        if create_only and versions:
            raise JourneyAlreadyExists(workspace_id, journey_id)
        return self._store(save_draft(versions, workspace_id, journey_id, definition, now))

    def transition(
        self, workspace_id: str, journey_id: str, action: str, now: datetime
    ) -> tuple[list[JourneyVersion], list[ScheduledEvent]]:
        """Every version after ``action``, and the signal rows the caller stores with them."""
        versions = self.versions(workspace_id, journey_id)
        if not versions:
            raise JourneyNotFound(workspace_id, journey_id)
        changed = transition(versions, action, now)
        for version in changed:
            self._store(version)
        signals = signal_rows(action, changed, self.revision, now)
        return self.versions(workspace_id, journey_id), signals

    def versions(self, workspace_id: str, journey_id: str) -> list[JourneyVersion]:
        stored = self._versions.get((workspace_id, journey_id), {})
        return [_decode(stored[version]) for version in sorted(stored)]

    def version(self, workspace_id: str, journey_id: str, version: int) -> JourneyVersion | None:
        doc = self._versions.get((workspace_id, journey_id), {}).get(version)
        return None if doc is None else _decode(doc)

    def entry(self, workspace_id: str, journey_id: str) -> JourneyVersion | None:
        published = [v for v in self.versions(workspace_id, journey_id) if v.status == PUBLISHED]
        return published[-1] if published else None

    def listed(self, workspace_id: str, statuses: Collection[str] | None) -> list[JourneyVersion]:
        found: list[JourneyVersion] = []
        for ws, journey_id in sorted(self._versions):
            if ws == workspace_id:
                found += [
                    v
                    for v in self.versions(ws, journey_id)
                    if statuses is None or v.status in statuses
                ]
        return found

    def _store(self, version: JourneyVersion) -> JourneyVersion:
        doc = _encode(version)
        key = (version.workspace_id, version.journey_id)
        self._versions.setdefault(key, {})[version.version] = doc
        self.revision += 1
        return _decode(doc)
