"""The segment membership index in memory: the in-memory backend's members and history.

Consumer offsets belong to ``MemoryStorage`` (``commit_processing`` writes
them too), which passes its dict in: a membership commit records its
consumer's offset in the same dict, so there is one owner of each offset.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from rapport.storage.base import (
    MemberPage,
    MembershipBatch,
    SegmentChange,
    SegmentChangePage,
    SegmentMember,
)
from rapport.storage.membership_index import plan_memberships


class MemoryMemberships:
    """The membership-index methods of ``Storage``, over dicts."""

    def __init__(self, offsets: dict[str, int]) -> None:
        self._offsets = offsets
        """``MemoryStorage``'s consumer -> offset."""
        self._members: dict[tuple[str, str], dict[str, SegmentMember]] = {}
        """(workspace, segment id) -> profile id -> membership: the membership index."""
        self._changes: dict[tuple[str, int], SegmentChange] = {}
        """(workspace, log offset) -> the membership change that event recorded."""
        self._change_offsets: dict[tuple[str, str], list[int]] = {}
        """(workspace, profile) -> offsets of its membership changes, ascending."""

    def commit(self, batch: MembershipBatch) -> None:
        plan = plan_memberships(batch.changes, self._offsets.get(batch.consumer, 0))
        for change in plan.history:
            key = (change.workspace_id, change.offset)
            if key in self._changes:
                continue
            self._changes[key] = change
            offsets = self._change_offsets.setdefault((change.workspace_id, change.profile_id), [])
            bisect.insort(offsets, change.offset)
        for (ws, segment_id, profile_id), change in plan.final.items():
            members = self._members.setdefault((ws, segment_id), {})
            if change.entered:
                members[profile_id] = SegmentMember(
                    profile_id=profile_id, version=change.version, entered_at=change.at
                )
            else:
                members.pop(profile_id, None)
        self._offsets[batch.consumer] = max(self._offsets.get(batch.consumer, 0), batch.offset)

    def sizes(self, workspace_id: str, segment_ids: Sequence[str]) -> dict[str, int]:
        return {s: len(self._members.get((workspace_id, s), ())) for s in segment_ids}

    def members(
        self, workspace_id: str, segment_id: str, limit: int, after: str | None
    ) -> MemberPage:
        members = self._members.get((workspace_id, segment_id), {})
        # Byte order, as the SQL backends sort profile ids.
        ids = sorted(
            (p for p in members if after is None or p.encode() > after.encode()),
            key=str.encode,
        )
        page = ids[: max(limit, 0)]
        next_after = page[-1] if page and len(ids) > len(page) else None
        return MemberPage([members[p] for p in page], next_after)

    def history(
        self, workspace_id: str, profile_ids: Sequence[str], limit: int, before: int | None
    ) -> SegmentChangePage:
        offsets = sorted(
            (
                offset
                for profile_id in dict.fromkeys(profile_ids)
                for offset in self._change_offsets.get((workspace_id, profile_id), ())
                if before is None or offset < before
            ),
            reverse=True,
        )
        page = offsets[: max(limit, 0)]
        next_before = page[-1] if page and len(offsets) > len(page) else None
        changes = [self._changes[(workspace_id, offset)] for offset in page]
        return SegmentChangePage(changes, next_before)
