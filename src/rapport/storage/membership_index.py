"""The records of the segment membership index, and how a batch of changes applies.

The index (kept by ``rapport.runtime.memberships``, its own consumer of the
event log) holds, per workspace and segment, the profiles that are members
now, a member count per segment, and a history row per ``Segment Entered`` /
``Segment Exited`` event. Every backend applies a ``MembershipBatch`` the
same way, with ``plan_memberships`` deciding what to write; only the SQL
differs.

Why a batch is safe to apply twice, or to apply after a later one: each
change carries the log offset of its event, and the batch commits, in the
same transaction, the consumer's offset. Changes at or below the committed
offset are already in the index and are left out. The rest set the final
state of each (workspace, segment, profile) they touch -- the last change
wins -- so the outcome does not depend on the index's earlier state, and
sizes move by what actually appeared or went away.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec

MemberKey = tuple[str, str, str]
"""``(workspace_id, segment_id, profile_id)``."""


class SegmentChange(msgspec.Struct, frozen=True, kw_only=True):
    """A profile entered or left a segment: one ``Segment Entered`` / ``Segment Exited`` event."""

    workspace_id: str
    offset: int
    """Log offset of the event; a change is stored once per offset."""
    profile_id: str
    segment_id: str
    version: int
    """The definition version the profile entered under (or left, for an exit)."""
    entered: bool
    at: datetime
    """When the processor recorded the change (the event's timestamp)."""

    @property
    def key(self) -> MemberKey:
        return (self.workspace_id, self.segment_id, self.profile_id)


class MembershipBatch(msgspec.Struct, kw_only=True):
    """What one step of the membership index commits, in ONE transaction.

    The storage reads the consumer's committed offset and leaves out the
    changes at or below it (already applied). For the others, in offset
    order: a history row per change is inserted (keyed by
    ``(workspace_id, offset)``); each (workspace, segment, profile) is set to
    its last change -- entered: a member since ``at`` under ``version``;
    exited: not a member; each segment's size moves by the members that
    appeared or went away. Finally the consumer's offset becomes ``offset``
    (it never moves backwards).
    """

    consumer: str
    offset: int
    changes: list[SegmentChange] = []


class SegmentMember(msgspec.Struct, frozen=True, kw_only=True):
    profile_id: str
    version: int
    entered_at: datetime


class MemberPage(msgspec.Struct):
    members: list[SegmentMember]
    """By profile id (byte order)."""
    next_after: str | None
    """Pass as ``after`` to get the next page; ``None`` when done."""


class SegmentChangePage(msgspec.Struct):
    changes: list[SegmentChange]
    """Newest first (by log offset)."""
    next_before: int | None
    """Pass as ``before`` to get the next (older) page; ``None`` when done."""


@dataclass(frozen=True)
class MembershipPlan:
    """What applying a batch writes, given the consumer's committed offset."""

    history: list[SegmentChange]
    """Changes not applied yet, in offset order."""
    final: dict[MemberKey, SegmentChange]
    """The last of those changes per member key."""

    @property
    def entering(self) -> list[SegmentChange]:
        return [change for change in self.final.values() if change.entered]

    @property
    def leaving(self) -> list[MemberKey]:
        return [key for key, change in self.final.items() if not change.entered]

    def size_deltas(self, existing: Collection[MemberKey]) -> dict[tuple[str, str], int]:
        """``(workspace_id, segment_id) -> change of size``, given the keys that are members now.

        Only segments whose size changes are listed.
        """
        deltas: dict[tuple[str, str], int] = {}
        for key, change in self.final.items():
            was_member = key in existing
            if change.entered == was_member:
                continue
            segment = (key[0], key[1])
            deltas[segment] = deltas.get(segment, 0) + (1 if change.entered else -1)
        return {segment: delta for segment, delta in deltas.items() if delta}


def plan_memberships(changes: Sequence[SegmentChange], committed: int) -> MembershipPlan:
    """The changes after ``committed`` (the consumer's stored offset), and their outcome."""
    pending = sorted((c for c in changes if c.offset > committed), key=lambda c: c.offset)
    history: list[SegmentChange] = []
    seen: set[tuple[str, int]] = set()
    final: dict[MemberKey, SegmentChange] = {}
    for change in pending:
        identity = (change.workspace_id, change.offset)
        if identity in seen:
            # One log entry is one change: a second copy adds nothing.
            continue
        seen.add(identity)
        history.append(change)
        final[change.key] = change
    return MembershipPlan(history, final)
