"""PostgreSQL backend for the scaled-out runtime: ``Storage`` over asyncpg.

``open_postgres`` builds one asyncpg pool whose connections use the chosen
schema as their ``search_path``, creates the schema and applies the numbered
migrations in ``migrations/postgres/``, and returns the storage and the event
log (``postgres_eventlog``) sharing that pool. The pool closes when both have
been closed.

Bulk writes send one array per column and ``unnest`` them server-side, so a
batch costs one statement whatever its size.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import asyncpg
import msgspec
import structlog
from asyncpg.pool import PoolConnectionProxy

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
    postgres_journey_runs,
    postgres_journeys,
    postgres_memberships,
    postgres_outbox,
    postgres_policies,
    postgres_scheduled,
    postgres_templates,
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
from rapport.storage.migrations import (
    apply_migrations_async,
    dialect_directory,
    load_migrations,
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

__all__ = ["PostgresEventLog", "PostgresStorage", "open_postgres"]

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_log = structlog.get_logger(__name__)

# Advisory locks are one shared namespace per database; the first key ("RAPT")
# keeps ours apart from other applications', the second names the schema.
_LOCK_CLASS = 0x52415054
# A connection as the pool hands it out, or a bare one.
_Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
# Merge chains longer than this are a bug (or a cycle), not data to follow.
_MAX_MERGE_CHAIN = 64


async def open_postgres(
    dsn: str, *, schema: str = "public", min_size: int = 1, max_size: int = 10
) -> tuple[PostgresStorage, PostgresEventLog]:
    """Connect, migrate ``schema`` (creating it if missing) and return both halves."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"schema must be a plain SQL identifier, got {schema!r}")
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        server_settings={"search_path": f'"{schema}"'},
    )
    try:
        async with pool.acquire() as conn:
            await _migrate(conn, schema)
            synchronous_commit = await conn.fetchval("SHOW synchronous_commit")
    except BaseException:
        await pool.close()
        raise
    if synchronous_commit == "off":
        # Then a commit returns before its WAL is flushed, and an append that
        # returned (a 2xx sent) can be lost in a crash: say so loudly.
        _log.warning("postgres_synchronous_commit_off", schema=schema)
    lease = _PoolLease(pool, holders=2)
    return PostgresStorage(pool, lease.release), PostgresEventLog(pool, lease.release)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb travels as the bytes msgspec produces and consumes (binary jsonb is
    # a version byte followed by the JSON text): no str round trip either way.
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        format="binary",
    )


def _encode_jsonb(value: bytes) -> bytes:
    return b"\x01" + value


def _decode_jsonb(data: bytes) -> bytes:
    return data[1:]


class _AsyncpgMigrationExecutor:
    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str) -> None:
        # No arguments: the simple query protocol runs a whole script,
        # dollar-quoted function bodies included.
        await self._conn.execute(sql)

    async def fetch_ints(self, sql: str) -> list[int]:
        return [row[0] for row in await self._conn.fetch(sql)]


async def _migrate(conn: _Connection, schema: str) -> None:
    # Several ``rapport api`` processes may start at once: the transaction
    # lock makes them migrate one after the other (the later ones find
    # nothing pending); it also makes check-then-create of the schema race free.
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, schema)
        # Checked first rather than CREATE SCHEMA IF NOT EXISTS, which demands
        # the CREATE privilege on the database even when the schema exists.
        if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        await apply_migrations_async(
            _AsyncpgMigrationExecutor(conn), load_migrations(dialect_directory("postgres"))
        )


