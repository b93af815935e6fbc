"""PostgreSQL backend for the scaled-out runtime: ``Storage`` over asyncpg.

``open_postgres`` opens one asyncpg pool (``postgres_pool``: the chosen schema
as ``search_path``, created and migrated) and returns the storage and the
event log (``postgres_eventlog``) sharing that pool. The pool closes when both
have been closed.

Bulk writes send one array per column and ``unnest`` them server-side, so a
batch costs one statement whatever its size.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec

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
    postgres_journey_runs,
    postgres_journeys,
    postgres_memberships,
    postgres_outbox,
    postgres_policies,
    postgres_profiles,
    postgres_scheduled,
    postgres_segments,
    postgres_templates,
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
from rapport.storage.outbox import DEFAULT_LEASE, DeliveryAttempt, OutboxPage
from rapport.storage.postgres_code_pools import PostgresCodePools
from rapport.storage.postgres_computed_traits import (
    delete_trait_definition,
    get_trait_backfill,
    get_trait_definition,
    list_trait_definitions,
    put_trait_backfill,
    put_trait_definition,
    running_trait_backfills,
    trait_definitions_revision,
)
from rapport.storage.postgres_eventlog import PostgresEventLog
from rapport.storage.postgres_inbox import PostgresInbox
from rapport.storage.postgres_pool import LOCK_CLASS, PoolLease, open_pool
from rapport.storage.postgres_processing import processing_statements

__all__ = ["PostgresEventLog", "PostgresStorage", "open_postgres"]


async def open_postgres(
    dsn: str, *, schema: str = "public", min_size: int = 1, max_size: int = 10
) -> tuple[PostgresStorage, PostgresEventLog]:
    """Connect, migrate ``schema`` (creating it if missing) and return both halves."""
    pool = await open_pool(dsn, schema=schema, min_size=min_size, max_size=max_size)
    lease = PoolLease(pool, holders=2)
    return PostgresStorage(pool, lease.release), PostgresEventLog(pool, lease.release)


# -- SQL -----------------------------------------------------------------------

_WORKSPACE_COLUMNS = "id, name, created_at"
_INSERT_WORKSPACE_SQL = (
    "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3) "
    f"ON CONFLICT (name) DO NOTHING RETURNING {_WORKSPACE_COLUMNS}"
)
_API_KEY_COLUMNS = "id, workspace_id, kind, key_hash, created_at, name, revoked_at"
_REJECTION_COLUMNS = (
    "workspace_id, received_at, code, message, field, item_index, message_id, source, payload"
)
_INSERT_REJECTIONS_SQL = f"""
INSERT INTO rejections ({_REJECTION_COLUMNS})
SELECT w, r, c, m, f, i, mid, s, p
FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::int[],
            $7::text[], $8::text[], $9::text[])
     WITH ORDINALITY AS u(w, r, c, m, f, i, mid, s, p, ord)
ORDER BY ord
"""
# Selects name their columns after the struct fields, so rows map straight
# onto ``Struct(**row)``. Paging bounds use coalesce rather than "$n IS NULL
# OR ...", which keeps them index range conditions in generic (cached) plans.
_LIST_REJECTIONS_SQL = """
SELECT id, workspace_id, received_at, code, message, field, item_index AS index,
       message_id, source, payload
