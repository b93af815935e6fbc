"""In-memory backend: a real ``Storage`` and ``EventLog`` that keep everything in dicts.

For fast tests and ephemeral runs (``RAPPORT_DATABASE_URL=memory://``). It
honours the same contract as the SQLite and PostgreSQL backends, including
atomic ``commit_processing``: every method finishes without awaiting, so
no other coroutine can observe a half-applied change. Mutable values are
encoded on the way in and decoded (or copied) on the way out, so callers
can never change stored state by mutating what they passed or received.
Nothing survives the process.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from rapport.core.backfill import COMPUTED_TRAIT, BackfillJob, start_backfill
from rapport.core.computed_traits.definitions import (
    ComputedTraitAlreadyExists,
    ComputedTraitDefinition,
    ComputedTraitDraft,
    deleted_computed_trait,
    next_computed_trait,
)
from rapport.core.journeys.instances import JourneyInstance
from rapport.core.journeys.lifecycle import JourneyVersion
from rapport.core.model import (
    Event,
    Identifier,
    LogEntry,
    MergeRecord,
    Profile,
    ProfileEvent,
    Rejection,
    ScheduledEvent,
)
from rapport.core.policy.document import PolicyDocument, StoredPolicy
from rapport.core.segments import deleted_definition, next_definition
from rapport.core.templates.definitions import TemplateDefinition, TemplateDraft
from rapport.storage.base import (
    ApiKey,
    EventLog,
    EventPage,
    MemberPage,
    MembershipBatch,
    ProcessingBatch,
    SegmentAlreadyExists,
    SegmentChange,
    SegmentChangePage,
    SegmentDefinition,
    SegmentDraft,
    SegmentMember,
    Storage,
    Workspace,
)
from rapport.storage.journey_runs import InstancePage, JourneyMetrics, OutboxMessage
from rapport.storage.membership_index import plan_memberships
from rapport.storage.memory_code_pools import MemoryCodePools
from rapport.storage.memory_inbox import MemoryInbox
from rapport.storage.memory_journey_runs import MemoryJourneyRuns
from rapport.storage.memory_journeys import MemoryJourneys
from rapport.storage.memory_policies import MemoryPolicies
from rapport.storage.memory_templates import MemoryTemplates
from rapport.storage.outbox import DEFAULT_LEASE, DeliveryAttempt, OutboxPage

# JSON rather than msgpack: msgpack timestamps drop the UTC offset, and the
# contract says an event's or profile's datetimes come back as they went in.
_ENCODER = msgspec.json.Encoder()
_EVENT_DECODER = msgspec.json.Decoder(Event)
_PROFILE_DECODER = msgspec.json.Decoder(Profile)


def open_memory() -> tuple[MemoryStorage, MemoryEventLog]:
    """A fresh, empty in-memory storage and event log."""
    return MemoryStorage(), MemoryEventLog()


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
        self._scheduled: dict[tuple[str, str], _ScheduledRow] = {}
        """(workspace, key) -> its row."""
        self._schedule: list[tuple[int, int, int, str, str]] = []
        """``_ScheduledRow.order`` of every row, ascending: the delivery order."""
        self._members: dict[tuple[str, str], dict[str, SegmentMember]] = {}
        """(workspace, segment id) -> profile id -> membership: the membership index."""
        self._segment_changes: dict[tuple[str, int], SegmentChange] = {}
        """(workspace, log offset) -> the membership change that event recorded."""
        self._change_offsets: dict[tuple[str, str], list[int]] = {}
        """(workspace, profile) -> offsets of its membership changes, ascending."""
        self._segments: dict[tuple[str, str], SegmentDefinition] = {}
        """(workspace, segment id) -> latest version (frozen, so shared safely)."""
        self._segments_revision = 0
        self._computed_traits: dict[tuple[str, str], ComputedTraitDefinition] = {}
        """(workspace, trait id) -> latest version."""
        self._computed_traits_revision = 0
        self._backfills: dict[tuple[str, str], BackfillJob] = {}
        """(workspace, segment id) -> the job of its newest version (frozen)."""
        self._trait_backfills: dict[tuple[str, str], BackfillJob] = {}
        """(workspace, computed trait id) -> the job of its newest version (frozen)."""
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
        scheduled = _scheduled_rows(batch)
        runs = self._runs.prepare(batch)

        for event in events:
            self._put_event(event)
        for key, owner in identifiers:
            self._set_owner(key, owner)
        for merge in merges:
            self._apply_merge(merge)
        self._profiles.update(profiles)
        for cancelled in batch.unscheduled:
            self._unschedule(cancelled)
        for row in scheduled:
            self._unschedule(row.key)
            self._scheduled[row.key] = row
            bisect.insort(self._schedule, row.order)
        self._runs.apply(runs)
        self._offsets[batch.consumer] = batch.offset

    async def consumer_offset(self, consumer: str) -> int:
        return self._offsets.get(consumer, 0)

    # -- scheduled events ----------------------------------------------------
    async def due_scheduled(self, now: datetime, limit: int) -> list[ScheduledEvent]:
        end = bisect.bisect_right(self._schedule, (_micros(now), _LAST, _LAST))
        chosen = self._schedule[: min(end, max(limit, 0))]
        return [self._scheduled[(ws, key)].decoded() for *_, ws, key in chosen]

    async def next_scheduled_at(self) -> datetime | None:
        if not self._schedule:
            return None
        ws, key = self._schedule[0][3:]
        return self._scheduled[(ws, key)].due_at

    async def get_scheduled(self, workspace_id: str, key: str) -> ScheduledEvent | None:
        row = self._scheduled.get((workspace_id, key))
        return None if row is None else row.decoded()

    async def delete_scheduled(self, rows: Sequence[ScheduledEvent]) -> int:
        deleted = 0
        for wanted in rows:
            key = (wanted.workspace_id, wanted.key)
            row = self._scheduled.get(key)
            if row is not None and row.same(wanted):
                self._unschedule(key)
                deleted += 1
        return deleted

    def _unschedule(self, key: tuple[str, str]) -> None:
        row = self._scheduled.pop(key, None)
        if row is not None:
            index = bisect.bisect_left(self._schedule, row.order)
            del self._schedule[index]

    # -- segment definitions -------------------------------------------------
    async def put_segment(
        self, draft: SegmentDraft, now: datetime, *, create_only: bool = False
    ) -> SegmentDefinition:
        key = (draft.workspace_id, draft.id)
        previous = self._segments.get(key)
        if create_only and previous is not None and previous.active:
            raise SegmentAlreadyExists(draft.workspace_id, draft.id)
        # A round trip through JSON: the caller's condition tree is copied,
        # and what is stored is what the SQL backends would give back.
        stored = _SEGMENT_DECODER.decode(_ENCODER.encode(next_definition(previous, draft, now)))
        self._segments[key] = stored
        self._segments_revision += 1
        self._start_backfill(stored)
        return _copy_segment(stored)

    async def get_segment(self, workspace_id: str, segment_id: str) -> SegmentDefinition | None:
        found = self._segments.get((workspace_id, segment_id))
        return _copy_segment(found) if found is not None and found.active else None

    async def list_segments(
        self, workspace_id: str, *, include_deleted: bool = False
    ) -> list[SegmentDefinition]:
        return [
            _copy_segment(definition)
            for (ws, _), definition in sorted(self._segments.items())
            if ws == workspace_id and (include_deleted or definition.active)
        ]

    async def delete_segment(
        self, workspace_id: str, segment_id: str, now: datetime
    ) -> SegmentDefinition | None:
        previous = self._segments.get((workspace_id, segment_id))
        if previous is None or not previous.active:
            return None
        tombstone = deleted_definition(previous, now)
        self._segments[(workspace_id, segment_id)] = tombstone
        self._segments_revision += 1
        self._start_backfill(tombstone)
        return _copy_segment(tombstone)

    def _start_backfill(self, definition: SegmentDefinition) -> None:
        """Every definition write starts the walk of the profiles for its version."""
        ws = definition.workspace_id
        total = sum(1 for (profile_ws, _) in self._profiles if profile_ws == ws)
        job = start_backfill(ws, definition.id, definition.version, total, definition.updated_at)
        self._backfills[(ws, definition.id)] = job

    async def segments_revision(self) -> int:
        return self._segments_revision

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
        key = (job.workspace_id, job.segment_id)
        jobs = self._trait_backfills if job.kind == COMPUTED_TRAIT else self._backfills
        stored = jobs.get(key)
        if stored is not None and stored.version > job.version:
            return False
        jobs[key] = job
        return True

    async def get_backfill(self, workspace_id: str, segment_id: str) -> BackfillJob | None:
        return self._backfills.get((workspace_id, segment_id))

    async def get_computed_trait_backfill(
        self, workspace_id: str, trait_id: str
    ) -> BackfillJob | None:
        return self._trait_backfills.get((workspace_id, trait_id))

    async def running_backfills(self) -> list[BackfillJob]:
        jobs = [*self._backfills.values(), *self._trait_backfills.values()]
        running = [job for job in jobs if job.running]
        return sorted(running, key=lambda job: (job.started_at, job.workspace_id, job.segment_id))

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

    # -- segment membership index -------------------------------------------
    async def commit_memberships(self, batch: MembershipBatch) -> None:
        plan = plan_memberships(batch.changes, self._offsets.get(batch.consumer, 0))
        for change in plan.history:
            key = (change.workspace_id, change.offset)
            if key in self._segment_changes:
                continue
            self._segment_changes[key] = change
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

    async def segment_sizes(self, workspace_id: str, segment_ids: Sequence[str]) -> dict[str, int]:
        return {s: len(self._members.get((workspace_id, s), ())) for s in segment_ids}

    async def list_segment_members(
        self, workspace_id: str, segment_id: str, limit: int, after: str | None = None
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

    async def list_segment_history(
        self, workspace_id: str, profile_ids: Sequence[str], limit: int, before: int | None = None
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
        changes = [self._segment_changes[(workspace_id, offset)] for offset in page]
        return SegmentChangePage(changes, next_before)

    # -- computed-trait definitions ------------------------------------------
    async def put_computed_trait(
        self, draft: ComputedTraitDraft, now: datetime, *, create_only: bool = False
    ) -> ComputedTraitDefinition:
        key = (draft.workspace_id, draft.id)
        previous = self._computed_traits.get(key)
        if create_only and previous is not None and previous.active:
            raise ComputedTraitAlreadyExists(draft.workspace_id, draft.id)
        stored = next_computed_trait(previous, draft, now)
        # Through JSON both ways, as the SQL backends: nobody shares the compute tree.
        self._computed_traits[key] = _copy_computed_trait(stored)
        self._computed_traits_revision += 1
        total = await self.count_profiles(draft.workspace_id)
        self._trait_backfills[key] = start_backfill(
            draft.workspace_id, draft.id, stored.version, total, now, COMPUTED_TRAIT
        )
        return _copy_computed_trait(stored)

    async def get_computed_trait(
        self, workspace_id: str, trait_id: str
    ) -> ComputedTraitDefinition | None:
        found = self._computed_traits.get((workspace_id, trait_id))
        return _copy_computed_trait(found) if found is not None and found.active else None

    async def list_computed_traits(
        self, workspace_id: str, *, include_deleted: bool = False
    ) -> list[ComputedTraitDefinition]:
        return [
            _copy_computed_trait(definition)
            for (ws, _), definition in sorted(self._computed_traits.items())
            if ws == workspace_id and (include_deleted or definition.active)
        ]

    async def delete_computed_trait(
        self, workspace_id: str, trait_id: str, now: datetime
    ) -> ComputedTraitDefinition | None:
        previous = self._computed_traits.get((workspace_id, trait_id))
        if previous is None or not previous.active:
            return None
        tombstone = deleted_computed_trait(previous, now)
        self._computed_traits[(workspace_id, trait_id)] = tombstone
        self._computed_traits_revision += 1
        return _copy_computed_trait(tombstone)

    async def computed_traits_revision(self) -> int:
        return self._computed_traits_revision

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
        for row in _scheduled_rows(batch):
            self._unschedule(row.key)
            self._scheduled[row.key] = row
            bisect.insort(self._schedule, row.order)
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
            else _scheduled_rows(
                ProcessingBatch(consumer="rapport:delivery", offset=0, scheduled=[attempt.event])
            )
        )
        if not self._runs.outbox.record(attempt):
            return False
        for row in rows:  # the relay appends it to the log
            self._unschedule(row.key)
            self._scheduled[row.key] = row
            bisect.insort(self._schedule, row.order)
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


_SEGMENT_DECODER = msgspec.json.Decoder(SegmentDefinition)
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


def _scheduled_rows(batch: ProcessingBatch) -> list[_ScheduledRow]:
    """The batch's rows, encoded; the last of each key wins (as in the SQL backends)."""
    rows: dict[tuple[str, str], _ScheduledRow] = {}
    for index, row in enumerate(batch.scheduled):
        stored = _ScheduledRow(row, batch.offset, index)
        rows.pop(stored.key, None)
        rows[stored.key] = stored
    return list(rows.values())


def _copy_segment(definition: SegmentDefinition) -> SegmentDefinition:
    # The struct is frozen but its condition is a mutable tree.
    return _SEGMENT_DECODER.decode(_ENCODER.encode(definition))


_COMPUTED_TRAIT_DECODER = msgspec.json.Decoder(ComputedTraitDefinition)


def _copy_computed_trait(definition: ComputedTraitDefinition) -> ComputedTraitDefinition:
    return _COMPUTED_TRAIT_DECODER.decode(_ENCODER.encode(definition))
