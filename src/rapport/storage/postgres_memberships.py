"""The segment membership index on PostgreSQL (tables of ``0005_memberships.sql``).

``commit_memberships`` first locks the consumer's offset row (an upsert that
returns the stored offset), so two indexers committing at once apply one
after the other and the second leaves out what the first applied. What a
batch writes is decided by ``membership_index.plan_memberships``; every
write is one statement over arrays (``unnest``), whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from rapport.storage.membership_index import (
    MemberPage,
    MembershipBatch,
    SegmentChange,
    SegmentChangePage,
    SegmentMember,
    plan_memberships,
)

# Locks the row (creating it at 0 if missing) and returns the committed offset.
_LOCK_OFFSET_SQL = """
INSERT INTO consumer_offsets (consumer, log_offset) VALUES ($1, 0)
ON CONFLICT (consumer) DO UPDATE SET log_offset = consumer_offsets.log_offset
RETURNING log_offset
"""
_INSERT_HISTORY_SQL = """
INSERT INTO segment_history (workspace_id, log_offset, profile_id, segment_id, version, entered, at)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                     $6::boolean[], $7::timestamptz[])
ON CONFLICT (workspace_id, log_offset) DO NOTHING
"""
_EXISTING_MEMBERS_SQL = """
SELECT m.workspace_id, m.segment_id, m.profile_id
FROM unnest($1::text[], $2::text[], $3::text[]) AS k(w, s, p)
JOIN segment_members AS m ON m.workspace_id = k.w AND m.segment_id = k.s AND m.profile_id = k.p
"""
_UPSERT_MEMBERS_SQL = """
INSERT INTO segment_members (workspace_id, segment_id, profile_id, version, entered_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[])
ON CONFLICT (workspace_id, segment_id, profile_id)
DO UPDATE SET version = excluded.version, entered_at = excluded.entered_at
"""
_DELETE_MEMBERS_SQL = """
DELETE FROM segment_members AS m USING unnest($1::text[], $2::text[], $3::text[]) AS k(w, s, p)
WHERE m.workspace_id = k.w AND m.segment_id = k.s AND m.profile_id = k.p
"""
_MOVE_SIZES_SQL = """
INSERT INTO segment_sizes (workspace_id, segment_id, members)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
ON CONFLICT (workspace_id, segment_id)
DO UPDATE SET members = segment_sizes.members + excluded.members
"""
_SET_OFFSET_SQL = (
    "UPDATE consumer_offsets SET log_offset = greatest(log_offset, $2) WHERE consumer = $1"
)
_SIZES_SQL = """
SELECT segment_id, members FROM segment_sizes
WHERE workspace_id = $1 AND segment_id = ANY($2::text[])
"""
_MEMBERS_SQL = """
SELECT profile_id, version, entered_at FROM segment_members
WHERE workspace_id = $1 AND segment_id = $2 AND profile_id > $3
ORDER BY profile_id LIMIT $4
"""
_HISTORY_SQL = """
SELECT workspace_id, log_offset AS "offset", profile_id, segment_id, version, entered, at
FROM segment_history
WHERE workspace_id = $1 AND profile_id = ANY($2::text[])
  AND log_offset < coalesce($4::bigint, 9223372036854775807)
ORDER BY log_offset DESC LIMIT $3
"""


async def commit_memberships(pool: asyncpg.Pool, batch: MembershipBatch) -> None:
    async with pool.acquire() as conn, conn.transaction():
        committed: int = await conn.fetchval(_LOCK_OFFSET_SQL, batch.consumer)
        plan = plan_memberships(batch.changes, committed)
        if plan.history:
            history = plan.history
            await conn.execute(
                _INSERT_HISTORY_SQL,
                [c.workspace_id for c in history],
                [c.offset for c in history],
                [c.profile_id for c in history],
                [c.segment_id for c in history],
                [c.version for c in history],
                [c.entered for c in history],
                [c.at for c in history],
            )
            keys = list(plan.final)
            rows = await conn.fetch(
                _EXISTING_MEMBERS_SQL,
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
            )
            existing = {(row[0], row[1], row[2]) for row in rows}
            entering = plan.entering
            if entering:
                await conn.execute(
                    _UPSERT_MEMBERS_SQL,
                    [c.workspace_id for c in entering],
                    [c.segment_id for c in entering],
                    [c.profile_id for c in entering],
                    [c.version for c in entering],
                    [c.at for c in entering],
                )
            leaving = plan.leaving
            if leaving:
                await conn.execute(
                    _DELETE_MEMBERS_SQL,
                    [k[0] for k in leaving],
                    [k[1] for k in leaving],
                    [k[2] for k in leaving],
                )
            deltas = plan.size_deltas(existing)
            if deltas:
                await conn.execute(
                    _MOVE_SIZES_SQL,
                    [ws for ws, _ in deltas],
                    [segment_id for _, segment_id in deltas],
                    list(deltas.values()),
                )
        await conn.execute(_SET_OFFSET_SQL, batch.consumer, batch.offset)


async def segment_sizes(
    pool: asyncpg.Pool, workspace_id: str, segment_ids: Sequence[str]
) -> dict[str, int]:
    sizes = dict.fromkeys(segment_ids, 0)
    if sizes:
        rows = await pool.fetch(_SIZES_SQL, workspace_id, list(sizes))
        sizes.update((row[0], int(row[1])) for row in rows)
    return sizes


async def list_segment_members(
    pool: asyncpg.Pool, workspace_id: str, segment_id: str, limit: int, after: str | None
) -> MemberPage:
    if limit <= 0:
        return MemberPage([], None)
    # One row past the page tells whether another page exists; "" sorts first.
    rows = await pool.fetch(_MEMBERS_SQL, workspace_id, segment_id, after or "", limit + 1)
    members = [SegmentMember(**row) for row in rows[:limit]]
    return MemberPage(members, members[-1].profile_id if len(rows) > limit else None)


async def list_segment_history(
    pool: asyncpg.Pool,
    workspace_id: str,
    profile_ids: Sequence[str],
    limit: int,
    before: int | None,
) -> SegmentChangePage:
    if limit <= 0 or not profile_ids:
        return SegmentChangePage([], None)
    rows = await pool.fetch(
        _HISTORY_SQL, workspace_id, list(dict.fromkeys(profile_ids)), limit + 1, before
    )
    changes = [SegmentChange(**row) for row in rows[:limit]]
    return SegmentChangePage(changes, changes[-1].offset if len(rows) > limit else None)