class _PoolLease:
    """Closes the shared pool once every holder has let go of it."""

    def __init__(self, pool: asyncpg.Pool, holders: int) -> None:
        self._pool = pool
        self._holders = holders

    async def release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            await self._pool.close()


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
_FIND_PROFILE_IDS_SQL = """
SELECT i.id_type, i.id_value, i.profile_id
FROM unnest($2::text[], $3::text[]) AS q(t, v)
JOIN identifiers AS i ON i.workspace_id = $1 AND i.id_type = q.t AND i.id_value = q.v
"""
_LOAD_PROFILES_SQL = "SELECT doc FROM profiles WHERE workspace_id = $1 AND id = ANY($2::text[])"
_EXISTING_PROFILES_SQL = "SELECT id FROM profiles WHERE workspace_id = $1 AND id = ANY($2::text[])"
# The first live profile on the chain loser -> winner -> ... starting at $2.
_RESOLVE_PROFILE_SQL = f"""
WITH RECURSIVE chain (profile_id, depth) AS (
    SELECT $2::text, 0
    UNION ALL
    SELECT m.winner, chain.depth + 1
    FROM chain JOIN profile_merges AS m ON m.workspace_id = $1 AND m.loser = chain.profile_id
    WHERE chain.depth < {_MAX_MERGE_CHAIN}
)
SELECT chain.profile_id FROM chain
JOIN profiles AS p ON p.workspace_id = $1 AND p.id = chain.profile_id
ORDER BY chain.depth LIMIT 1
"""
_PROFILE_EVENT_COLUMNS = (
    "workspace_id, profile_id, log_offset, message_id, type, name, occurred_at, received_at, body"
)
_LIST_PROFILE_EVENTS_SQL = """
SELECT workspace_id, profile_id, log_offset AS "offset", message_id, type, name,
       occurred_at AS timestamp, received_at, body
FROM profile_events
WHERE workspace_id = $1 AND profile_id = $2
  AND log_offset < coalesce($4::bigint, 9223372036854775807)
ORDER BY log_offset DESC LIMIT $3
"""
_FIND_PROFILE_EVENT_SQL = """
SELECT workspace_id, profile_id, log_offset AS "offset", message_id, type, name,
       occurred_at AS timestamp, received_at, body
FROM profile_events
WHERE workspace_id = $1 AND profile_id = $2 AND message_id = $3
ORDER BY log_offset DESC LIMIT 1
"""
_MERGE_COLUMNS = "workspace_id, winner, loser, merged_at, reason, message_id"
_LIST_MERGES_SQL = f"""
SELECT {_MERGE_COLUMNS} FROM profile_merges
WHERE workspace_id = $1 AND winner = $2 ORDER BY merged_at, seq
"""

# commit_processing, in the order it runs them.
_INSERT_PROFILE_EVENTS_SQL = f"""
INSERT INTO profile_events ({_PROFILE_EVENT_COLUMNS})
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                     $7::timestamptz[], $8::timestamptz[], $9::bytea[])
ON CONFLICT (workspace_id, log_offset) DO NOTHING
"""
_UPSERT_IDENTIFIERS_SQL = """
INSERT INTO identifiers (workspace_id, id_type, id_value, profile_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
ON CONFLICT (workspace_id, id_type, id_value) DO UPDATE SET profile_id = excluded.profile_id
"""
_INSERT_MERGES_SQL = f"""
INSERT INTO profile_merges ({_MERGE_COLUMNS})
SELECT w, wi, l, t, r, mid
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])
     WITH ORDINALITY AS u(w, wi, l, t, r, mid, ord)
ORDER BY ord
ON CONFLICT (workspace_id, loser) DO NOTHING
"""
# $1 workspaces, $2 losers, $3 the live profile each loser ends up in.
_MOVE_TIMELINES_SQL = """
UPDATE profile_events AS e SET profile_id = u.target
FROM unnest($1::text[], $2::text[], $3::text[]) AS u(w, loser, target)
WHERE e.workspace_id = u.w AND e.profile_id = u.loser
"""
_MOVE_IDENTIFIERS_SQL = """
UPDATE identifiers AS i SET profile_id = u.target
FROM unnest($1::text[], $2::text[], $3::text[]) AS u(w, loser, target)
WHERE i.workspace_id = u.w AND i.profile_id = u.loser
"""
_DELETE_LOSERS_SQL = """
DELETE FROM profiles AS p USING unnest($1::text[], $2::text[]) AS u(w, loser)
WHERE p.workspace_id = u.w AND p.id = u.loser
"""
_UPSERT_PROFILES_SQL = """
INSERT INTO profiles (workspace_id, id, created_at, updated_at, doc)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::jsonb[])
ON CONFLICT (workspace_id, id) DO UPDATE
SET created_at = excluded.created_at, updated_at = excluded.updated_at, doc = excluded.doc
"""
_SET_CONSUMER_OFFSET_SQL = """
INSERT INTO consumer_offsets (consumer, log_offset) VALUES ($1, $2)
ON CONFLICT (consumer) DO UPDATE SET log_offset = excluded.log_offset
"""

