"""What the admin API and the CLI share about journey definitions: saving and transitions.

Both surfaces accept the same documents and refuse the same ones, so the
rules live here once: a definition is validated in full before it is stored
(``InvalidJourney`` lists every error), and publishing checks what the
validator cannot know offline -- that the segments the journey reads exist
in the workspace (``UnknownSegments``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rapport.core.journeys import (
    PUBLISH,
    InvalidJourney,
    JourneyError,
    JourneyNotFound,
    JourneyVersion,
    check_journey,
    parse_journey,
    referenced_segments,
)
from rapport.core.journeys.lifecycle import draft_of
from rapport.storage.base import Storage


class UnknownSegments(Exception):
    """The journey reads segments that do not exist (yet) in its workspace."""

    def __init__(self, journey_id: str, segments: list[str]) -> None:
        super().__init__(
            f"journey {journey_id!r} reads segments that do not exist: {', '.join(segments)}"
            " (create them first)"
        )
        self.segments = segments


def check_document(document: Any, journey_id: str | None = None) -> str:
    """The journey id of a valid ``document``; ``InvalidJourney`` otherwise.

    ``journey_id`` (from a URL) fills in a missing ``id`` and must match a given one.
    """
    if journey_id is not None and isinstance(document, dict):
        given = document.setdefault("id", journey_id)
        if given != journey_id:
            raise InvalidJourney(
                [
                    JourneyError(
                        "$.id", f"the id {given!r} differs from the one addressed, {journey_id!r}"
                    )
                ]
            )
    check_journey(document)
    return str(document["id"])


async def save_definition(
    storage: Storage,
    workspace_id: str,
    document: Any,
    now: datetime,
    *,
    journey_id: str | None = None,
    create_only: bool = False,
) -> tuple[JourneyVersion, bool]:
    """Validate and store ``document`` as its journey's draft: ``(stored, created)``.

    ``created`` is True when the journey had no version before.
    """
    resolved = check_document(document, journey_id)
    existed = bool(await storage.journey_versions(workspace_id, resolved))
    stored = await storage.save_journey(
        workspace_id, resolved, document, now, create_only=create_only
    )
    return stored, not existed


async def apply_action(
    storage: Storage, workspace_id: str, journey_id: str, action: str, now: datetime
) -> list[JourneyVersion]:
    """Apply a lifecycle action; publishing first checks the draft's segment references.

    A publish or a resume stores its signal in the same transaction as the
    new status (``storage.journey_signals``); the relay delivers it to the
    journey-trigger consumer (``journey_triggers``), which sets up the
    version's schedules and date triggers and resumes paused instances
    (``on_resume``), also after a crash right after the transition. Callers
    in the serving process wake the relay (``Relay.notify``) so it goes at once.
    """
    return await _transition(storage, workspace_id, journey_id, action, now)


async def _transition(
    storage: Storage, workspace_id: str, journey_id: str, action: str, now: datetime
) -> list[JourneyVersion]:
    if action == PUBLISH:
        versions = await storage.journey_versions(workspace_id, journey_id)
        if not versions:
            raise JourneyNotFound(workspace_id, journey_id)
        draft = draft_of(versions)
        if draft is not None:
            needed = referenced_segments(parse_journey(draft.definition))
            if needed:
                known = {s.id for s in await storage.list_segments(workspace_id)}
                missing = sorted(needed - known)
                if missing:
                    raise UnknownSegments(journey_id, missing)
    return await storage.transition_journey(workspace_id, journey_id, action, now)
