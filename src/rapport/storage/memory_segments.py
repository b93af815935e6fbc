"""Segment and computed-trait definitions in memory, with their backfill jobs.

Every definition write starts the backfill of its version (the walk of the
workspace's profiles), so the definitions and the jobs live together. The
profiles themselves belong to ``MemoryStorage``, which passes its dict in:
this part only counts them. Definitions go through JSON on the way in and
out, so nobody shares a condition or compute tree with what is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import msgspec

from rapport.core.backfill import COMPUTED_TRAIT, BackfillJob, start_backfill
from rapport.core.computed_traits.definitions import (
    ComputedTraitAlreadyExists,
    ComputedTraitDefinition,
    ComputedTraitDraft,
    deleted_computed_trait,
    next_computed_trait,
)
from rapport.core.segments import deleted_definition, next_definition
from rapport.storage.base import SegmentAlreadyExists, SegmentDefinition, SegmentDraft

_ENCODER = msgspec.json.Encoder()
_SEGMENT_DECODER = msgspec.json.Decoder(SegmentDefinition)
_COMPUTED_TRAIT_DECODER = msgspec.json.Decoder(ComputedTraitDefinition)


class MemorySegments:
    """The segment, computed-trait and backfill-job methods of ``Storage``, over dicts."""

    def __init__(self, profiles: Mapping[tuple[str, str], object]) -> None:
        self._profiles = profiles
        """``MemoryStorage``'s profiles, (workspace, profile id) -> encoded; read only here."""
        self._segments: dict[tuple[str, str], SegmentDefinition] = {}
        """(workspace, segment id) -> latest version (frozen, so shared safely)."""
        self.segments_revision = 0
        self._computed_traits: dict[tuple[str, str], ComputedTraitDefinition] = {}
        """(workspace, trait id) -> latest version."""
        self.computed_traits_revision = 0
        self._backfills: dict[tuple[str, str], BackfillJob] = {}
        """(workspace, segment id) -> the job of its newest version (frozen)."""
        self._trait_backfills: dict[tuple[str, str], BackfillJob] = {}
        """(workspace, computed trait id) -> the job of its newest version (frozen)."""

    # -- segment definitions -------------------------------------------------
    def put_segment(
        self, draft: SegmentDraft, now: datetime, create_only: bool
    ) -> SegmentDefinition:
        key = (draft.workspace_id, draft.id)
        previous = self._segments.get(key)
        if create_only and previous is not None and previous.active:
            raise SegmentAlreadyExists(draft.workspace_id, draft.id)
        # A round trip through JSON: the caller's condition tree is copied,
        # and what is stored is what the SQL backends would give back.
        stored = _SEGMENT_DECODER.decode(_ENCODER.encode(next_definition(previous, draft, now)))
        self._segments[key] = stored
        self.segments_revision += 1
        self._start_backfill(stored)
        return _copy_segment(stored)

    def get_segment(self, workspace_id: str, segment_id: str) -> SegmentDefinition | None:
        found = self._segments.get((workspace_id, segment_id))
        return _copy_segment(found) if found is not None and found.active else None

    def list_segments(self, workspace_id: str, include_deleted: bool) -> list[SegmentDefinition]:
        return [
            _copy_segment(definition)
            for (ws, _), definition in sorted(self._segments.items())
            if ws == workspace_id and (include_deleted or definition.active)
        ]

    def delete_segment(
        self, workspace_id: str, segment_id: str, now: datetime
    ) -> SegmentDefinition | None:
        previous = self._segments.get((workspace_id, segment_id))
        if previous is None or not previous.active:
            return None
        tombstone = deleted_definition(previous, now)
        self._segments[(workspace_id, segment_id)] = tombstone
        self.segments_revision += 1
        self._start_backfill(tombstone)
        return _copy_segment(tombstone)

    def _start_backfill(self, definition: SegmentDefinition) -> None:
        """Every definition write starts the walk of the profiles for its version."""
        ws = definition.workspace_id
        total = self._count_profiles(ws)
        job = start_backfill(ws, definition.id, definition.version, total, definition.updated_at)
        self._backfills[(ws, definition.id)] = job

    # -- backfill jobs -------------------------------------------------------
    def put_backfill(self, job: BackfillJob) -> bool:
        key = (job.workspace_id, job.segment_id)
        jobs = self._trait_backfills if job.kind == COMPUTED_TRAIT else self._backfills
        stored = jobs.get(key)
        if stored is not None and stored.version > job.version:
            return False
        jobs[key] = job
        return True

    def get_backfill(self, workspace_id: str, segment_id: str) -> BackfillJob | None:
        return self._backfills.get((workspace_id, segment_id))

    def get_computed_trait_backfill(self, workspace_id: str, trait_id: str) -> BackfillJob | None:
        return self._trait_backfills.get((workspace_id, trait_id))

    def running_backfills(self) -> list[BackfillJob]:
        jobs = [*self._backfills.values(), *self._trait_backfills.values()]
        running = [job for job in jobs if job.running]
        return sorted(running, key=lambda job: (job.started_at, job.workspace_id, job.segment_id))

    # -- computed-trait definitions ------------------------------------------
    def put_computed_trait(
        self, draft: ComputedTraitDraft, now: datetime, create_only: bool
    ) -> ComputedTraitDefinition:
        key = (draft.workspace_id, draft.id)
        previous = self._computed_traits.get(key)
        if create_only and previous is not None and previous.active:
            raise ComputedTraitAlreadyExists(draft.workspace_id, draft.id)
        stored = next_computed_trait(previous, draft, now)
        # Through JSON both ways, as the SQL backends: nobody shares the compute tree.
        self._computed_traits[key] = _copy_computed_trait(stored)
        self.computed_traits_revision += 1
        total = self._count_profiles(draft.workspace_id)
        self._trait_backfills[key] = start_backfill(
            draft.workspace_id, draft.id, stored.version, total, now, COMPUTED_TRAIT
        )
        return _copy_computed_trait(stored)

    def get_computed_trait(
        self, workspace_id: str, trait_id: str
    ) -> ComputedTraitDefinition | None:
        found = self._computed_traits.get((workspace_id, trait_id))
        return _copy_computed_trait(found) if found is not None and found.active else None

    def list_computed_traits(
        self, workspace_id: str, include_deleted: bool
    ) -> list[ComputedTraitDefinition]:
        return [
            _copy_computed_trait(definition)
            for (ws, _), definition in sorted(self._computed_traits.items())
            if ws == workspace_id and (include_deleted or definition.active)
        ]

    def delete_computed_trait(
        self, workspace_id: str, trait_id: str, now: datetime
    ) -> ComputedTraitDefinition | None:
        previous = self._computed_traits.get((workspace_id, trait_id))
        if previous is None or not previous.active:
            return None
        tombstone = deleted_computed_trait(previous, now)
        self._computed_traits[(workspace_id, trait_id)] = tombstone
        self.computed_traits_revision += 1
        return _copy_computed_trait(tombstone)

    def _count_profiles(self, workspace_id: str) -> int:
        return sum(1 for (ws, _) in self._profiles if ws == workspace_id)


def _copy_segment(definition: SegmentDefinition) -> SegmentDefinition:
    # The struct is frozen but its condition is a mutable tree.
    return _SEGMENT_DECODER.decode(_ENCODER.encode(definition))


def _copy_computed_trait(definition: ComputedTraitDefinition) -> ComputedTraitDefinition:
    return _COMPUTED_TRAIT_DECODER.decode(_ENCODER.encode(definition))