# Segment writes read the latest version and store the next: the advisory
# lock serialises them (a row lock cannot cover an id not stored yet), which
# also makes revisions commit in increasing order.
_LOCK_SEGMENTS_SQL = (
    "SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || '.segment_definitions'))"
)
_LATEST_SEGMENT_SQL = "SELECT doc FROM segment_definitions WHERE workspace_id = $1 AND id = $2"
_LIST_SEGMENTS_SQL = """
SELECT doc FROM segment_definitions
WHERE workspace_id = $1 AND ($2 OR status = 'active') ORDER BY id COLLATE "C"
"""
_STORE_SEGMENT_SQL = """
INSERT INTO segment_definitions (workspace_id, id, version, status, revision, doc)
VALUES ($1, $2, $3, $4, (SELECT coalesce(max(revision), 0) + 1 FROM segment_definitions), $5)
ON CONFLICT (workspace_id, id) DO UPDATE
SET version = excluded.version, status = excluded.status, revision = excluded.revision,
    doc = excluded.doc
"""

_PUT_BACKFILL_SQL = """
INSERT INTO segment_backfills (workspace_id, segment_id, version, status, doc)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (workspace_id, segment_id) DO UPDATE
SET version = excluded.version, status = excluded.status, doc = excluded.doc
WHERE excluded.version >= segment_backfills.version
RETURNING true
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
        self._profile_decoder = msgspec.json.Decoder(Profile)
        self._segment_decoder = msgspec.json.Decoder(SegmentDefinition)
        self._backfill_decoder = msgspec.json.Decoder(BackfillJob)
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

    # -- identity graph and profiles -----------------------------------------
    async def find_profile_ids(
        self, workspace_id: str, identifiers: Sequence[Identifier]
    ) -> dict[Identifier, str]:
        if not identifiers:
            return {}
        rows = await self._pool.fetch(
            _FIND_PROFILE_IDS_SQL,
            workspace_id,
            [identifier.type for identifier in identifiers],
            [identifier.value for identifier in identifiers],
        )
        return {Identifier(row[0], row[1]): row[2] for row in rows}

    async def load_profiles(self, workspace_id: str, ids: Sequence[str]) -> dict[str, Profile]:
        if not ids:
            return {}
        rows = await self._pool.fetch(_LOAD_PROFILES_SQL, workspace_id, list(ids))
        decode = self._profile_decoder.decode
        profiles = (decode(row[0]) for row in rows)
        return {profile.id: profile for profile in profiles}

    async def existing_profile_ids(self, workspace_id: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        rows = await self._pool.fetch(_EXISTING_PROFILES_SQL, workspace_id, list(ids))
        return {row[0] for row in rows}

    async def resolve_profile_id(self, workspace_id: str, profile_id: str) -> str | None:
        resolved: str | None = await self._pool.fetchval(
            _RESOLVE_PROFILE_SQL, workspace_id, profile_id
        )
        return resolved

    async def list_profile_events(
        self, workspace_id: str, profile_id: str, limit: int, before: int | None = None
    ) -> EventPage:
        if limit <= 0:
            return EventPage(events=[], next_before=None)
        # One row more than asked tells whether an older page exists.
        rows = await self._pool.fetch(
            _LIST_PROFILE_EVENTS_SQL, workspace_id, profile_id, limit + 1, before
        )
        events = [ProfileEvent(**row) for row in rows[:limit]]
        next_before = events[-1].offset if len(rows) > limit else None
        return EventPage(events=events, next_before=next_before)

    async def find_profile_event(
        self, workspace_id: str, profile_id: str, message_id: str
    ) -> ProfileEvent | None:
        row = await self._pool.fetchrow(
            _FIND_PROFILE_EVENT_SQL, workspace_id, profile_id, message_id
        )
        return None if row is None else ProfileEvent(**row)

    async def list_merges(self, workspace_id: str, profile_id: str) -> list[MergeRecord]:
        rows = await self._pool.fetch(_LIST_MERGES_SQL, workspace_id, profile_id)
        return [MergeRecord(**row) for row in rows]

    # -- processing ----------------------------------------------------------
    async def commit_processing(self, batch: ProcessingBatch) -> None:
        # Every parameter is built (and every encoding error raised) before a
        # connection is taken, so the transaction only runs statements.
        statements = _processing_statements(batch, self._encoder.encode)
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
            granted = bool(await conn.fetchval(postgres_scheduled.TRY_LOCK_SQL, _LOCK_CLASS))
            try:
                yield granted
            finally:
                if granted:
                    await conn.execute(postgres_scheduled.UNLOCK_SQL, _LOCK_CLASS)

    # -- segment definitions -------------------------------------------------
    async def put_segment(
        self, draft: SegmentDraft, now: datetime, *, create_only: bool = False
    ) -> SegmentDefinition:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_LOCK_SEGMENTS_SQL, _LOCK_CLASS)
            previous = await self._latest_segment(conn, draft.workspace_id, draft.id)
            if create_only and previous is not None and previous.active:
                raise SegmentAlreadyExists(draft.workspace_id, draft.id)
            return await self._store_segment(conn, next_definition(previous, draft, now))

    async def get_segment(self, workspace_id: str, segment_id: str) -> SegmentDefinition | None:
        async with self._pool.acquire() as conn:
            found = await self._latest_segment(conn, workspace_id, segment_id)
        return found if found is not None and found.active else None

    async def list_segments(
        self, workspace_id: str, *, include_deleted: bool = False
    ) -> list[SegmentDefinition]:
        rows = await self._pool.fetch(_LIST_SEGMENTS_SQL, workspace_id, include_deleted)
        return [self._segment_decoder.decode(row[0]) for row in rows]

    async def delete_segment(
        self, workspace_id: str, segment_id: str, now: datetime
    ) -> SegmentDefinition | None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_LOCK_SEGMENTS_SQL, _LOCK_CLASS)
            previous = await self._latest_segment(conn, workspace_id, segment_id)
            if previous is None or not previous.active:
                return None
            return await self._store_segment(conn, deleted_definition(previous, now))

    async def segments_revision(self) -> int:
        revision: int | None = await self._pool.fetchval(
            "SELECT max(revision) FROM segment_definitions"
        )
        return 0 if revision is None else revision

    # -- segment backfills ---------------------------------------------------
    async def scan_profiles(
        self, workspace_id: str, after_id: str | None, limit: int
    ) -> list[Profile]:
        # The column's own collation on both sides keeps the cursor and the
        # order consistent, and lets the primary key serve the scan.
        rows = await self._pool.fetch(
            "SELECT doc FROM profiles WHERE workspace_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            workspace_id,
            "" if after_id is None else after_id,
            max(limit, 0),
        )
        decode = self._profile_decoder.decode
        return [decode(row[0]) for row in rows]

    async def count_profiles(self, workspace_id: str) -> int:
        count: int = await self._pool.fetchval(
            "SELECT count(*) FROM profiles WHERE workspace_id = $1", workspace_id
        )
        return count

    async def put_backfill(self, job: BackfillJob) -> bool:
        if job.kind == COMPUTED_TRAIT:
            return await put_trait_backfill(self._pool, job)
        stored: bool | None = await self._pool.fetchval(
            _PUT_BACKFILL_SQL,
            job.workspace_id,
            job.segment_id,
            job.version,
            job.status,
            self._encoder.encode(job),
        )
        return bool(stored)

    async def get_backfill(self, workspace_id: str, segment_id: str) -> BackfillJob | None:
        doc: bytes | None = await self._pool.fetchval(
            "SELECT doc FROM segment_backfills WHERE workspace_id = $1 AND segment_id = $2",
            workspace_id,
            segment_id,
        )
        return None if doc is None else self._backfill_decoder.decode(doc)

    async def get_computed_trait_backfill(
        self, workspace_id: str, trait_id: str
    ) -> BackfillJob | None:
        return await get_trait_backfill(self._pool, workspace_id, trait_id)

    async def running_backfills(self) -> list[BackfillJob]:
        rows = await self._pool.fetch("SELECT doc FROM segment_backfills WHERE status = 'running'")
        jobs = [self._backfill_decoder.decode(row[0]) for row in rows]
        jobs.extend(await running_trait_backfills(self._pool))
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
        rows = await self._pool.fetch(
            'SELECT workspace_id, profile_id, log_offset AS "offset", message_id, type, name,'
            " occurred_at AS timestamp, received_at, body FROM profile_events"
            " WHERE workspace_id = $1 AND profile_id = ANY($2::text[])"
            " AND ($3::text[] IS NULL OR name = ANY($3::text[]))"
            " AND ($4::timestamptz IS NULL OR occurred_at >= $4)"
            " ORDER BY log_offset",
            workspace_id,
            list(profile_ids),
            None if names is None else list(names),
            since,
        )
        return [ProfileEvent(**row) for row in rows]

    async def events_by_name(
        self,
        workspace_id: str,
        name: str,
        since: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[ProfileEvent]:
        rows = await self._pool.fetch(
            'SELECT workspace_id, profile_id, log_offset AS "offset", message_id, type, name,'
            " occurred_at AS timestamp, received_at, body FROM profile_events"
            " WHERE workspace_id = $1 AND name = $2"
            " AND ($3::timestamptz IS NULL OR occurred_at >= $3)"
            " AND ($4::timestamptz IS NULL OR (occurred_at, log_offset) > ($4, $5))"
            " ORDER BY occurred_at, log_offset LIMIT $6",
            workspace_id,
            name,
            since,
            None if after is None else after[0],
            0 if after is None else after[1],
            limit,
        )
        return [ProfileEvent(**row) for row in rows]

    async def _latest_segment(
        self, conn: _Connection, workspace_id: str, segment_id: str
    ) -> SegmentDefinition | None:
        doc: bytes | None = await conn.fetchval(_LATEST_SEGMENT_SQL, workspace_id, segment_id)
        return None if doc is None else self._segment_decoder.decode(doc)

    async def _store_segment(
        self, conn: _Connection, definition: SegmentDefinition
    ) -> SegmentDefinition:
        doc = self._encoder.encode(definition)
        await conn.execute(
            _STORE_SEGMENT_SQL,
            definition.workspace_id,
            definition.id,
            definition.version,
            definition.status,
            doc,
        )
        # Every definition write starts the walk of the profiles for its
        # version, in the same transaction (rapport.core.backfill).
        total: int = await conn.fetchval(
            "SELECT count(*) FROM profiles WHERE workspace_id = $1", definition.workspace_id
        )
        job = start_backfill(
            definition.workspace_id,
            definition.id,
            definition.version,
            total,
            definition.updated_at,
        )
        await conn.execute(
            _PUT_BACKFILL_SQL,
            job.workspace_id,
            job.segment_id,
            job.version,
            job.status,
            self._encoder.encode(job),
        )
        # What a reader will get back (the caller's condition tree is not shared).
        return self._segment_decoder.decode(doc)

    # -- computed-trait definitions (postgres_computed_traits) ---------------
    async def put_computed_trait(
        self, draft: ComputedTraitDraft, now: datetime, *, create_only: bool = False
    ) -> ComputedTraitDefinition:
        return await put_trait_definition(self._pool, _LOCK_CLASS, draft, now, create_only)

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
        return await delete_trait_definition(self._pool, _LOCK_CLASS, workspace_id, trait_id, now)

    async def computed_traits_revision(self) -> int:
        return await trait_definitions_revision(self._pool)

    # -- template definitions (postgres_templates) ---------------------------
    async def put_template(
        self, draft: TemplateDraft, now: datetime, *, create_only: bool = False
    ) -> TemplateDefinition:
        return await postgres_templates.put_template(
            self._pool, _LOCK_CLASS, draft, now, create_only
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
            self._pool, _LOCK_CLASS, workspace_id, template_id, now
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
            self._pool, _LOCK_CLASS, workspace_id, document, now, expected_version
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
            self._pool, _LOCK_CLASS, workspace_id, journey_id, definition, now, create_only
        )

    async def transition_journey(
        self, workspace_id: str, journey_id: str, action: str, now: datetime
    ) -> list[JourneyVersion]:
        return await postgres_journeys.transition_journey(
            self._pool, _LOCK_CLASS, workspace_id, journey_id, action, now
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


_Statement: TypeAlias = tuple[str, tuple[object, ...]]


def _processing_statements(
    batch: ProcessingBatch, encode: Callable[[object], bytes]
) -> list[_Statement]:
    """The statements applying ``batch``, in the order ``ProcessingBatch`` documents."""
    statements: list[_Statement] = []
    if batch.events:
        events = batch.events
        statements.append(
            (
                _INSERT_PROFILE_EVENTS_SQL,
                (
                    [event.workspace_id for event in events],
                    [event.profile_id for event in events],
                    [event.offset for event in events],
                    [event.message_id for event in events],
                    [event.type for event in events],
                    [event.name for event in events],
                    [event.timestamp for event in events],
                    [event.received_at for event in events],
                    [event.body for event in events],
                ),
            )
        )
    if batch.identifiers:
        # One statement may not update a row twice: the last owner wins.
        owners = {
            (workspace_id, identifier): profile_id
            for workspace_id, identifier, profile_id in batch.identifiers
        }
        statements.append(
            (
                _UPSERT_IDENTIFIERS_SQL,
                (
                    [workspace_id for workspace_id, _ in owners],
                    [identifier.type for _, identifier in owners],
                    [identifier.value for _, identifier in owners],
                    list(owners.values()),
                ),
            )
        )
    if batch.merges:
        statements.extend(_merge_statements(batch.merges))
    if batch.profiles:
        # Same rule for profiles: the last version in the batch wins.
        latest = {(profile.workspace_id, profile.id): profile for profile in batch.profiles}
        profiles = list(latest.values())
        statements.append(
            (
                _UPSERT_PROFILES_SQL,
                (
                    [profile.workspace_id for profile in profiles],
                    [profile.id for profile in profiles],
                    [profile.created_at for profile in profiles],
                    [profile.updated_at for profile in profiles],
                    [encode(profile) for profile in profiles],
                ),
            )
        )
    statements.extend(postgres_scheduled.scheduled_statements(batch, encode))
    statements.extend(postgres_journey_runs.run_statements(batch, encode))
    statements.append((_SET_CONSUMER_OFFSET_SQL, (batch.consumer, batch.offset)))
    return statements


def _merge_statements(merges: list[MergeRecord]) -> list[_Statement]:
    for merge in merges:
        if merge.winner == merge.loser:
            # Applied, it would delete the very profile it claims to keep.
            raise ValueError(f"profile {merge.loser} cannot merge into itself")
    record = (
        _INSERT_MERGES_SQL,
        (
            [merge.workspace_id for merge in merges],
            [merge.winner for merge in merges],
            [merge.loser for merge in merges],
            [merge.merged_at for merge in merges],
            [merge.reason for merge in merges],
            [merge.message_id for merge in merges],
        ),
    )
    # Applying merges one by one would move A's timeline to B and then B's
    # (now holding A's) to C; moving every loser straight to the end of its
    # chain within the batch gives the same result in one statement each.
    targets = _final_merge_targets(merges)
    workspaces = [workspace_id for workspace_id, _ in targets]
    losers = [loser for _, loser in targets]
    winners = list(targets.values())
    return [
        record,
        (_MOVE_TIMELINES_SQL, (workspaces, losers, winners)),
        # A merged-away profile owns nothing any more: identifiers that still
        # point at it follow it to its winner.
        (_MOVE_IDENTIFIERS_SQL, (workspaces, losers, winners)),
        (_DELETE_LOSERS_SQL, (workspaces, losers)),
    ]


def _final_merge_targets(merges: Sequence[MergeRecord]) -> dict[tuple[str, str], str]:
    """``(workspace, loser) -> winner``, following chains formed within ``merges``."""
    winner_of = {(merge.workspace_id, merge.loser): merge.winner for merge in merges}
    targets: dict[tuple[str, str], str] = {}
    for workspace_id, loser in winner_of:
        target = winner_of[(workspace_id, loser)]
        visited = {loser}
        while (workspace_id, target) in winner_of and target not in visited:
            visited.add(target)
            target = winner_of[(workspace_id, target)]
        targets[(workspace_id, loser)] = target
    return targets


def _storable_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL. Rejections exist to keep bad input
    # visible, so a NUL in it must not make recording the rejection fail.
    return value.replace("\x00", "\ufffd")


def _storable_optional_text(value: str | None) -> str | None:
    return None if value is None else _storable_text(value)
