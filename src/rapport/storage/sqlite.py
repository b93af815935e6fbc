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

import msgspec

from rapport.core.backfill import COMPUTED_TRAIT, BackfillJob, start_backfill
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
from rapport.core.segments import deleted_definition, next_definition
from rapport.core.templates.definitions import TemplateDefinition, TemplateDraft
from rapport.storage import (
    sqlite_journey_runs,
    sqlite_journeys,
    sqlite_outbox,
    sqlite_policies,
    sqlite_scheduled,
    sqlite_templates,
)
from rapport.storage.base import (
    ApiKey,
    EventPage,
    ProcessingBatch,
    SegmentAlreadyExists,
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
from rapport.storage.sqlite_db import (
    BulkInsert,
    MicrosCache,
    SqliteDatabase,
    from_micros,
    to_micros,
)
from rapport.storage.sqlite_eventlog import SqliteEventLog
from rapport.storage.sqlite_inbox import SqliteInbox
from rapport.storage.sqlite_memberships import (
    PreparedMemberships,
    read_history,
    read_members,
    read_sizes,
)

__all__ = ["SqliteEventLog", "SqliteStorage", "open_sqlite"]

EVENTS_DB = "events.db"
RAPPORT_DB = "rapport.db"
# A merge chain longer than this can only be a cycle (a corrupt graph).
MAX_MERGE_HOPS = 1000
_NO_UPPER_BOUND = 2**63 - 1

_encode = msgspec.json.Encoder().encode
_decode_profile = msgspec.json.Decoder(Profile).decode
_decode_segment = msgspec.json.Decoder(SegmentDefinition).decode
_decode_backfill = msgspec.json.Decoder(BackfillJob).decode


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


def _optional_micros(value: datetime | None) -> int | None:
    return None if value is None else to_micros(value)


def _optional_datetime(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


# -- storage --------------------------------------------------------------------


class SqliteStorage(Storage):
    """Workspaces, keys, rejections, identity graph and profiles in ``rapport.db``."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        migrations = load_migrations(dialect_directory("sqlite"), prefix="rapport_")
        self._db = SqliteDatabase(path, migrations, synchronous=synchronous)
        self._code_pools = SqliteCodePools(self._db)
        self._inbox = SqliteInbox(self._db)

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

    # -- workspaces and keys -------------------------------------------------
    async def ensure_workspace(self, name: str, new_id: str, now: datetime) -> Workspace:
        created_at = to_micros(now)

        def ensure(conn: sqlite3.Connection) -> Workspace:
            conn.execute(
                "INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (new_id, name, created_at),
            )
            row = conn.execute(
                "SELECT id, name, created_at FROM workspaces WHERE name = ?", (name,)
            ).fetchone()
            return _workspace(row)

        return await self._db.write(ensure)

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        def get(conn: sqlite3.Connection) -> Workspace | None:
            row = conn.execute(
                "SELECT id, name, created_at FROM workspaces WHERE id = ?", (workspace_id,)
            ).fetchone()
            return None if row is None else _workspace(row)

        return await self._db.read(get)

    async def find_workspace(self, name: str) -> Workspace | None:
        def find(conn: sqlite3.Connection) -> Workspace | None:
            row = conn.execute(
                "SELECT id, name, created_at FROM workspaces WHERE name = ?", (name,)
            ).fetchone()
            return None if row is None else _workspace(row)

        return await self._db.read(find)

    async def create_api_key(self, key: ApiKey) -> None:
        row = (
            key.id,
            key.workspace_id,
            key.kind,
            key.key_hash,
            key.name,
            to_micros(key.created_at),
            _optional_micros(key.revoked_at),
        )

        def create(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_keys"
                " (id, workspace_id, kind, key_hash, name, created_at, revoked_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )

        await self._db.write(create)

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        def find(conn: sqlite3.Connection) -> ApiKey | None:
            row = conn.execute(
                "SELECT id, workspace_id, kind, key_hash, created_at, name, revoked_at"
                " FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
                (key_hash,),
            ).fetchone()
            if row is None:
                return None
            key_id, workspace_id, kind, stored_hash, created_at, name, revoked_at = row
            return ApiKey(
                id=key_id,
                workspace_id=workspace_id,
                kind=kind,
                key_hash=stored_hash,
                created_at=from_micros(created_at),
                name=name,
                revoked_at=_optional_datetime(revoked_at),
            )

        return await self._db.read(find)

    # -- rejections ----------------------------------------------------------
    async def record_rejections(self, rejections: Sequence[Rejection]) -> None:
        if not rejections:
            return
        rows = [
            (
                r.workspace_id,
                to_micros(r.received_at),
                r.code,
                r.message,
                r.field,
                r.index,
                r.message_id,
                r.source,
                r.payload,
            )
            for r in rejections
        ]

        def record(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO rejections (workspace_id, received_at, code, message, field,"
                " batch_index, message_id, source, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

        await self._db.write(record)

    async def list_rejections(
        self, workspace_id: str, limit: int, before: int | None = None
    ) -> list[Rejection]:
        if limit <= 0:
            return []
        upper = _NO_UPPER_BOUND if before is None else before

        def list_page(conn: sqlite3.Connection) -> list[Rejection]:
            rows = conn.execute(
                "SELECT id, workspace_id, received_at, code, message, field, batch_index,"
                " message_id, source, payload FROM rejections"
                " WHERE workspace_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (workspace_id, upper, limit),
            ).fetchall()
            return [_rejection(row) for row in rows]

        return await self._db.read(list_page)

    # -- identity graph and profiles -----------------------------------------
    async def find_profile_ids(
        self, workspace_id: str, identifiers: Sequence[Identifier]
    ) -> dict[Identifier, str]:
        if not identifiers:
            return {}
        wanted = list(identifiers)

        def find(conn: sqlite3.Connection) -> dict[Identifier, str]:
            found: dict[Identifier, str] = {}
            for identifier in wanted:
                row = conn.execute(
                    "SELECT profile_id FROM identifiers"
                    " WHERE workspace_id = ? AND type = ? AND value = ?",
                    (workspace_id, identifier.type, identifier.value),
                ).fetchone()
                if row is not None:
                    found[identifier] = row[0]
            return found

        return await self._db.read(find)

    async def load_profiles(self, workspace_id: str, ids: Sequence[str]) -> dict[str, Profile]:
        if not ids:
            return {}
        wanted = _encode(list(ids))

        def load(conn: sqlite3.Connection) -> dict[str, Profile]:
            rows = conn.execute(
                "SELECT id, doc FROM profiles"
                " WHERE workspace_id = ? AND id IN (SELECT value FROM json_each(?))",
                (workspace_id, wanted),
            ).fetchall()
            return {profile_id: _decode_profile(doc) for profile_id, doc in rows}

        return await self._db.read(load)

    async def existing_profile_ids(self, workspace_id: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        wanted = _encode(list(ids))

        def existing(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "SELECT id FROM profiles"
                " WHERE workspace_id = ? AND id IN (SELECT value FROM json_each(?))",
                (workspace_id, wanted),
            ).fetchall()
            return {profile_id for (profile_id,) in rows}

        return await self._db.read(existing)

    async def resolve_profile_id(self, workspace_id: str, profile_id: str) -> str | None:
        def resolve(conn: sqlite3.Connection) -> str | None:
            current = profile_id
            for _ in range(MAX_MERGE_HOPS):
                if conn.execute(
                    "SELECT 1 FROM profiles WHERE workspace_id = ? AND id = ?",
                    (workspace_id, current),
                ).fetchone():
                    return current
                row = conn.execute(
                    "SELECT winner FROM profile_merges WHERE workspace_id = ? AND loser = ?",
                    (workspace_id, current),
                ).fetchone()
                if row is None:
                    return None
                current = row[0]
            raise RuntimeError(f"merge chain from {profile_id} does not end: the graph has a cycle")

        return await self._db.read(resolve)

    async def list_profile_events(
        self, workspace_id: str, profile_id: str, limit: int, before: int | None = None
    ) -> EventPage:
        if limit <= 0:
            return EventPage([], None)
        upper = _NO_UPPER_BOUND if before is None else before

        def list_page(conn: sqlite3.Connection) -> EventPage:
            # One row past the page tells whether an older page exists.
            rows = conn.execute(
                "SELECT workspace_id, profile_id, log_offset, message_id, type, name,"
                " timestamp, received_at, body FROM profile_events"
                " WHERE workspace_id = ? AND profile_id = ? AND log_offset < ?"
                " ORDER BY log_offset DESC LIMIT ?",
                (workspace_id, profile_id, upper, limit + 1),
            ).fetchall()
            events = [_profile_event(row) for row in rows[:limit]]
            next_before = events[-1].offset if len(rows) > limit else None
            return EventPage(events, next_before)

        return await self._db.read(list_page)

    async def find_profile_event(
        self, workspace_id: str, profile_id: str, message_id: str
    ) -> ProfileEvent | None:
        def find(conn: sqlite3.Connection) -> ProfileEvent | None:
            # Her rows only (the timeline index), no body decoded but the one found.
            row = conn.execute(
                "SELECT workspace_id, profile_id, log_offset, message_id, type, name,"
                " timestamp, received_at, body FROM profile_events"
                " INDEXED BY profile_events_timeline"
                " WHERE workspace_id = ? AND profile_id = ? AND message_id = ?"
                " ORDER BY log_offset DESC LIMIT 1",
                (workspace_id, profile_id, message_id),
            ).fetchone()
            return None if row is None else _profile_event(row)

        return await self._db.read(find)

    async def list_merges(self, workspace_id: str, profile_id: str) -> list[MergeRecord]:
        def list_all(conn: sqlite3.Connection) -> list[MergeRecord]:
            rows = conn.execute(
                "SELECT workspace_id, winner, loser, merged_at, reason, message_id"
                " FROM profile_merges WHERE workspace_id = ? AND winner = ?"
                " ORDER BY merged_at, rowid",
                (workspace_id, profile_id),
            ).fetchall()
            return [
                MergeRecord(
                    workspace_id=ws,
                    winner=winner,
                    loser=loser,
                    merged_at=from_micros(merged_at),
                    reason=reason,
                    message_id=message_id,
                )
                for ws, winner, loser, merged_at, reason, message_id in rows
            ]

        return await self._db.read(list_all)

    # -- processing ----------------------------------------------------------
    async def commit_processing(self, batch: ProcessingBatch) -> None:
        # Everything that can fail on bad input (encoding, naive datetimes)
        # fails here, before the writer sees the batch.
        prepared = _PreparedBatch(batch)
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
        rows = await self._db.read(
            lambda conn: sqlite_scheduled.read_due(conn, to_micros(now), limit)
        )
        return [sqlite_scheduled.scheduled_event(row) for row in rows]

    async def next_scheduled_at(self) -> datetime | None:
        due = await self._db.read(sqlite_scheduled.read_next)
        return None if due is None else from_micros(due)

    async def get_scheduled(self, workspace_id: str, key: str) -> ScheduledEvent | None:
        row = await self._db.read(lambda conn: sqlite_scheduled.read_one(conn, workspace_id, key))
        return None if row is None else sqlite_scheduled.scheduled_event(row)

    async def delete_scheduled(self, rows: Sequence[ScheduledEvent]) -> int:
        if not rows:
            return 0
        wanted = [sqlite_scheduled.identity(row) for row in rows]
        return await self._db.write(lambda conn: sqlite_scheduled.delete_rows(conn, wanted))

    # -- segment definitions -------------------------------------------------
    async def put_segment(
        self, draft: SegmentDraft, now: datetime, *, create_only: bool = False
    ) -> SegmentDefinition:
        def put(conn: sqlite3.Connection) -> SegmentDefinition:
            previous = _latest_segment(conn, draft.workspace_id, draft.id)
            if create_only and previous is not None and previous.active:
                raise SegmentAlreadyExists(draft.workspace_id, draft.id)
            return _store_segment(conn, next_definition(previous, draft, now))

        return await self._db.write(put)

    async def get_segment(self, workspace_id: str, segment_id: str) -> SegmentDefinition | None:
        def get(conn: sqlite3.Connection) -> SegmentDefinition | None:
            found = _latest_segment(conn, workspace_id, segment_id)
            return found if found is not None and found.active else None

        return await self._db.read(get)

    async def list_segments(
        self, workspace_id: str, *, include_deleted: bool = False
    ) -> list[SegmentDefinition]:
        def list_all(conn: sqlite3.Connection) -> list[SegmentDefinition]:
            rows = conn.execute(
                "SELECT doc FROM segment_definitions"
                " WHERE workspace_id = ? AND (? OR status = 'active') ORDER BY id",
                (workspace_id, include_deleted),
            ).fetchall()
            return [_decode_segment(doc) for (doc,) in rows]

        return await self._db.read(list_all)

    async def delete_segment(
        self, workspace_id: str, segment_id: str, now: datetime
    ) -> SegmentDefinition | None:
        def delete(conn: sqlite3.Connection) -> SegmentDefinition | None:
            previous = _latest_segment(conn, workspace_id, segment_id)
            if previous is None or not previous.active:
                return None
            return _store_segment(conn, deleted_definition(previous, now))

        return await self._db.write(delete)

    async def segments_revision(self) -> int:
        def get(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT max(revision) FROM segment_definitions").fetchone()
            return 0 if row is None or row[0] is None else int(row[0])

        return await self._db.read(get)

    # -- segment backfills ---------------------------------------------------
    async def scan_profiles(
        self, workspace_id: str, after_id: str | None, limit: int
    ) -> list[Profile]:
        def scan(conn: sqlite3.Connection) -> list[bytes]:
            rows = conn.execute(
                "SELECT doc FROM profiles WHERE workspace_id = ? AND id > ? ORDER BY id LIMIT ?",
                (workspace_id, "" if after_id is None else after_id, max(limit, 0)),
            ).fetchall()
            return [doc for (doc,) in rows]

        # Decoded here, not on the reader thread: decoding holds the GIL anyway.
        return [_decode_profile(doc) for doc in await self._db.read(scan)]

    async def count_profiles(self, workspace_id: str) -> int:
        def count(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT count(*) FROM profiles WHERE workspace_id = ?", (workspace_id,)
            ).fetchone()
            return int(row[0])

        return await self._db.read(count)

    async def put_backfill(self, job: BackfillJob) -> bool:
        if job.kind == COMPUTED_TRAIT:
            return await self._db.write(lambda conn: put_trait_backfill(conn, job))
        return await self._db.write(lambda conn: _store_backfill(conn, job))

    async def get_computed_trait_backfill(
        self, workspace_id: str, trait_id: str
    ) -> BackfillJob | None:
        return await self._db.read(lambda conn: get_trait_backfill(conn, workspace_id, trait_id))

    async def get_backfill(self, workspace_id: str, segment_id: str) -> BackfillJob | None:
        def get(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT doc FROM segment_backfills WHERE workspace_id = ? AND segment_id = ?",
                (workspace_id, segment_id),
            ).fetchone()
            return None if row is None else bytes(row[0])

        doc = await self._db.read(get)
        return None if doc is None else _decode_backfill(doc)

    async def running_backfills(self) -> list[BackfillJob]:
        def running(conn: sqlite3.Connection) -> list[bytes]:
            rows = conn.execute(
                "SELECT doc FROM segment_backfills WHERE status = 'running'"
            ).fetchall()
            return [bytes(doc) for (doc,) in rows]

        jobs = [_decode_backfill(doc) for doc in await self._db.read(running)]
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
        lower = -_NO_UPPER_BOUND if since is None else to_micros(since)
        named = "" if names is None else " AND name IN (SELECT value FROM json_each(?))"
        wanted = [] if names is None else [_encode(list(names))]

        def read(conn: sqlite3.Connection) -> list[ProfileEvent]:
            # json_each keeps it one statement whatever the number of ids.
            # INDEXED BY: without statistics SQLite would walk the workspace's
            # whole timeline by its primary key instead of these profiles'.
            rows = conn.execute(
                "SELECT workspace_id, profile_id, log_offset, message_id, type, name,"
                " timestamp, received_at, body FROM profile_events"
                " INDEXED BY profile_events_timeline"
                " WHERE workspace_id = ? AND profile_id IN (SELECT value FROM json_each(?))"
                f"{named} AND timestamp >= ?"
                " ORDER BY log_offset",
                (workspace_id, _encode(list(profile_ids)), *wanted, lower),
            ).fetchall()
            return [_profile_event(row) for row in rows]

        return await self._db.read(read)

    async def events_by_name(
        self,
        workspace_id: str,
        name: str,
        since: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[ProfileEvent]:
        lower = -_NO_UPPER_BOUND if since is None else to_micros(since)
        at, offset = (lower, 0) if after is None else (to_micros(after[0]), after[1])

        def read(conn: sqlite3.Connection) -> list[ProfileEvent]:
            rows = conn.execute(
                "SELECT workspace_id, profile_id, log_offset, message_id, type, name,"
                " timestamp, received_at, body FROM profile_events"
                " INDEXED BY profile_events_by_name"
                " WHERE workspace_id = ? AND name = ? AND timestamp >= ?"
                " AND (timestamp > ? OR (timestamp = ? AND log_offset > ?))"
                " ORDER BY timestamp, log_offset LIMIT ?",
                (workspace_id, name, lower, at, at, offset, limit),
            ).fetchall()
            return [_profile_event(row) for row in rows]

        return await self._db.read(read)

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


def _latest_segment(
    conn: sqlite3.Connection, workspace_id: str, segment_id: str
) -> SegmentDefinition | None:
    row = conn.execute(
        "SELECT doc FROM segment_definitions WHERE workspace_id = ? AND id = ?",
        (workspace_id, segment_id),
    ).fetchone()
    return None if row is None else _decode_segment(row[0])


def _store_segment(conn: sqlite3.Connection, definition: SegmentDefinition) -> SegmentDefinition:
    # Writes are serialised by the single writer, so max + 1 is race free.
    doc = _encode(definition)
    conn.execute(
        "INSERT INTO segment_definitions (workspace_id, id, version, status, revision, doc)"
        " VALUES (?, ?, ?, ?, (SELECT coalesce(max(revision), 0) + 1 FROM segment_definitions), ?)"
        " ON CONFLICT (workspace_id, id) DO UPDATE SET version = excluded.version,"
        " status = excluded.status, revision = excluded.revision, doc = excluded.doc",
        (definition.workspace_id, definition.id, definition.version, definition.status, doc),
    )
    # Every definition write starts the walk of the profiles for its version,
    # in the same transaction (rapport.core.backfill).
    (total,) = conn.execute(
        "SELECT count(*) FROM profiles WHERE workspace_id = ?", (definition.workspace_id,)
    ).fetchone()
    _store_backfill(
        conn,
        start_backfill(
            definition.workspace_id,
            definition.id,
            definition.version,
            int(total),
            definition.updated_at,
        ),
    )
    # What a reader will get back (the caller's condition tree is not shared).
    return _decode_segment(doc)


def _store_backfill(conn: sqlite3.Connection, job: BackfillJob) -> bool:
    cursor = conn.execute(
        "INSERT INTO segment_backfills (workspace_id, segment_id, version, status, doc)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (workspace_id, segment_id) DO UPDATE"
        " SET version = excluded.version, status = excluded.status, doc = excluded.doc"
        " WHERE excluded.version >= segment_backfills.version",
        (job.workspace_id, job.segment_id, job.version, job.status, _encode(job)),
    )
    return cursor.rowcount > 0


# Multi-row statements: one SQLite step per chunk of rows instead of one per
# row, each of which also gives the GIL away and waits to get it back while
# the processor builds its next batch on the event loop's thread.
# Events are facts: a replay never rewrites one (a merge may have moved it to
# another profile since).
_INSERT_PROFILE_EVENTS = BulkInsert(
    "profile_events",
    (
        "workspace_id",
        "log_offset",
        "profile_id",
        "message_id",
        "type",
        "name",
        "timestamp",
        "received_at",
        "body",
    ),
    "ON CONFLICT (workspace_id, log_offset) DO NOTHING",
)
_UPSERT_IDENTIFIERS = BulkInsert(
    "identifiers",
    ("workspace_id", "type", "value", "profile_id"),
    "ON CONFLICT (workspace_id, type, value) DO UPDATE SET profile_id = excluded.profile_id",
)
_UPSERT_PROFILES = BulkInsert(
    "profiles",
    ("workspace_id", "id", "doc", "created_at", "updated_at"),
    "ON CONFLICT (workspace_id, id) DO UPDATE SET doc = excluded.doc,"
    " created_at = excluded.created_at, updated_at = excluded.updated_at",
)


class _PreparedBatch:
    """A ``ProcessingBatch`` turned into SQL parameters, applied in the documented order."""

    def __init__(self, batch: ProcessingBatch) -> None:
        # Events of one batch mostly share their arrival time.
        received_micros = MicrosCache()
        self.events = [
            (
                e.workspace_id,
                e.offset,
                e.profile_id,
                e.message_id,
                e.type,
                e.name,
                to_micros(e.timestamp),
                received_micros(e.received_at),
                e.body,
            )
            for e in batch.events
        ]
        self.identifiers = [
            (workspace_id, identifier.type, identifier.value, profile_id)
            for workspace_id, identifier, profile_id in batch.identifiers
        ]
        self.merges = [
            (m.workspace_id, m.loser, m.winner, to_micros(m.merged_at), m.reason, m.message_id)
            for m in batch.merges
        ]
        self.profiles = [
            (p.workspace_id, p.id, _encode(p), to_micros(p.created_at), to_micros(p.updated_at))
            for p in batch.profiles
        ]
        self.schedule = sqlite_scheduled.PreparedSchedule(batch)
        self.runs = sqlite_journey_runs.PreparedRuns(batch)
        self.consumer = batch.consumer
        self.offset = batch.offset

    def apply(self, conn: sqlite3.Connection) -> None:
        _INSERT_PROFILE_EVENTS.run(conn, self.events)
        _UPSERT_IDENTIFIERS.run(conn, self.identifiers)
        for workspace_id, loser, winner, merged_at, reason, message_id in self.merges:
            conn.execute(
                "INSERT INTO profile_merges (workspace_id, loser, winner, merged_at, reason,"
                " message_id) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (workspace_id, loser) DO NOTHING",
                (workspace_id, loser, winner, merged_at, reason, message_id),
            )
            conn.execute(
                "UPDATE profile_events SET profile_id = ?"
                " WHERE workspace_id = ? AND profile_id = ?",
                (winner, workspace_id, loser),
            )
            # A merged-away profile owns nothing any more: identifiers the
            # batch did not already move follow it to its winner.
            conn.execute(
                "UPDATE identifiers SET profile_id = ? WHERE workspace_id = ? AND profile_id = ?",
                (winner, workspace_id, loser),
            )
            conn.execute(
                "DELETE FROM profiles WHERE workspace_id = ? AND id = ?", (workspace_id, loser)
            )
        _UPSERT_PROFILES.run(conn, self.profiles)
        self.schedule.apply(conn)
        self.runs.apply(conn)
        conn.execute(
            "INSERT INTO consumer_offsets (consumer, log_offset) VALUES (?, ?)"
            " ON CONFLICT (consumer) DO UPDATE SET log_offset = excluded.log_offset",
            (self.consumer, self.offset),
        )


def _workspace(row: tuple[str, str, int]) -> Workspace:
    workspace_id, name, created_at = row
    return Workspace(id=workspace_id, name=name, created_at=from_micros(created_at))


_RejectionRow = tuple[int, str, int, str, str, str | None, int | None, str | None, str | None, str]
_ProfileEventRow = tuple[str, str, int, str, str, str | None, int, int, bytes]


def _rejection(row: _RejectionRow) -> Rejection:
    (rid, workspace_id, received_at, code, message, field, index, message_id, source, payload) = row
    return Rejection(
        id=rid,
        workspace_id=workspace_id,
        received_at=from_micros(received_at),
        code=code,
        message=message,
        field=field,
        index=index,
        message_id=message_id,
        source=source,
        payload=payload,
    )


def _profile_event(row: _ProfileEventRow) -> ProfileEvent:
    ws, profile_id, offset, message_id, event_type, name, timestamp, received_at, body = row
    return ProfileEvent(
        workspace_id=ws,
        profile_id=profile_id,
        offset=offset,
        message_id=message_id,
        type=event_type,
        name=name,
        timestamp=from_micros(timestamp),
        received_at=from_micros(received_at),
        body=body,
    )
