"""The two small interfaces every backend implements: ``Storage`` and ``EventLog``.

``EventLog`` is the durable, ordered, deduplicating log that ingest appends to
and processing reads from. ``Storage`` holds everything else: workspaces and
keys, rejections, the identity graph, profiles and their timelines.

The same contract suite (``tests/contract``) runs unchanged over every
implementation. Implementations live one per module: ``sqlite.py``,
``postgres.py``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import datetime

import msgspec

from rapport.core.model import (
    Event,
    Identifier,
    LogEntry,
    MergeRecord,
    Profile,
    ProfileEvent,
    Rejection,
)
from rapport.core.segments import SegmentAlreadyExists, SegmentDefinition, SegmentDraft

__all__ = [
    "ApiKey",
    "EventLog",
    "EventPage",
    "ProcessingBatch",
    "SegmentAlreadyExists",
    "SegmentDefinition",
    "SegmentDraft",
    "Storage",
    "Workspace",
]

KeyKind = str  # "write" | "secret"


class Workspace(msgspec.Struct, frozen=True):
    id: str
    name: str
    created_at: datetime


class ApiKey(msgspec.Struct, frozen=True):
    """A stored key. Only the SHA-256 hash of the secret is kept."""

    id: str
    workspace_id: str
    kind: KeyKind
    key_hash: str
    created_at: datetime
    name: str | None = None
    revoked_at: datetime | None = None


class ProcessingBatch(msgspec.Struct, kw_only=True):
    """Everything one processing step changes, committed in ONE transaction.

    The storage applies, in this order: ``events`` inserted; ``identifiers``
    upserted (an identifier moving to another profile is just an upsert);
    ``merges`` recorded, each moving the loser's timeline AND every identifier
    still owned by the loser to the winner, and deleting the loser's profile
    row while keeping a redirect so lookups by the loser's id still resolve;
    ``profiles`` upserted; finally the consumer's offset set to ``offset``.
    Replaying a batch is harmless: every write is an upsert keyed by natural
    keys.
    """

    consumer: str
    offset: int
    profiles: list[Profile] = []
    identifiers: list[tuple[str, Identifier, str]] = []
    """``(workspace_id, identifier, profile_id)``."""
    merges: list[MergeRecord] = []
    events: list[ProfileEvent] = []


class EventPage(msgspec.Struct):
    events: list[ProfileEvent]
    next_before: int | None
    """Pass as ``before`` to get the next (older) page; ``None`` when done."""


class EventLog(abc.ABC):
    """Durable, ordered log of accepted events, deduplicated by message id."""

    @abc.abstractmethod
    async def append(self, events: Sequence[Event]) -> list[bool]:
        """Append events; return, per event, True if new, False if a duplicate.

        A duplicate is an event whose ``(workspace_id, message_id)`` was
        appended before (within the dedup window, at least 7 days), or earlier
        in the same call. When this returns, the new events are durable.
        """

    @abc.abstractmethod
    async def read(self, after: int, limit: int) -> list[LogEntry]:
        """Entries with offset > ``after``, in offset order, at most ``limit``."""

    @abc.abstractmethod
    async def end_offset(self) -> int:
        """Offset of the newest entry (0 when empty)."""

    @abc.abstractmethod
    async def prune_dedup(self, older_than: datetime) -> int:
        """Forget message ids first seen before ``older_than``; return how many."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare connections/schema."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; pending appends are finished first."""


class Storage(abc.ABC):
    """Everything except the event log."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect and run migrations."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    # -- workspaces and keys -------------------------------------------------
    @abc.abstractmethod
    async def ensure_workspace(self, name: str, new_id: str, now: datetime) -> Workspace:
        """The workspace called ``name``, created with ``new_id`` if missing."""

    @abc.abstractmethod
    async def get_workspace(self, workspace_id: str) -> Workspace | None: ...

    @abc.abstractmethod
    async def create_api_key(self, key: ApiKey) -> None: ...

    @abc.abstractmethod
    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        """The non-revoked key with this hash, if any."""

    # -- rejections ----------------------------------------------------------
    @abc.abstractmethod
    async def record_rejections(self, rejections: Sequence[Rejection]) -> None: ...

    @abc.abstractmethod
    async def list_rejections(
        self, workspace_id: str, limit: int, before: int | None = None
    ) -> list[Rejection]:
        """Newest first; ``before`` is an id from a previous page."""

    # -- identity graph and profiles -----------------------------------------
    @abc.abstractmethod
    async def find_profile_ids(
        self, workspace_id: str, identifiers: Sequence[Identifier]
    ) -> dict[Identifier, str]:
        """Owner profile id of each identifier that is known."""

    @abc.abstractmethod
    async def load_profiles(self, workspace_id: str, ids: Sequence[str]) -> dict[str, Profile]:
        """Profiles by id (ids of merged-away profiles are not followed here)."""

    @abc.abstractmethod
    async def resolve_profile_id(self, workspace_id: str, profile_id: str) -> str | None:
        """The live profile id for ``profile_id``, following merges; None if unknown."""

    @abc.abstractmethod
    async def list_profile_events(
        self, workspace_id: str, profile_id: str, limit: int, before: int | None = None
    ) -> EventPage:
        """A profile's timeline newest first (by log offset), paged."""

    @abc.abstractmethod
    async def list_merges(self, workspace_id: str, profile_id: str) -> list[MergeRecord]:
        """Merges whose winner is ``profile_id``, oldest first."""

    # -- processing ----------------------------------------------------------
    @abc.abstractmethod
    async def commit_processing(self, batch: ProcessingBatch) -> None:
        """Apply a processing batch atomically (see ``ProcessingBatch``)."""

    @abc.abstractmethod
    async def consumer_offset(self, consumer: str) -> int:
        """Last committed offset of a consumer (0 if it never committed)."""

    # -- segment definitions -------------------------------------------------
    # See rapport.core.segments: every write stores the next version; deleting
    # stores a ``deleted`` tombstone, so versions of an id never repeat.
    @abc.abstractmethod
    async def put_segment(
        self, draft: SegmentDraft, now: datetime, *, create_only: bool = False
    ) -> SegmentDefinition:
        """Store ``draft`` as the next version of its id and return what was stored.

        With ``create_only``, raise ``SegmentAlreadyExists`` (storing nothing)
        if an active definition with this id exists.
        """

    @abc.abstractmethod
    async def get_segment(self, workspace_id: str, segment_id: str) -> SegmentDefinition | None:
        """The active definition with this id, if any (deleted ones are not returned)."""

    @abc.abstractmethod
    async def list_segments(
        self, workspace_id: str, *, include_deleted: bool = False
    ) -> list[SegmentDefinition]:
        """The workspace's definitions (latest version of each), ordered by id."""

    @abc.abstractmethod
    async def delete_segment(
        self, workspace_id: str, segment_id: str, now: datetime
    ) -> SegmentDefinition | None:
        """Store the tombstone of an active definition and return it; None if none is active."""

    @abc.abstractmethod
    async def segments_revision(self) -> int:
        """A number that grows with every segment write in any workspace (0 before any).

        Cheap to call: processors poll it to know when to reload definitions.
        """
