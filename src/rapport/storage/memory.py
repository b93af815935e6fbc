"""In-memory backend: a real ``Storage`` and ``EventLog`` that keep everything in dicts.

For fast tests and ephemeral runs (``RAPPORT_DATABASE_URL=memory://``). It
honours the same contract as the SQLite and PostgreSQL backends, including
atomic ``commit_processing``: every method finishes without awaiting, so
no other coroutine can observe a half-applied change. Mutable values are
encoded on the way in and decoded (or copied) on the way out, so callers
can never change stored state by mutating what they passed or received.
Nothing survives the process.

Other areas live in ``memory_*`` modules it delegates to; a dict two areas
use (profiles, consumer offsets) has one owner, ``MemoryStorage``, passed in.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from rapport.core.backfill import BackfillJob
from rapport.core.computed_traits.definitions import ComputedTraitDefinition, ComputedTraitDraft
from rapport.core.journeys.instances import JourneyInstance
from rapport.core.journeys.lifecycle import JourneyVersion
from rapport.core.model import (
    Identifier,
    MergeRecord,
    Profile,
    ProfileEvent,
    Rejection,
    ScheduledEvent,
)
from rapport.core.policy.document import PolicyDocument, StoredPolicy
from rapport.core.templates.definitions import TemplateDefinition, TemplateDraft
from rapport.storage.base import (
    ApiKey,
    EventPage,
    MemberPage,
    MembershipBatch,
    ProcessingBatch,
    SegmentChangePage,
    SegmentDefinition,
    SegmentDraft,
    Storage,
    Workspace,
)
from rapport.storage.journey_runs import InstancePage, JourneyMetrics, OutboxMessage
from rapport.storage.memory_code_pools import MemoryCodePools
from rapport.storage.memory_eventlog import MemoryEventLog
from rapport.storage.memory_inbox import MemoryInbox
from rapport.storage.memory_journey_runs import MemoryJourneyRuns
from rapport.storage.memory_journeys import MemoryJourneys
from rapport.storage.memory_memberships import MemoryMemberships
from rapport.storage.memory_policies import MemoryPolicies
from rapport.storage.memory_scheduled import MemoryScheduled
from rapport.storage.memory_segments import MemorySegments
from rapport.storage.memory_templates import MemoryTemplates
from rapport.storage.outbox import DEFAULT_LEASE, DeliveryAttempt, OutboxPage

__all__ = ["MemoryEventLog", "MemoryStorage", "open_memory"]

# JSON rather than msgpack: msgpack timestamps drop the UTC offset, and the
# contract says an event's or profile's datetimes come back as they went in.
_ENCODER = msgspec.json.Encoder()
_PROFILE_DECODER = msgspec.json.Decoder(Profile)


def open_memory() -> tuple[MemoryStorage, MemoryEventLog]:
    """A fresh, empty in-memory storage and event log."""
    return MemoryStorage(), MemoryEventLog()


class MemoryStorage(Storage):
    """Workspaces, keys, rejections, identity graph, profiles and timelines in dicts."""

    def __init__(self) -> None:
        self._workspaces: dict[str, Workspace] = {}
        self._workspace_by_name: dict[str, str] = {}
        self._keys: dict[str, ApiKey] = {}
        self._key_by_hash: dict[str, str] = {}
        self._rejections: dict[str, list[Rejection]] = {}
        """Per workspace, oldest first; ids are global and increasing."""
        self._rejection_seq = 0
        self._owners: dict[tuple[str, Identifier], str] = {}
        self._owned: dict[tuple[str, str], set[Identifier]] = {}
        """(workspace, profile) -> its identifiers: the reverse of ``_owners``."""
        self._profiles: dict[tuple[str, str], bytes] = {}
        self._merges: dict[tuple[str, str], MergeRecord] = {}
        """(workspace, loser) -> the merge; doubles as the redirect of the loser's id."""
        self._merges_by_winner: dict[tuple[str, str], list[str]] = {}
        self._events: dict[tuple[str, int], ProfileEvent] = {}
        self._timelines: dict[tuple[str, str], list[int]] = {}
        """(workspace, profile) -> log offsets of its events, ascending."""
        self._offsets: dict[str, int] = {}
        self._schedule = MemoryScheduled()
        self._memberships = MemoryMemberships(self._offsets)
        self._segments = MemorySegments(self._profiles)
        self._journeys = MemoryJourneys()
        self._templates = MemoryTemplates()
        self._policies = MemoryPolicies()
        self._runs = MemoryJourneyRuns()
        self._code_pools = MemoryCodePools()
        self._inbox = MemoryInbox()

    @property
    def code_pools(self) -> MemoryCodePools:
        return self._code_pools

    @property
    def inbox(self) -> MemoryInbox:
        return self._inbox

    # -- workspaces and keys -------------------------------------------------
    async def ensure_workspace(self, name: str, new_id: str, now: datetime) -> Workspace:
        existing = self._workspace_by_name.get(name)
        if existing is not None:
            return self._workspaces[existing]
        if new_id in self._workspaces:
            raise ValueError(f"workspace id {new_id!r} is already used")
        workspace = Workspace(id=new_id, name=name, created_at=now)
        self._workspaces[new_id] = workspace
        self._workspace_by_name[name] = new_id
        return workspace

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        return self._workspaces.get(workspace_id)

    async def find_workspace(self, name: str) -> Workspace | None:
        workspace_id = self._workspace_by_name.get(name)
        return None if workspace_id is None else self._workspaces[workspace_id]

    async def create_api_key(self, key: ApiKey) -> None:
        if key.id in self._keys:
            raise ValueError(f"api key id {key.id!r} is already used")
        if key.key_hash in self._key_by_hash:
            raise ValueError("an api key with this hash already exists")
        self._keys[key.id] = key
        self._key_by_hash[key.key_hash] = key.id

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        key_id = self._key_by_hash.get(key_hash)
        if key_id is None:
            return None
        key = self._keys[key_id]
        return key if key.revoked_at is None else None

    # -- rejections ----------------------------------------------------------
    async def record_rejections(self, rejections: Sequence[Rejection]) -> None:
        for rejection in rejections:
            self._rejection_seq += 1
            stored = msgspec.structs.replace(rejection, id=self._rejection_seq)
            self._rejections.setdefault(rejection.workspace_id, []).append(stored)

    async def list_rejections(
        self, workspace_id: str, limit: int, before: int | None = None
    ) -> list[Rejection]:
        rows = self._rejections.get(workspace_id, [])
        end = len(rows)
        if before is not None:
            end = bisect.bisect_left(rows, before, key=lambda r: r.id or 0)
        start = max(0, end - max(limit, 0))
        return [msgspec.structs.replace(r) for r in reversed(rows[start:end])]

    # -- identity graph and profiles -----------------------------------------
    async def find_profile_ids(
        self, workspace_id: str, identifiers: Sequence[Identifier]
    ) -> dict[Identifier, str]:
        found: dict[Identifier, str] = {}
        for identifier in identifiers:
            owner = self._owners.get((workspace_id, identifier))
            if owner is not None:
                found[identifier] = owner
        return found

    async def load_profiles(self, workspace_id: str, ids: Sequence[str]) -> dict[str, Profile]:
        found: dict[str, Profile] = {}
        for profile_id in ids:
            body = self._profiles.get((workspace_id, profile_id))
            if body is not None:
                found[profile_id] = _PROFILE_DECODER.decode(body)
        return found

    async def existing_profile_ids(self, workspace_id: str, ids: Sequence[str]) -> set[str]:
        return {profile_id for profile_id in ids if (workspace_id, profile_id) in self._profiles}

    async def resolve_profile_id(self, workspace_id: str, profile_id: str) -> str | None:
        current = profile_id
        visited: set[str] = set()
        while (workspace_id, current) not in self._profiles:
            merge = self._merges.get((workspace_id, current))
            if merge is None or current in visited:
                return None
            visited.add(current)
            current = merge.winner
        return current

    async def list_profile_events(
        self, workspace_id: str, profile_id: str, limit: int, before: int | None = None
    ) -> EventPage:
        offsets = self._timelines.get((workspace_id, profile_id), [])
        end = len(offsets) if before is None else bisect.bisect_left(offsets, before)
        start = max(0, end - max(limit, 0))
        page = offsets[start:end]
        events = [
            msgspec.structs.replace(self._events[(workspace_id, offset)])
            for offset in reversed(page)
        ]
        next_before = page[0] if page and start > 0 else None
        return EventPage(events=events, next_before=next_before)

    async def list_merges(self, workspace_id: str, profile_id: str) -> list[MergeRecord]:
        losers = self._merges_by_winner.get((workspace_id, profile_id), [])
        records = [self._merges[(workspace_id, loser)] for loser in losers]
        # Stable sort: equal merged_at keep the order they were recorded in.
        records.sort(key=lambda m: m.merged_at)
        return [msgspec.structs.replace(m) for m in records]

    # -- processing ----------------------------------------------------------
    async def commit_processing(self, batch: ProcessingBatch) -> None:
        # Copy and encode the whole batch first: if anything in it cannot be
        # stored, nothing is applied.
        events = [msgspec.structs.replace(e) for e in batch.events]
        merges = [msgspec.structs.replace(m) for m in batch.merges]
        profiles = [((p.workspace_id, p.id), _ENCODER.encode(p)) for p in batch.profiles]
        identifiers = [((ws, ident), owner) for ws, ident, owner in batch.identifiers]
        for merge in merges:
            if merge.winner == merge.loser:
                raise ValueError(f"profile {merge.loser} cannot merge into itself")
        scheduled = self._schedule.prepare(batch)
        runs = self._runs.prepare(batch)

        for event in events:
            self._put_event(event)
        for key, owner in identifiers:
            self._set_owner(key, owner)
        for merge in merges:
            self._apply_merge(merge)
        self._profiles.update(profiles)
        for cancelled in batch.unscheduled:
            self._schedule.cancel(cancelled)
        self._schedule.put(scheduled)
        self._runs.apply(runs)
        self._offsets[batch.consumer] = batch.offset

    async def consumer_offset(self, consumer: str) -> int:
        return self._offsets.get(consumer, 0)

    # -- scheduled events (memory_scheduled) -------------------------------
    async def due_scheduled(self, now: datetime, limit: int) -> list[ScheduledEvent]:
        return self._schedule.due(now, limit)

    async def next_scheduled_at(self) -> datetime | None:
        return self._schedule.next_at()

    async def get_scheduled(self, workspace_id: str, key: str) -> ScheduledEvent | None:
        return self._schedule.get(workspace_id, key)

    async def delete_scheduled(self, rows: Sequence[ScheduledEvent]) -> int:
        return self._schedule.delete(rows)

    # -- segment definitions (memory_segments) -------------------------------
    async def put_segment(
        self, draft: SegmentDraft, now: datetime, *, create_only: bool = False
    ) -> SegmentDefinition:
        return self._segments.put_segment(draft, now, create_only)

    async def get_segment(self, workspace_id: str, segment_id: str) -> SegmentDefinition | None:
        return self._segments.get_segment(workspace_id, segment_id)

    async def list_segments(
        self, workspace_id: str, *, include_deleted: bool = False
    ) -> list[SegmentDefinition]:
        return self._segments.list_segments(workspace_id, include_deleted)

    async def delete_segment(
        self, workspace_id: str, segment_id: str, now: datetime
    ) -> SegmentDefinition | None:
        return self._segments.delete_segment(workspace_id, segment_id, now)

    async def segments_revision(self) -> int:
        return self._segments.segments_revision

    # -- segment backfills ---------------------------------------------------
    async def scan_profiles(
        self, workspace_id: str, after_id: str | None, limit: int
    ) -> list[Profile]:
        ids = sorted(
            pid
            for (ws, pid) in self._profiles
            if ws == workspace_id and (after_id is None or pid > after_id)
        )
        return [
            _PROFILE_DECODER.decode(self._profiles[(workspace_id, pid)])
            for pid in ids[: max(limit, 0)]
        ]

    async def count_profiles(self, workspace_id: str) -> int:
        return sum(1 for (ws, _) in self._profiles if ws == workspace_id)

    async def put_backfill(self, job: BackfillJob) -> bool:
        return self._segments.put_backfill(job)

    async def get_backfill(self, workspace_id: str, segment_id: str) -> BackfillJob | None:
        return self._segments.get_backfill(workspace_id, segment_id)

    async def get_computed_trait_backfill(
        self, workspace_id: str, trait_id: str
    ) -> BackfillJob | None:
        return self._segments.get_computed_trait_backfill(workspace_id, trait_id)

    async def running_backfills(self) -> list[BackfillJob]:
        return self._segments.running_backfills()

    async def timeline_events(
        self,
        workspace_id: str,
        profile_ids: Sequence[str],
        names: Sequence[str] | None,
        since: datetime | None,
    ) -> list[ProfileEvent]:
        wanted = None if names is None else set(names)
        offsets = sorted(
            offset
            for profile_id in set(profile_ids)
            for offset in self._timelines.get((workspace_id, profile_id), ())
        )
        found = []
        for offset in offsets:
            event = self._events[(workspace_id, offset)]
            if (wanted is None or event.name in wanted) and (
                since is None or event.timestamp >= since
            ):
                found.append(msgspec.structs.replace(event))
        return found

    async def events_by_name(
        self,
        workspace_id: str,
        name: str,
        since: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[ProfileEvent]:
        found = sorted(
            (event.timestamp, offset)
            for (ws, offset), event in self._events.items()
            if ws == workspace_id
            and event.name == name
            and (since is None or event.timestamp >= since)
            and (after is None or (event.timestamp, offset) > after)
        )
        return [msgspec.structs.replace(self._events[(workspace_id, o)]) for _, o in found[:limit]]

    # -- segment membership index (memory_memberships) ----------------------
    async def commit_memberships(self, batch: MembershipBatch) -> None:
        self._memberships.commit(batch)

    async def segment_sizes(self, workspace_id: str, segment_ids: Sequence[str]) -> dict[str, int]:
        return self._memberships.sizes(workspace_id, segment_ids)

    async def list_segment_members(
        self, workspace_id: str, segment_id: str, limit: int, after: str | None = None
    ) -> MemberPage:
        return self._memberships.members(workspace_id, segment_id, limit, after)

    async def list_segment_history(
        self, workspace_id: str, profile_ids: Sequence[str], limit: int, before: int | None = None
    ) -> SegmentChangePage:
        return self._memberships.history(workspace_id, profile_ids, limit, before)

    # -- computed-trait definitions (memory_segments) ------------------------
    async def put_computed_trait(
        self, draft: ComputedTraitDraft, now: datetime, *, create_only: bool = False
    ) -> ComputedTraitDefinition:
        return self._segments.put_computed_trait(draft, now, create_only)

    async def get_computed_trait(
        self, workspace_id: str, trait_id: str
    ) -> ComputedTraitDefinition | None:
        return self._segments.get_computed_trait(workspace_id, trait_id)

    async def list_computed_traits(
        self, workspace_id: str, *, include_deleted: bool = False
    ) -> list[ComputedTraitDefinition]:
        return self._segments.list_computed_traits(workspace_id, include_deleted)

    async def delete_computed_trait(
        self, workspace_id: str, trait_id: str, now: datetime
    ) -> ComputedTraitDefinition | None:
        return self._segments.delete_computed_trait(workspace_id, trait_id, now)

    async def computed_traits_revision(self) -> int:
        return self._segments.computed_traits_revision

    # -- template definitions (memory_templates) -----------------------------
    async def put_template(
        self, draft: TemplateDraft, now: datetime, *, create_only: bool = False
    ) -> TemplateDefinition:
        return self._templates.put(draft, now, create_only)

    async def get_template(
        self, workspace_id: str, template_id: str, version: int | None = None
    ) -> TemplateDefinition | None:
        return self._templates.get(workspace_id, template_id, version)

    async def list_templates(self, workspace_id: str) -> list[TemplateDefinition]:
        return self._templates.listed(workspace_id)

    async def delete_template(
        self, workspace_id: str, template_id: str, now: datetime
    ) -> TemplateDefinition | None:
        return self._templates.delete(workspace_id, template_id, now)

    # -- workspace policies (memory_policies) ---------------------------------
    async def put_policy(
        self,
        workspace_id: str,
        document: PolicyDocument,
        now: datetime,
        *,
        expected_version: int | None = None,
    ) -> StoredPolicy:
        return self._policies.put(workspace_id, document, now, expected_version)

    async def get_policy(
        self, workspace_id: str, version: int | None = None
    ) -> StoredPolicy | None:
        return self._policies.get(workspace_id, version)

    async def policies_revision(self) -> int:
        return self._policies.revision

    # -- journey definitions (memory_journeys) -------------------------------
    async def save_journey(
        self,
        workspace_id: str,
        journey_id: str,
        definition: Any,
        now: datetime,
        *,
        create_only: bool = False,
    ) -> JourneyVersion:
        return self._journeys.save(workspace_id, journey_id, definition, now, create_only)

    async def transition_journey(
        self, workspace_id: str, journey_id: str, action: str, now: datetime
    ) -> list[JourneyVersion]:
        versions, signals = self._journeys.transition(workspace_id, journey_id, action, now)
        # Stored with the new status, as the SQL backends do (``journey_signals``).
        batch = ProcessingBatch(consumer="", offset=self._journeys.revision, scheduled=signals)
        self._schedule.put(self._schedule.prepare(batch))
        return versions

    async def journey_versions(self, workspace_id: str, journey_id: str) -> list[JourneyVersion]:
        return self._journeys.versions(workspace_id, journey_id)

    async def get_journey_version(
        self, workspace_id: str, journey_id: str, version: int
    ) -> JourneyVersion | None:
        return self._journeys.version(workspace_id, journey_id, version)

    async def entry_journey_version(
        self, workspace_id: str, journey_id: str
    ) -> JourneyVersion | None:
        return self._journeys.entry(workspace_id, journey_id)

    async def list_journey_versions(
        self, workspace_id: str, *, statuses: Collection[str] | None = None
    ) -> list[JourneyVersion]:
        return self._journeys.listed(workspace_id, statuses)

    async def journeys_revision(self) -> int:
        return self._journeys.revision

    # -- journey runs (memory_journey_runs) ----------------------------------
    async def load_journey_instances(
        self, workspace_id: str, profile_ids: Sequence[str]
    ) -> list[JourneyInstance]:
        return self._runs.load(workspace_id, profile_ids)

    async def get_journey_instance(
        self, workspace_id: str, instance_id: str
    ) -> JourneyInstance | None:
        return self._runs.get(workspace_id, instance_id)

    async def list_journey_instances(
        self,
        workspace_id: str,
        journey_id: str,
        limit: int,
        after: str | None = None,
        *,
        status: str | None = None,
    ) -> InstancePage:
        return self._runs.page(workspace_id, journey_id, limit, after, status)

    async def journey_instance_counts(self, workspace_id: str, journey_id: str) -> dict[str, int]:
        return self._runs.counts(workspace_id, journey_id)

    async def journey_metrics(self, workspace_id: str, journey_id: str) -> JourneyMetrics:
        return self._runs.metrics(workspace_id, journey_id)

    async def pending_outbox(self, limit: int, after: int = 0) -> list[OutboxMessage]:
        return self._runs.outbox.pending(limit, after)

    async def get_outbox(self, workspace_id: str, idempotency_key: str) -> OutboxMessage | None:
        return self._runs.outbox.get(workspace_id, idempotency_key)

    async def mark_outbox(
        self,
        workspace_id: str,
        idempotency_key: str,
        status: str,
        now: datetime,
        error: str | None = None,
    ) -> bool:
        return self._runs.outbox.mark(workspace_id, idempotency_key, status, now, error)

    # -- delivery (memory_outbox) ----------------------------------------------
    async def claim_due(
        self, now: datetime, limit: int, lease: timedelta = DEFAULT_LEASE
    ) -> list[OutboxMessage]:
        return self._runs.outbox.claim_due(now, limit, lease)

    async def next_outbox_at(self) -> datetime | None:
        return self._runs.outbox.next_due()

    async def record_attempt(self, attempt: DeliveryAttempt) -> bool:
        rows = (
            []
            if attempt.event is None
            else self._schedule.prepare(
                ProcessingBatch(consumer="rapport:delivery", offset=0, scheduled=[attempt.event])
            )
        )
        if not self._runs.outbox.record(attempt):
            return False
        self._schedule.put(rows)  # the relay appends it to the log
        return True

    async def list_dead(
        self, workspace_id: str, limit: int, after: int | None = None
    ) -> OutboxPage:
        return self._runs.outbox.list_dead(workspace_id, limit, after)

    async def replay_dead(
        self, workspace_id: str, idempotency_key: str, now: datetime
    ) -> OutboxMessage | None:
        return self._runs.outbox.replay_dead(workspace_id, idempotency_key, now)

    async def list_profile_messages(
        self, workspace_id: str, profile_id: str, limit: int, before: int | None = None
    ) -> OutboxPage:
        return self._runs.outbox.list_profile(workspace_id, profile_id, limit, before)

    # -- helpers -------------------------------------------------------------
    def _put_event(self, event: ProfileEvent) -> None:
        # Events are facts: a replay never rewrites one (a merge may have
        # moved it to another profile since), as in the SQL backends.
        key = (event.workspace_id, event.offset)
        if key in self._events:
            return
        self._events[key] = event
        timeline = self._timelines.setdefault((event.workspace_id, event.profile_id), [])
        if not timeline or timeline[-1] < event.offset:
            timeline.append(event.offset)
        else:
            bisect.insort(timeline, event.offset)

    def _set_owner(self, key: tuple[str, Identifier], owner: str) -> None:
        ws, identifier = key
        previous = self._owners.get(key)
        if previous == owner:
            return
        if previous is not None:
            self._owned[(ws, previous)].discard(identifier)
        self._owners[key] = owner
        self._owned.setdefault((ws, owner), set()).add(identifier)

    def _apply_merge(self, merge: MergeRecord) -> None:
        ws = merge.workspace_id
        if (ws, merge.loser) not in self._merges:
            self._merges[(ws, merge.loser)] = merge
            self._merges_by_winner.setdefault((ws, merge.winner), []).append(merge.loser)

        moved = self._timelines.pop((ws, merge.loser), [])
        if moved:
            for offset in moved:
                event = self._events[(ws, offset)]
                self._events[(ws, offset)] = msgspec.structs.replace(event, profile_id=merge.winner)
            timeline = self._timelines.setdefault((ws, merge.winner), [])
            timeline[:] = sorted({*timeline, *moved})
        # A merged-away profile owns nothing any more: identifiers the batch
        # did not already move follow it to its winner.
        for identifier in sorted(self._owned.get((ws, merge.loser), ())):
            self._set_owner((ws, identifier), merge.winner)
        self._owned.pop((ws, merge.loser), None)
        self._profiles.pop((ws, merge.loser), None)
