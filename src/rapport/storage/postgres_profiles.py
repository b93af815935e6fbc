"""The identity graph and profiles on PostgreSQL: lookups and timelines.

Reads only: ``postgres_processing`` writes identifiers, merges, profiles and
their events. Selects name their columns after the struct fields, so rows map
straight onto ``Struct(**row)``; paging bounds use coalesce rather than
"$n IS NULL OR ...", which keeps them index range conditions in generic plans.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from rapport.core.model import Identifier, MergeRecord, Profile, ProfileEvent
from rapport.storage.base import EventPage

# Merge chains longer than this are a bug (or a cycle), not data to follow.
_MAX_MERGE_CHAIN = 64

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
_FIND_PROFILE_EVENTS_SQL = """
SELECT e.* FROM unnest($2::text[], $3::text[]) AS w(profile_id, message_id)
CROSS JOIN LATERAL (
    SELECT workspace_id, profile_id, log_offset AS "offset", message_id, type, name,
           occurred_at AS timestamp, received_at, body
    FROM profile_events
    WHERE workspace_id = $1 AND profile_id = w.profile_id AND message_id = w.message_id
    ORDER BY log_offset DESC LIMIT 1
) AS e
"""
MERGE_COLUMNS = "workspace_id, winner, loser, merged_at, reason, message_id"
_LIST_MERGES_SQL = f"""
SELECT {MERGE_COLUMNS} FROM profile_merges
WHERE workspace_id = $1 AND winner = $2 ORDER BY merged_at, seq
"""

_decode_profile = msgspec.json.Decoder(Profile).decode


async def find_profile_ids(
    pool: asyncpg.Pool, workspace_id: str, identifiers: Sequence[Identifier]
) -> dict[Identifier, str]:
    if not identifiers:
        return {}
    rows = await pool.fetch(
        _FIND_PROFILE_IDS_SQL,
        workspace_id,
        [identifier.type for identifier in identifiers],
        [identifier.value for identifier in identifiers],
    )
    return {Identifier(row[0], row[1]): row[2] for row in rows}


async def load_profiles(
    pool: asyncpg.Pool, workspace_id: str, ids: Sequence[str]
) -> dict[str, Profile]:
    if not ids:
        return {}
    rows = await pool.fetch(_LOAD_PROFILES_SQL, workspace_id, list(ids))
    profiles = (_decode_profile(row[0]) for row in rows)
    return {profile.id: profile for profile in profiles}


async def existing_profile_ids(
    pool: asyncpg.Pool, workspace_id: str, ids: Sequence[str]
) -> set[str]:
    if not ids:
        return set()
    rows = await pool.fetch(_EXISTING_PROFILES_SQL, workspace_id, list(ids))
    return {row[0] for row in rows}


async def resolve_profile_id(pool: asyncpg.Pool, workspace_id: str, profile_id: str) -> str | None:
    resolved: str | None = await pool.fetchval(_RESOLVE_PROFILE_SQL, workspace_id, profile_id)
    return resolved


async def list_profile_events(
    pool: asyncpg.Pool, workspace_id: str, profile_id: str, limit: int, before: int | None
) -> EventPage:
    if limit <= 0:
        return EventPage(events=[], next_before=None)
    # One row more than asked tells whether an older page exists.
    rows = await pool.fetch(_LIST_PROFILE_EVENTS_SQL, workspace_id, profile_id, limit + 1, before)
    events = [ProfileEvent(**row) for row in rows[:limit]]
    next_before = events[-1].offset if len(rows) > limit else None
    return EventPage(events=events, next_before=next_before)


async def find_profile_event(
    pool: asyncpg.Pool, workspace_id: str, profile_id: str, message_id: str
) -> ProfileEvent | None:
    row = await pool.fetchrow(_FIND_PROFILE_EVENT_SQL, workspace_id, profile_id, message_id)
    return None if row is None else ProfileEvent(**row)


async def find_profile_events(
    pool: asyncpg.Pool, workspace_id: str, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], ProfileEvent]:
    rows = await pool.fetch(
        _FIND_PROFILE_EVENTS_SQL,
        workspace_id,
        [profile_id for profile_id, _ in pairs],
        [message_id for _, message_id in pairs],
    )
    events = (ProfileEvent(**row) for row in rows)
    return {(event.profile_id, event.message_id): event for event in events}


async def list_merges(pool: asyncpg.Pool, workspace_id: str, profile_id: str) -> list[MergeRecord]:
    rows = await pool.fetch(_LIST_MERGES_SQL, workspace_id, profile_id)
    return [MergeRecord(**row) for row in rows]


async def scan_profiles(
    pool: asyncpg.Pool, workspace_id: str, after_id: str | None, limit: int
) -> list[Profile]:
    # The column's own collation on both sides keeps the cursor and the
    # order consistent, and lets the primary key serve the scan.
    rows = await pool.fetch(
        "SELECT doc FROM profiles WHERE workspace_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        workspace_id,
        "" if after_id is None else after_id,
        max(limit, 0),
    )
    return [_decode_profile(row[0]) for row in rows]


async def count_profiles(pool: asyncpg.Pool, workspace_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM profiles WHERE workspace_id = $1", workspace_id
    )
    return count


async def timeline_events(
    pool: asyncpg.Pool,
    workspace_id: str,
    profile_ids: Sequence[str],
    names: Sequence[str] | None,
    since: datetime | None,
) -> list[ProfileEvent]:
    if not profile_ids or (names is not None and not names):
        return []
    rows = await pool.fetch(
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
    pool: asyncpg.Pool,
    workspace_id: str,
    name: str,
    since: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[ProfileEvent]:
    rows = await pool.fetch(
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
