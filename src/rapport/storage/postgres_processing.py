"""Processing commits on PostgreSQL: a ``ProcessingBatch`` as SQL statements.

``processing_statements`` builds every parameter of a batch (raising any
encoding error) before ``PostgresStorage.commit_processing`` takes a
connection, so its transaction only runs statements. Bulk writes send one
array per column and ``unnest`` them server-side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

from rapport.core.model import MergeRecord
from rapport.storage import postgres_journey_runs, postgres_scheduled
from rapport.storage.base import ProcessingBatch
from rapport.storage.postgres_profiles import MERGE_COLUMNS

_PROFILE_EVENT_COLUMNS = (
    "workspace_id, profile_id, log_offset, message_id, type, name, occurred_at, received_at, body"
)

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
INSERT INTO profile_merges ({MERGE_COLUMNS})
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

_Statement: TypeAlias = tuple[str, tuple[object, ...]]


def processing_statements(
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
