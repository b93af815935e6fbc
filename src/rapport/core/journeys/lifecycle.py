"""Journey versions and their lifecycle: draft -> published -> paused -> archived.

Every version of a journey is kept: instances refer to the version they
entered on, and finish on it. Each version has a status:

``draft``
    Being written: its document may still change (saving again replaces it,
    same version number), nothing runs on it. At most one per journey, and
    only as its newest version.
``published``
    Runs. The newest published version takes the new entries; older
    published versions take none but keep running the instances that
    entered on them, until those end ("in-flight instances finish on the
    version they started on").
``paused``
    Takes no entries, and its instances do not advance: due steps wait
    until the journey is resumed (then a message that waited longer than
    the journey's ``hold.max_age`` is dropped as stale, as a held one is).
``archived``
    Final. Takes no entries; its instances exit (reason ``archived``) at
    their next timer or event, sending nothing more.

Operations act on the journey as a whole:

============ ================================================ ========================
operation    allowed when                                     effect
============ ================================================ ========================
save         always                                           replaces the draft, or
                                                              adds version N+1 as a draft
publish      the newest version is a draft and no version     draft -> published
             is paused
pause        some version is published                        published -> paused (all)
resume       some version is paused                           paused -> published (all)
archive      some version is not archived                     every version -> archived
============ ================================================ ========================

Anything else is an ``IllegalTransition`` (409 over HTTP). Saving after an
archive starts the journey again from a new draft (archived versions stay
archived).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import msgspec

DRAFT: Final = "draft"
PUBLISHED: Final = "published"
PAUSED: Final = "paused"
ARCHIVED: Final = "archived"
STATUSES: Final = (DRAFT, PUBLISHED, PAUSED, ARCHIVED)

PUBLISH: Final = "publish"
PAUSE: Final = "pause"
RESUME: Final = "resume"
ARCHIVE: Final = "archive"
ACTIONS: Final = (PUBLISH, PAUSE, RESUME, ARCHIVE)

RUNNING: Final = frozenset((PUBLISHED, PAUSED))
"""Statuses whose instances the runtime keeps (paused ones do not advance)."""


class JourneyVersion(msgspec.Struct, frozen=True, kw_only=True):
    """One stored version of a journey."""

    workspace_id: str
    journey_id: str
    version: int
    status: str
    definition: Any
    """The validated document as written (JSON); ``build.parse_journey`` reads it."""
    created_at: datetime
    updated_at: datetime
    """Last change of the document (while a draft) or of the status."""
    published_at: datetime | None = None
    """When it was first published; None for a version never published."""

    @property
    def name(self) -> str:
        return str(self.definition.get("name", self.journey_id))


class JourneyAlreadyExists(Exception):
    """A create-only save found versions of this journey."""

    def __init__(self, workspace_id: str, journey_id: str) -> None:
        super().__init__(f"journey {journey_id!r} already exists")
        self.workspace_id = workspace_id
        self.journey_id = journey_id


class JourneyNotFound(LookupError):
    def __init__(self, workspace_id: str, journey_id: str) -> None:
        super().__init__(f"no journey {journey_id!r}")
        self.workspace_id = workspace_id
        self.journey_id = journey_id


class IllegalTransition(Exception):
    """An operation the journey's current state does not allow."""

    def __init__(self, journey_id: str, action: str, state: str, reason: str) -> None:
        super().__init__(f"cannot {action} journey {journey_id!r} ({state}): {reason}")
        self.journey_id = journey_id
        self.action = action
        self.state = state
        self.reason = reason


def journey_state(versions: Sequence[JourneyVersion]) -> str:
    """One word for the journey: ``paused``, ``live``, ``draft`` or ``archived``.

    ``live``: some version is published (and none paused); ``draft``: only a
    draft (besides archived versions) exists.
    """
    statuses = {version.status for version in versions}
    if PAUSED in statuses:
        return "paused"
    if PUBLISHED in statuses:
        return "live"
    if DRAFT in statuses:
        return "draft"
    return "archived"


def entry_version(versions: Sequence[JourneyVersion]) -> JourneyVersion | None:
    """The version new entries go to: the newest published one (None when paused or none)."""
    published = [v for v in versions if v.status == PUBLISHED]
    return max(published, key=lambda v: v.version) if published else None


def draft_of(versions: Sequence[JourneyVersion]) -> JourneyVersion | None:
    newest = max(versions, key=lambda v: v.version, default=None)
    return newest if newest is not None and newest.status == DRAFT else None


def save_draft(
    versions: Sequence[JourneyVersion],
    workspace_id: str,
    journey_id: str,
    definition: Any,
    now: datetime,
) -> JourneyVersion:
    """The version that saving ``definition`` stores: the draft replaced, or a new draft."""
    draft = draft_of(versions)
    if draft is not None:
        return msgspec.structs.replace(draft, definition=definition, updated_at=now)
    return JourneyVersion(
        workspace_id=workspace_id,
        journey_id=journey_id,
        version=max((v.version for v in versions), default=0) + 1,
        status=DRAFT,
        definition=definition,
        created_at=now,
        updated_at=now,
    )


def transition(
    versions: Sequence[JourneyVersion], action: str, now: datetime
) -> list[JourneyVersion]:
    """The versions ``action`` changes, changed; ``IllegalTransition`` if not allowed."""
    if not versions:
        raise ValueError("a journey has at least one version")
    journey_id = versions[0].journey_id
    state = journey_state(versions)

    def refuse(reason: str) -> IllegalTransition:
        return IllegalTransition(journey_id, action, state, reason)

    def moved(source: frozenset[str], status: str) -> list[JourneyVersion]:
        return [
            msgspec.structs.replace(v, status=status, updated_at=now)
            for v in versions
            if v.status in source
        ]

    if action == PUBLISH:
        draft = draft_of(versions)
        if state == "paused":
            raise refuse("it is paused: resume it (or archive it) before publishing a version")
        if draft is None:
            raise refuse("there is no draft to publish: save a new version first")
        return [msgspec.structs.replace(draft, status=PUBLISHED, updated_at=now, published_at=now)]
    if action == PAUSE:
        if state != "live":
            raise refuse("only a published journey can be paused")
        return moved(frozenset((PUBLISHED,)), PAUSED)
    if action == RESUME:
        if state != "paused":
            raise refuse("only a paused journey can be resumed")
        return moved(frozenset((PAUSED,)), PUBLISHED)
    if action == ARCHIVE:
        if state == "archived":
            raise refuse("it is already archived")
        return moved(frozenset((DRAFT, PUBLISHED, PAUSED)), ARCHIVED)
    raise ValueError(f"unknown action {action!r} (expected one of: {', '.join(ACTIONS)})")