FROM rejections
WHERE workspace_id = $1 AND id < coalesce($3::bigint, 9223372036854775807)
ORDER BY id DESC LIMIT $2
"""


class PostgresStorage(Storage):
    """``Storage`` over a shared asyncpg pool (see ``open_postgres``)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._pool = pool
        self._on_close = on_close
        self._closed = False
        self._encoder = msgspec.json.Encoder()
        self._code_pools = PostgresCodePools(pool)
        self._inbox = PostgresInbox(pool)

    @property
    def code_pools(self) -> PostgresCodePools:
        return self._code_pools

    @property
    def inbox(self) -> PostgresInbox:
        return self._inbox

    async def open(self) -> None:
        """Nothing to do: ``open_postgres`` connects and migrates."""

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            await self._on_close()

    # -- workspaces and keys -------------------------------------------------
    async def ensure_workspace(self, name: str, new_id: str, now: datetime) -> Workspace:
        async with self._pool.acquire() as conn:
            try:
                row = await conn.fetchrow(_INSERT_WORKSPACE_SQL, new_id, name, now)
            except asyncpg.UniqueViolationError as error:
                raise ValueError(f"workspace id {new_id!r} is already used") from error
            if row is None:
                # The name exists. ON CONFLICT waited for its creator to
                # commit, and this new statement's snapshot sees it.
                row = await conn.fetchrow(
                    f"SELECT {_WORKSPACE_COLUMNS} FROM workspaces WHERE name = $1", name
                )
        if row is None:
            raise LookupError(f"workspace {name!r} conflicted on insert but cannot be read")
        return Workspace(**row)

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        row = await self._pool.fetchrow(
            f"SELECT {_WORKSPACE_COLUMNS} FROM workspaces WHERE id = $1", workspace_id
        )
        return None if row is None else Workspace(**row)

    async def find_workspace(self, name: str) -> Workspace | None:
        row = await self._pool.fetchrow(
            f"SELECT {_WORKSPACE_COLUMNS} FROM workspaces WHERE name = $1", name
        )
        return None if row is None else Workspace(**row)

    async def create_api_key(self, key: ApiKey) -> None:
        try:
            await self._pool.execute(
                f"INSERT INTO api_keys ({_API_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                key.id,
                key.workspace_id,
                key.kind,
                key.key_hash,
                key.created_at,
                key.name,
                key.revoked_at,
            )
        except asyncpg.UniqueViolationError as error:
            raise ValueError(f"api key {key.id!r} or its hash is already stored") from error

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        row = await self._pool.fetchrow(
            f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            key_hash,
        )
        return None if row is None else ApiKey(**row)

    # -- rejections ----------------------------------------------------------
    async def record_rejections(self, rejections: Sequence[Rejection]) -> None:
        if not rejections:
            return
        await self._pool.execute(
            _INSERT_REJECTIONS_SQL,
            [_storable_text(r.workspace_id) for r in rejections],
            [r.received_at for r in rejections],
            [_storable_text(r.code) for r in rejections],
            [_storable_text(r.message) for r in rejections],
            [_storable_optional_text(r.field) for r in rejections],
            [r.index for r in rejections],
            [_storable_optional_text(r.message_id) for r in rejections],
            [_storable_optional_text(r.source) for r in rejections],
            [_storable_text(r.payload) for r in rejections],
        )

    async def list_rejections(
        self, workspace_id: str, limit: int, before: int | None = None
    ) -> list[Rejection]:
        if limit <= 0:
            return []
        rows = await self._pool.fetch(_LIST_REJECTIONS_SQL, workspace_id, limit, before)
        return [Rejection(**row) for row in rows]

    # -- identity graph and profiles (postgres_profiles) ----------------------
    async def find_profile_ids(
        self, workspace_id: str, identifiers: Sequence[Identifier]
    ) -> dict[Identifier, str]:
        return await postgres_profiles.find_profile_ids(self._pool, workspace_id, identifiers)

    async def load_profiles(self, workspace_id: str, ids: Sequence[str]) -> dict[str, Profile]:
        return await postgres_profiles.load_profiles(self._pool, workspace_id, ids)

    async def existing_profile_ids(self, workspace_id: str, ids: Sequence[str]) -> set[str]:
        return await postgres_profiles.existing_profile_ids(self._pool, workspace_id, ids)

    async def resolve_profile_id(self, workspace_id: str, profile_id: str) -> str | None:
        return await postgres_profiles.resolve_profile_id(self._pool, workspace_id, profile_id)

    async def list_profile_events(
        self, workspace_id: str, profile_id: str, limit: int, before: int | None = None
    ) -> EventPage:
        return await postgres_profiles.list_profile_events(
            self._pool, workspace_id, profile_id, limit, before
        )

    async def find_profile_event(
        self, workspace_id: str, profile_id: str, message_id: str
    ) -> ProfileEvent | None:
        return await postgres_profiles.find_profile_event(
            self._pool, workspace_id, profile_id, message_id
        )

    async def find_profile_events(
        self, workspace_id: str, wanted: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ProfileEvent]:
        if not wanted:
            return {}
        pairs = list(dict.fromkeys(wanted))
        return await postgres_profiles.find_profile_events(self._pool, workspace_id, pairs)

    async def list_merges(self, workspace_id: str, profile_id: str) -> list[MergeRecord]:
        return await postgres_profiles.list_merges(self._pool, workspace_id, profile_id)

    # -- processing (postgres_processing) ------------------------------------
    async def commit_processing(self, batch: ProcessingBatch) -> None:
        # Every parameter is built (and every encoding error raised) before a
        # connection is taken, so the transaction only runs statements.
        statements = processing_statements(batch, self._encoder.encode)
        async with self._pool.acquire() as conn, conn.transaction():
            for sql, args in statements:
                await conn.execute(sql, *args)

    async def consumer_offset(self, consumer: str) -> int:
        offset: int | None = await self._pool.fetchval(
            "SELECT log_offset FROM consumer_offsets WHERE consumer = $1", consumer
        )
        return 0 if offset is None else offset

    # -- scheduled events (postgres_scheduled) --------------------------------
    async def due_scheduled(self, now: datetime, limit: int) -> list[ScheduledEvent]:
        if limit <= 0:
            return []
        rows = await self._pool.fetch(postgres_scheduled.DUE_SQL, now, limit)
        return [postgres_scheduled.scheduled_event(row) for row in rows]

    async def next_scheduled_at(self) -> datetime | None:
        due: datetime | None = await self._pool.fetchval(postgres_scheduled.NEXT_SQL)
        return due

    async def get_scheduled(self, workspace_id: str, key: str) -> ScheduledEvent | None:
        row = await self._pool.fetchrow(postgres_scheduled.GET_SQL, workspace_id, key)
        return None if row is None else postgres_scheduled.scheduled_event(row)

    async def delete_scheduled(self, rows: Sequence[ScheduledEvent]) -> int:
        if not rows:
            return 0
        status: str = await self._pool.execute(
            postgres_scheduled.DELETE_SQL, *postgres_scheduled.delete_arguments(list(rows))
        )
        return int(status.rsplit(" ", 1)[-1])

    @contextlib.asynccontextmanager
    async def relay_turn(self) -> AsyncIterator[bool]:
        """Exclusive across processes: a session advisory lock (see ``postgres_scheduled``)."""
        async with self._pool.acquire() as conn:
            granted = bool(await conn.fetchval(postgres_scheduled.TRY_LOCK_SQL, LOCK_CLASS))
            try:
                yield granted
            finally:
                if granted:
                    await conn.execute(postgres_scheduled.UNLOCK_SQL, LOCK_CLASS)

    # -- segment definitions (postgres_segments) -----------------------------
    async def put_segment(
        self, draft: SegmentDraft, now: datetime, *, create_only: bool = False
    ) -> SegmentDefinition:
        return await postgres_segments.put_segment(self._pool, LOCK_CLASS, draft, now, create_only)

    async def get_segment(self, workspace_id: str, segment_id: str) -> SegmentDefinition | None:
        return await postgres_segments.get_segment(self._pool, workspace_id, segment_id)

    async def list_segments(
        self, workspace_id: str, *, include_deleted: bool = False
    ) -> list[SegmentDefinition]:
        return await postgres_segments.list_segments(self._pool, workspace_id, include_deleted)

    async def delete_segment(
        self, workspace_id: str, segment_id: str, now: datetime
    ) -> SegmentDefinition | None:
        return await postgres_segments.delete_segment(
            self._pool, LOCK_CLASS, workspace_id, segment_id, now
        )

    async def segments_revision(self) -> int:
        return await postgres_segments.segments_revision(self._pool)

    # -- segment backfills (postgres_segments, postgres_profiles) ------------
    async def scan_profiles(
        self, workspace_id: str, after_id: str | None, limit: int
    ) -> list[Profile]:
        return await postgres_profiles.scan_profiles(self._pool, workspace_id, after_id, limit)

    async def count_profiles(self, workspace_id: str) -> int:
        return await postgres_profiles.count_profiles(self._pool, workspace_id)

    async def put_backfill(self, job: BackfillJob) -> bool:
        if job.kind == COMPUTED_TRAIT:
            return await put_trait_backfill(self._pool, job)
        return await postgres_segments.put_backfill(self._pool, job)

    async def get_backfill(self, workspace_id: str, segment_id: str) -> BackfillJob | None:
        return await postgres_segments.get_backfill(self._pool, workspace_id, segment_id)

    async def get_computed_trait_backfill(
        self, workspace_id: str, trait_id: str
    ) -> BackfillJob | None:
        return await get_trait_backfill(self._pool, workspace_id, trait_id)

    async def running_backfills(self) -> list[BackfillJob]:
        jobs = await postgres_segments.running_backfills(self._pool)
        jobs.extend(await running_trait_backfills(self._pool))
        return sorted(jobs, key=lambda job: (job.started_at, job.workspace_id, job.segment_id))

    async def timeline_events(
        self,
        workspace_id: str,
        profile_ids: Sequence[str],
        names: Sequence[str] | None,
        since: datetime | None,
    ) -> list[ProfileEvent]:
        return await postgres_profiles.timeline_events(
            self._pool, workspace_id, profile_ids, names, since
        )

    async def events_by_name(
        self,
        workspace_id: str,
        name: str,
        since: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[ProfileEvent]:
        return await postgres_profiles.events_by_name(
            self._pool, workspace_id, name, since, after, limit
        )

    # -- computed-trait definitions (postgres_computed_traits) ---------------
    async def put_computed_trait(
        self, draft: ComputedTraitDraft, now: datetime, *, create_only: bool = False
    ) -> ComputedTraitDefinition:
        return await put_trait_definition(self._pool, LOCK_CLASS, draft, now, create_only)

    async def get_computed_trait(
        self, workspace_id: str, trait_id: str
    ) -> ComputedTraitDefinition | None:
        return await get_trait_definition(self._pool, workspace_id, trait_id)

    async def list_computed_traits(
        self, workspace_id: str, *, include_deleted: bool = False
    ) -> list[ComputedTraitDefinition]:
        return await list_trait_definitions(self._pool, workspace_id, include_deleted)

    async def delete_computed_trait(
        self, workspace_id: str, trait_id: str, now: datetime
    ) -> ComputedTraitDefinition | None:
        return await delete_trait_definition(self._pool, LOCK_CLASS, workspace_id, trait_id, now)

    async def computed_traits_revision(self) -> int:
        return await trait_definitions_revision(self._pool)

    # -- template definitions (postgres_templates) ---------------------------
    async def put_template(
        self, draft: TemplateDraft, now: datetime, *, create_only: bool = False
    ) -> TemplateDefinition:
        return await postgres_templates.put_template(
            self._pool, LOCK_CLASS, draft, now, create_only
        )

    async def get_template(
        self, workspace_id: str, template_id: str, version: int | None = None
    ) -> TemplateDefinition | None:
        return await postgres_templates.get_template(self._pool, workspace_id, template_id, version)

    async def list_templates(self, workspace_id: str) -> list[TemplateDefinition]:
        return await postgres_templates.list_templates(self._pool, workspace_id)

    async def delete_template(
        self, workspace_id: str, template_id: str, now: datetime
    ) -> TemplateDefinition | None:
        return await postgres_templates.delete_template(
            self._pool, LOCK_CLASS, workspace_id, template_id, now
        )

    # -- workspace policies (postgres_policies) --------------------------------
    async def put_policy(
        self,
        workspace_id: str,
        document: PolicyDocument,
        now: datetime,
        *,
        expected_version: int | None = None,
    ) -> StoredPolicy:
        return await postgres_policies.put_policy(
            self._pool, LOCK_CLASS, workspace_id, document, now, expected_version
        )

    async def get_policy(
        self, workspace_id: str, version: int | None = None
    ) -> StoredPolicy | None:
        return await postgres_policies.get_policy(self._pool, workspace_id, version)

    async def policies_revision(self) -> int:
        return await postgres_policies.policies_revision(self._pool)

    # -- journey definitions (postgres_journeys) -----------------------------
    async def save_journey(
        self,
        workspace_id: str,
        journey_id: str,
        definition: Any,
        now: datetime,
        *,
        create_only: bool = False,
    ) -> JourneyVersion:
        return await postgres_journeys.save_journey(
            self._pool, LOCK_CLASS, workspace_id, journey_id, definition, now, create_only
        )

    async def transition_journey(
        self, workspace_id: str, journey_id: str, action: str, now: datetime
    ) -> list[JourneyVersion]:
        return await postgres_journeys.transition_journey(
            self._pool, LOCK_CLASS, workspace_id, journey_id, action, now
        )

    async def journey_versions(self, workspace_id: str, journey_id: str) -> list[JourneyVersion]:
        return await postgres_journeys.journey_versions(self._pool, workspace_id, journey_id)

    async def get_journey_version(
        self, workspace_id: str, journey_id: str, version: int
    ) -> JourneyVersion | None:
        return await postgres_journeys.journey_version(
            self._pool, workspace_id, journey_id, version
        )

    async def entry_journey_version(
        self, workspace_id: str, journey_id: str
    ) -> JourneyVersion | None:
        return await postgres_journeys.entry_journey_version(self._pool, workspace_id, journey_id)

    async def list_journey_versions(
        self, workspace_id: str, *, statuses: Collection[str] | None = None
    ) -> list[JourneyVersion]:
        return await postgres_journeys.list_journey_versions(self._pool, workspace_id, statuses)

    async def journeys_revision(self) -> int:
        return await postgres_journeys.journeys_revision(self._pool)

    # -- journey runs (postgres_journey_runs) --------------------------------
    async def load_journey_instances(
        self, workspace_id: str, profile_ids: Sequence[str]
    ) -> list[JourneyInstance]:
        return await postgres_journey_runs.load_instances(self._pool, workspace_id, profile_ids)

    async def get_journey_instance(
        self, workspace_id: str, instance_id: str
    ) -> JourneyInstance | None:
        return await postgres_journey_runs.get_instance(self._pool, workspace_id, instance_id)

    async def list_journey_instances(
        self,
        workspace_id: str,
        journey_id: str,
        limit: int,
        after: str | None = None,
        *,
        status: str | None = None,
    ) -> InstancePage:
        return await postgres_journey_runs.page_instances(
            self._pool, workspace_id, journey_id, limit, after, status
        )

    async def journey_instance_counts(self, workspace_id: str, journey_id: str) -> dict[str, int]:
        return await postgres_journey_runs.instance_counts(self._pool, workspace_id, journey_id)

    async def journey_metrics(self, workspace_id: str, journey_id: str) -> JourneyMetrics:
        return await postgres_journey_runs.metrics(self._pool, workspace_id, journey_id)

    async def pending_outbox(self, limit: int, after: int = 0) -> list[OutboxMessage]:
        return await postgres_outbox.pending_messages(self._pool, limit, after)

    async def get_outbox(self, workspace_id: str, idempotency_key: str) -> OutboxMessage | None:
        return await postgres_outbox.get_message(self._pool, workspace_id, idempotency_key)

    async def mark_outbox(
        self,
        workspace_id: str,
        idempotency_key: str,
        status: str,
        now: datetime,
        error: str | None = None,
    ) -> bool:
        return await postgres_outbox.mark_message(
            self._pool, workspace_id, idempotency_key, status, now, error
        )

    # -- delivery (postgres_outbox) --------------------------------------------
    async def claim_due(
        self, now: datetime, limit: int, lease: timedelta = DEFAULT_LEASE
    ) -> list[OutboxMessage]:
        return await postgres_outbox.claim_due(self._pool, now, limit, lease)

    async def next_outbox_at(self) -> datetime | None:
        return await postgres_outbox.next_due(self._pool)

    async def record_attempt(self, attempt: DeliveryAttempt) -> bool:
        return await postgres_outbox.record_attempt(self._pool, attempt, self._encoder.encode)

    async def list_dead(
        self, workspace_id: str, limit: int, after: int | None = None
    ) -> OutboxPage:
        return await postgres_outbox.list_dead(self._pool, workspace_id, limit, after)

    async def replay_dead(
        self, workspace_id: str, idempotency_key: str, now: datetime
    ) -> OutboxMessage | None:
        return await postgres_outbox.replay_dead(self._pool, workspace_id, idempotency_key, now)

    async def list_profile_messages(
        self, workspace_id: str, profile_id: str, limit: int, before: int | None = None
    ) -> OutboxPage:
        return await postgres_outbox.list_profile_messages(
            self._pool, workspace_id, profile_id, limit, before
        )

    # -- segment membership index (postgres_memberships) ---------------------
    async def commit_memberships(self, batch: MembershipBatch) -> None:
        await postgres_memberships.commit_memberships(self._pool, batch)

    async def segment_sizes(self, workspace_id: str, segment_ids: Sequence[str]) -> dict[str, int]:
        return await postgres_memberships.segment_sizes(self._pool, workspace_id, segment_ids)

    async def list_segment_members(
        self, workspace_id: str, segment_id: str, limit: int, after: str | None = None
    ) -> MemberPage:
        return await postgres_memberships.list_segment_members(
            self._pool, workspace_id, segment_id, limit, after
        )

    async def list_segment_history(
        self, workspace_id: str, profile_ids: Sequence[str], limit: int, before: int | None = None
    ) -> SegmentChangePage:
        return await postgres_memberships.list_segment_history(
            self._pool, workspace_id, profile_ids, limit, before
        )


def _storable_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL. Rejections exist to keep bad input
    # visible, so a NUL in it must not make recording the rejection fail.
    return value.replace("\x00", "\ufffd")


def _storable_optional_text(value: str | None) -> str | None:
    return None if value is None else _storable_text(value)
