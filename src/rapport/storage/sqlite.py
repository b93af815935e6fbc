"""The embedded backend: ``Storage`` and ``EventLog`` on SQLite files in a data dir.

Two database files, each with its own writer thread (see ``sqlite_db``):
``events.db`` holds the event log and its dedup table (``sqlite_eventlog``),
``rapport.db`` holds everything else (here), so ingest appends and processing
commits never wait on one another's transactions. ``open_sqlite`` opens both.

Datetimes in columns are INTEGER microseconds since the epoch and come back
in UTC; documents (events, profiles) are msgspec JSON and keep the offsets
their datetimes were written with.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rapport.core.backfill import COMPUTED_TRAIT, BackfillJob
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
from rapport.storage import (
    sqlite_journey_runs,
    sqlite_journeys,
    sqlite_outbox,
    sqlite_policies,
    sqlite_profiles,
    sqlite_scheduled,
    sqlite_segments,
    sqlite_templates,
    sqlite_workspaces,
)
from rapport.storage.base import (
    ApiKey,
    EventPage,
    ProcessingBatch,
    SegmentDefinition,
    SegmentDraft,
    Storage,
    Workspace,
)
from rapport.storage.journey_runs import InstancePage, JourneyMetrics, OutboxMessage
from rapport.storage.membership_index import (
    MemberPage,
    MembershipBatch,
    SegmentChangePage,
)
from rapport.storage.migrations import dialect_directory, load_migrations
from rapport.storage.outbox import DEFAULT_LEASE, DeliveryAttempt, OutboxPage
from rapport.storage.sqlite_code_pools import SqliteCodePools
from rapport.storage.sqlite_computed_traits import (
    delete_trait_definition,
    get_trait_backfill,
    latest_trait_definition,
    list_trait_definitions,
    put_trait_backfill,
    put_trait_definition,
    running_trait_backfills,
    trait_definitions_revision,
)
from rapport.storage.sqlite_db import SqliteDatabase, from_micros, to_micros
from rapport.storage.sqlite_eventlog import SqliteEventLog
from rapport.storage.sqlite_inbox import SqliteInbox
from rapport.storage.sqlite_memberships import (
    PreparedMemberships,
    read_history,
    read_members,
    read_sizes,
)
from rapport.storage.sqlite_processing import PreparedBatch

__all__ = ["SqliteEventLog", "SqliteStorage", "open_sqlite"]

EVENTS_DB = "events.db"
RAPPORT_DB = "rapport.db"


async def open_sqlite(
    data_dir: Path, *, synchronous: str = "FULL"
) -> tuple[SqliteStorage, SqliteEventLog]:
    """Open (creating if needed) the storage and event log in ``data_dir``."""
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    storage = SqliteStorage(data_dir / RAPPORT_DB, synchronous=synchronous)
    event_log = SqliteEventLog(data_dir / EVENTS_DB, synchronous=synchronous)
    await storage.open()
    try:
        await event_log.open()
    except BaseException:
        await storage.close()
        raise
    return storage, event_log


# -- storage --------------------------------------------------------------------


class SqliteStorage(Storage):
    """Workspaces, keys, rejections, identity graph and profiles in ``rapport.db``."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        migrations = load_migrations(dialect_directory("sqlite"), prefix="rapport_")
        self._db = SqliteDatabase(path, migrations, synchronous=synchronous)
        self._code_pools = SqliteCodePools(self._db)
        self._inbox = SqliteInbox(self._db)
        self._relay_reads = sqlite_scheduled.ReadRows()

    @property
    def code_pools(self) -> SqliteCodePools:
        return self._code_pools

    @property
    def inbox(self) -> SqliteInbox:
        return self._inbox

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    # -- workspaces and keys (sqlite_workspaces) ------------------------------
    async def ensure_workspace(self, name: str, new_id: str, now: datetime) -> Workspace:
        created_at = to_micros(now)
        return await self._db.write(
            lambda conn: sqlite_workspaces.ensure_workspace(conn, name, new_id, created_at)
        )

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        return await self._db.read(lambda conn: sqlite_workspaces.get_workspace(conn, workspace_id))

    async def find_workspace(self, name: str) -> Workspace | None:
        return await self._db.read(lambda conn: sqlite_workspaces.find_workspace(conn, name))

    async def create_api_key(self, key: ApiKey) -> None:
        row = sqlite_workspaces.api_key_params(key)
        await self._db.write(lambda conn: sqlite_workspaces.create_api_key(conn, row))

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        return await self._db.read(lambda conn: sqlite_workspaces.find_api_key(conn, key_hash))

    # -- rejections (sqlite_workspaces) ----------------------------------------
    async def record_rejections(self, rejections: Sequence[Rejection]) -> None:
        if not rejections:
            return
        rows = [sqlite_workspaces.rejection_params(r) for r in rejections]
        await self._db.write(lambda conn: sqlite_workspaces.record_rejections(conn, rows))

    async def list_rejections(
        self, workspace_id: str, limit: int, before: int | None = None
    ) -> list[Rejection]:
        if limit <= 0:
            return []
        return await self._db.read(
            lambda conn: sqlite_workspaces.list_rejections(conn, workspace_id, limit, before)
        )

    # -- identity graph and profiles (sqlite_profiles) -----------------------
    async def find_profile_ids(
        self, workspace_id: str, identifiers: Sequence[Identifier]
    ) -> dict[Identifier, str]:
        if not identifiers:
            return {}
        wanted = list(identifiers)
        return await self._db.read(
            lambda conn: sqlite_profiles.find_profile_ids(conn, workspace_id, wanted)
        )

    async def load_profiles(self, workspace_id: str, ids: Sequence[str]) -> dict[str, Profile]:
        if not ids:
            return {}
        wanted = sqlite_profiles.encode_ids(ids)
        return await self._db.read(
            lambda conn: sqlite_profiles.load_profiles(conn, workspace_id, wanted)
        )

    async def existing_profile_ids(self, workspace_id: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        wanted = sqlite_profiles.encode_ids(ids)
        return await self._db.read(
            lambda conn: sqlite_profiles.existing_profile_ids(conn, workspace_id, wanted)
        )

    async def resolve_profile_id(self, workspace_id: str, profile_id: str) -> str | None:
        return await self._db.read(
            lambda conn: sqlite_profiles.resolve_profile_id(conn, workspace_id, profile_id)
        )

    async def list_profile_events(
        self, workspace_id: str, profile_id: str, limit: int, before: int | None = None
    ) -> EventPage:
        if limit <= 0:
            return EventPage([], None)
        return await self._db.read(
            lambda conn: sqlite_profiles.list_profile_events(
                conn, workspace_id, profile_id, limit, before
            )
        )

    async def find_profile_event(
        self, workspace_id: str, profile_id: str, message_id: str
    ) -> ProfileEvent | None:
        return await self._db.read(
            lambda conn: sqlite_profiles.find_profile_event(
                conn, workspace_id, profile_id, message_id
            )
        )

    async def find_profile_events(
        self, workspace_id: str, wanted: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ProfileEvent]:
        if not wanted:
            return {}
        pairs = list(dict.fromkeys(wanted))
        return await self._db.read(
            lambda conn: sqlite_profiles.find_profile_events(conn, workspace_id, pairs)
        )

    async def list_merges(self, workspace_id: str, profile_id: str) -> list[MergeRecord]:
        return await self._db.read(
            lambda conn: sqlite_profiles.list_merges(conn, workspace_id, profile_id)
        )

    # -- processing (sqlite_processing) --------------------------------------
    async def commit_processing(self, batch: ProcessingBatch) -> None:
        # Everything that can fail on bad input (encoding, naive datetimes)
        # fails here, before the writer sees the batch.
        prepared = PreparedBatch(batch)
        await self._db.write(prepared.apply)

    async def consumer_offset(self, consumer: str) -> int:
        def get(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT log_offset FROM consumer_offsets WHERE consumer = ?", (consumer,)
            ).fetchone()
            return 0 if row is None else int(row[0])

        return await self._db.read(get)

    # -- scheduled events (sqlite_scheduled) ----------------------------------
    async def due_scheduled(self, now: datetime, limit: int) -> list[ScheduledEvent]:
        if limit <= 0:
            return []
        read = await self._db.read(
            lambda conn: sqlite_scheduled.read_due(conn, to_micros(now), limit)
        )
        rows = [sqlite_scheduled.scheduled_event(due) for due in read]
        self._relay_reads.remember(rows, read)
        return rows

    async def next_scheduled_at(self) -> datetime | None:
        due = await self._db.read(sqlite_scheduled.read_next)
        return None if due is None else from_micros(due)

    async def get_scheduled(self, workspace_id: str, key: str) -> ScheduledEvent | None:
        row = await self._db.read(lambda conn: sqlite_scheduled.read_one(conn, workspace_id, key))
        return None if row is None else sqlite_scheduled.scheduled_event(row)

    async def delete_scheduled(self, rows: Sequence[ScheduledEvent]) -> int:
        if not rows:
            return 0
        timers, outbox_ids, either = self._relay_reads.split(rows)
        return await self._db.write(
            lambda conn: sqlite_scheduled.delete_rows(conn, timers, outbox_ids, either)
        )

    # The relay's way when the log is a ``SqliteEventLog`` (``relay.EncodedSchedule``):
    # rows handed over as stored, their events appended without decoding them.
    async def due_encoded(self, now: datetime, limit: int) -> sqlite_scheduled.DueRows:
        """``due_scheduled`` as stored: the events' JSON, for ``SqliteEventLog.append_encoded``."""
        if limit <= 0:
            return sqlite_scheduled.DueRows([])
        due = to_micros(now)
        return await self._db.read(
            lambda conn: sqlite_scheduled.DueRows(sqlite_scheduled.read_due(conn, due, limit))
        )

    async def delete_due(self, rows: object) -> int:
        """``delete_scheduled`` for rows of ``due_encoded``."""
        if not isinstance(rows, sqlite_scheduled.DueRows):
            raise TypeError(f"rows of due_encoded expected, not {type(rows).__name__}")
        if not rows.events:
            return 0
        return await self._db.write(
            lambda conn: sqlite_scheduled.delete_rows(conn, rows.timers, rows.outbox_ids)
        )

    # -- segment definitions (sqlite_segments) -------------------------------
    async def put_segment(
        self, draft: SegmentDraft, now: datetime, *, create_only: bool = False
    ) -> SegmentDefinition:
        return await self._db.write(
            lambda conn: sqlite_segments.put_segment(conn, draft, now, create_only)
        )

    async def get_segment(self, workspace_id: str, segment_id: str) -> SegmentDefinition | None:
        return await self._db.read(
            lambda conn: sqlite_segments.get_segment(conn, workspace_id, segment_id)
        )

    async def list_segments(
        self, workspace_id: str, *, include_deleted: bool = False
    ) -> list[SegmentDefinition]:
        return await self._db.read(
            lambda conn: sqlite_segments.list_segments(conn, workspace_id, include_deleted)
        )

    async def delete_segment(
        self, workspace_id: str, segment_id: str, now: datetime
    ) -> SegmentDefinition | None:
        return await self._db.write(
            lambda conn: sqlite_segments.delete_segment(conn, workspace_id, segment_id, now)
        )

    async def segments_revision(self) -> int:
        return await self._db.read(sqlite_segments.segments_revision)

    # -- segment backfills (sqlite_segments, sqlite_profiles) ----------------
    async def scan_profiles(
        self, workspace_id: str, after_id: str | None, limit: int
    ) -> list[Profile]:
        docs = await self._db.read(
            lambda conn: sqlite_profiles.profile_docs(conn, workspace_id, after_id, limit)
        )
        # Decoded here, not on the reader thread: decoding holds the GIL anyway.
        return [sqlite_profiles.decode_profile(doc) for doc in docs]

    async def count_profiles(self, workspace_id: str) -> int:
        return await self._db.read(lambda conn: sqlite_profiles.count_profiles(conn, workspace_id))

    async def put_backfill(self, job: BackfillJob) -> bool:
        if job.kind == COMPUTED_TRAIT:
            return await self._db.write(lambda conn: put_trait_backfill(conn, job))
        return await self._db.write(lambda conn: sqlite_segments.store_backfill(conn, job))

    async def get_computed_trait_backfill(
        self, workspace_id: str, trait_id: str
    ) -> BackfillJob | None:
        return await self._db.read(lambda conn: get_trait_backfill(conn, workspace_id, trait_id))

    async def get_backfill(self, workspace_id: str, segment_id: str) -> BackfillJob | None:
        doc = await self._db.read(
            lambda conn: sqlite_segments.backfill_doc(conn, workspace_id, segment_id)
        )
        return None if doc is None else sqlite_segments.decode_backfill(doc)

    async def running_backfills(self) -> list[BackfillJob]:
        docs = await self._db.read(sqlite_segments.running_backfill_docs)
        jobs = [sqlite_segments.decode_backfill(doc) for doc in docs]
        jobs.extend(await self._db.read(running_trait_backfills))
        return sorted(jobs, key=lambda job: (job.started_at, job.workspace_id, job.segment_id))

    async def timeline_events(
        self,
        workspace_id: str,
        profile_ids: Sequence[str],
        names: Sequence[str] | None,
        since: datetime | None,
    ) -> list[ProfileEvent]:
        if not profile_ids or (names is not None and not names):
            return []
        lower = sqlite_profiles.lower_micros(since)
        return await self._db.read(
            lambda conn: sqlite_profiles.timeline_events(
                conn, workspace_id, profile_ids, names, lower
            )
        )

    async def events_by_name(
        self,
        workspace_id: str,
        name: str,
        since: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[ProfileEvent]:
        lower = sqlite_profiles.lower_micros(since)
        start = (lower, 0) if after is None else (to_micros(after[0]), after[1])
        return await self._db.read(
            lambda conn: sqlite_profiles.events_by_name(
                conn, workspace_id, name, lower, start, limit
            )
        )

    # -- segment membership index (sqlite_memberships) -----------------------
    async def commit_memberships(self, batch: MembershipBatch) -> None:
        await self._db.write(PreparedMemberships(batch).apply)

    async def segment_sizes(self, workspace_id: str, segment_ids: Sequence[str]) -> dict[str, int]:
        wanted = list(segment_ids)
        return await self._db.read(lambda conn: read_sizes(conn, workspace_id, wanted))

    async def list_segment_members(
        self, workspace_id: str, segment_id: str, limit: int, after: str | None = None
    ) -> MemberPage:
        return await self._db.read(
            lambda conn: read_members(conn, workspace_id, segment_id, limit, after)
        )

    async def list_segment_history(
        self, workspace_id: str, profile_ids: Sequence[str], limit: int, before: int | None = None
    ) -> SegmentChangePage:
        wanted = list(profile_ids)
        return await self._db.read(
            lambda conn: read_history(conn, workspace_id, wanted, limit, before)
        )

    # -- computed-trait definitions (sqlite_computed_traits) -----------------
    async def put_computed_trait(
        self, draft: ComputedTraitDraft, now: datetime, *, create_only: bool = False
    ) -> ComputedTraitDefinition:
        return await self._db.write(
            lambda conn: put_trait_definition(conn, draft, now, create_only)
        )

    async def get_computed_trait(
        self, workspace_id: str, trait_id: str
    ) -> ComputedTraitDefinition | None:
        found = await self._db.read(
            lambda conn: latest_trait_definition(conn, workspace_id, trait_id)
        )
        return found if found is not None and found.active else None

    async def list_computed_traits(
        self, workspace_id: str, *, include_deleted: bool = False
    ) -> list[ComputedTraitDefinition]:
        return await self._db.read(
            lambda conn: list_trait_definitions(conn, workspace_id, include_deleted)
        )

    async def delete_computed_trait(
        self, workspace_id: str, trait_id: str, now: datetime
    ) -> ComputedTraitDefinition | None:
        return await self._db.write(
            lambda conn: delete_trait_definition(conn, workspace_id, trait_id, now)
        )

    async def computed_traits_revision(self) -> int:
        return await self._db.read(trait_definitions_revision)

    # -- template definitions (sqlite_templates) -----------------------------
    async def put_template(
        self, draft: TemplateDraft, now: datetime, *, create_only: bool = False
    ) -> TemplateDefinition:
        return await self._db.write(
            lambda conn: sqlite_templates.put_template(conn, draft, now, create_only)
        )

    async def get_template(
        self, workspace_id: str, template_id: str, version: int | None = None
    ) -> TemplateDefinition | None:
        return await self._db.read(
            lambda conn: sqlite_templates.get_template(conn, workspace_id, template_id, version)
        )

    async def list_templates(self, workspace_id: str) -> list[TemplateDefinition]:
        return await self._db.read(lambda conn: sqlite_templates.list_templates(conn, workspace_id))

    async def delete_template(
        self, workspace_id: str, template_id: str, now: datetime
    ) -> TemplateDefinition | None:
        return await self._db.write(
            lambda conn: sqlite_templates.delete_template(conn, workspace_id, template_id, now)
        )

    # -- workspace policies (sqlite_policies) ----------------------------------
    async def put_policy(
        self,
        workspace_id: str,
        document: PolicyDocument,
        now: datetime,
        *,
        expected_version: int | None = None,
    ) -> StoredPolicy:
        return await self._db.write(
            lambda conn: sqlite_policies.put_policy(
                conn, workspace_id, document, now, expected_version
            )
        )

    async def get_policy(
        self, workspace_id: str, version: int | None = None
    ) -> StoredPolicy | None:
        return await self._db.read(
            lambda conn: sqlite_policies.get_policy(conn, workspace_id, version)
        )

    async def policies_revision(self) -> int:
        return await self._db.read(sqlite_policies.policies_revision)

    # -- journey definitions (sqlite_journeys) -------------------------------
    async def save_journey(
        self,
        workspace_id: str,
        journey_id: str,
        definition: Any,
        now: datetime,
        *,
        create_only: bool = False,
    ) -> JourneyVersion:
        return await self._db.write(
            lambda conn: sqlite_journeys.save_journey(
                conn, workspace_id, journey_id, definition, now, create_only
            )
        )

    async def transition_journey(
        self, workspace_id: str, journey_id: str, action: str, now: datetime
    ) -> list[JourneyVersion]:
        return await self._db.write(
            lambda conn: sqlite_journeys.transition_journey(
                conn, workspace_id, journey_id, action, now
            )
        )

    async def journey_versions(self, workspace_id: str, journey_id: str) -> list[JourneyVersion]:
        return await self._db.read(
            lambda conn: sqlite_journeys.journey_versions(conn, workspace_id, journey_id)
        )

    async def get_journey_version(
        self, workspace_id: str, journey_id: str, version: int
    ) -> JourneyVersion | None:
        return await self._db.read(
            lambda conn: sqlite_journeys.journey_version(conn, workspace_id, journey_id, version)
        )

    async def entry_journey_version(
        self, workspace_id: str, journey_id: str
    ) -> JourneyVersion | None:
        return await self._db.read(
            lambda conn: sqlite_journeys.entry_journey_version(conn, workspace_id, journey_id)
        )

    async def list_journey_versions(
        self, workspace_id: str, *, statuses: Collection[str] | None = None
    ) -> list[JourneyVersion]:
        return await self._db.read(
            lambda conn: sqlite_journeys.list_journey_versions(conn, workspace_id, statuses)
        )

    async def journeys_revision(self) -> int:
        return await self._db.read(sqlite_journeys.journeys_revision)

    # -- journey runs (sqlite_journey_runs) ----------------------------------
    async def load_journey_instances(
        self, workspace_id: str, profile_ids: Sequence[str]
    ) -> list[JourneyInstance]:
        return await self._db.read(
            lambda conn: sqlite_journey_runs.load_instances(conn, workspace_id, profile_ids)
        )

    async def get_journey_instance(
        self, workspace_id: str, instance_id: str
    ) -> JourneyInstance | None:
        return await self._db.read(
            lambda conn: sqlite_journey_runs.get_instance(conn, workspace_id, instance_id)
        )

    async def list_journey_instances(
        self,
        workspace_id: str,
        journey_id: str,
        limit: int,
        after: str | None = None,
        *,
        status: str | None = None,
    ) -> InstancePage:
        return await self._db.read(
            lambda conn: sqlite_journey_runs.page_instances(
                conn, workspace_id, journey_id, limit, after, status
            )
        )

    async def journey_instance_counts(self, workspace_id: str, journey_id: str) -> dict[str, int]:
        return await self._db.read(
            lambda conn: sqlite_journey_runs.instance_counts(conn, workspace_id, journey_id)
        )

    async def journey_metrics(self, workspace_id: str, journey_id: str) -> JourneyMetrics:
        return await self._db.read(
            lambda conn: sqlite_journey_runs.metrics(conn, workspace_id, journey_id)
        )

    async def pending_outbox(self, limit: int, after: int = 0) -> list[OutboxMessage]:
        return await self._db.read(lambda conn: sqlite_outbox.pending_messages(conn, limit, after))

    async def get_outbox(self, workspace_id: str, idempotency_key: str) -> OutboxMessage | None:
        return await self._db.read(
            lambda conn: sqlite_outbox.get_message(conn, workspace_id, idempotency_key)
        )

    async def mark_outbox(
        self,
        workspace_id: str,
        idempotency_key: str,
        status: str,
        now: datetime,
        error: str | None = None,
    ) -> bool:
        return await self._db.write(
            lambda conn: sqlite_outbox.mark_message(
                conn, workspace_id, idempotency_key, status, now, error
            )
        )

    # -- delivery (sqlite_outbox) ----------------------------------------------
    async def claim_due(
        self, now: datetime, limit: int, lease: timedelta = DEFAULT_LEASE
    ) -> list[OutboxMessage]:
        return await self._db.write(lambda conn: sqlite_outbox.claim_due(conn, now, limit, lease))

    async def next_outbox_at(self) -> datetime | None:
        return await self._db.read(sqlite_outbox.next_due)

    async def record_attempt(self, attempt: DeliveryAttempt) -> bool:
        return await self._db.write(lambda conn: sqlite_outbox.record_attempt(conn, attempt))

    async def list_dead(
        self, workspace_id: str, limit: int, after: int | None = None
    ) -> OutboxPage:
        return await self._db.read(
            lambda conn: sqlite_outbox.list_dead(conn, workspace_id, limit, after)
        )

    async def replay_dead(
        self, workspace_id: str, idempotency_key: str, now: datetime
    ) -> OutboxMessage | None:
        return await self._db.write(
            lambda conn: sqlite_outbox.replay_dead(conn, workspace_id, idempotency_key, now)
        )

    async def list_profile_messages(
        self, workspace_id: str, profile_id: str, limit: int, before: int | None = None
    ) -> OutboxPage:
        return await self._db.read(
            lambda conn: sqlite_outbox.list_profile_messages(
                conn, workspace_id, profile_id, limit, before
            )
        )
