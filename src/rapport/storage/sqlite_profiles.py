"""The identity graph and profiles on SQLite: lookups and timelines.

Read jobs for ``SqliteDatabase`` (see ``sqlite_db``); ``sqlite_processing``
writes identifiers, merges, profiles and their events. Callers return early
on empty input, before a reader thread is asked for anything.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

import msgspec

from rapport.core.model import Identifier, MergeRecord, Profile, ProfileEvent
from rapport.storage.base import EventPage
from rapport.storage.sqlite_db import from_micros, to_micros

# A merge chain longer than this can only be a cycle (a corrupt graph).
MAX_MERGE_HOPS = 1000
NO_UPPER_BOUND = 2**63 - 1

_encode = msgspec.json.Encoder().encode
decode_profile = msgspec.json.Decoder(Profile).decode

_ProfileEventRow = tuple[str, str, int, str, str, str | None, int, int, bytes]


def find_profile_ids(
    conn: sqlite3.Connection, workspace_id: str, identifiers: Sequence[Identifier]
) -> dict[Identifier, str]:
    found: dict[Identifier, str] = {}
    for identifier in identifiers:
        row = conn.execute(
            "SELECT profile_id FROM identifiers WHERE workspace_id = ? AND type = ? AND value = ?",
            (workspace_id, identifier.type, identifier.value),
        ).fetchone()
        if row is not None:
            found[identifier] = row[0]
    return found


def load_profiles(conn: sqlite3.Connection, workspace_id: str, wanted: bytes) -> dict[str, Profile]:
    """``wanted``: the ids as a JSON array."""
    rows = conn.execute(
        "SELECT id, doc FROM profiles"
        " WHERE workspace_id = ? AND id IN (SELECT value FROM json_each(?))",
        (workspace_id, wanted),
    ).fetchall()
    return {profile_id: decode_profile(doc) for profile_id, doc in rows}


def existing_profile_ids(conn: sqlite3.Connection, workspace_id: str, wanted: bytes) -> set[str]:
    """``wanted``: the ids as a JSON array."""
    rows = conn.execute(
        "SELECT id FROM profiles WHERE workspace_id = ? AND id IN (SELECT value FROM json_each(?))",
        (workspace_id, wanted),
    ).fetchall()
    return {profile_id for (profile_id,) in rows}


def encode_ids(ids: Sequence[str]) -> bytes:
    """``ids`` as the JSON array ``load_profiles`` and ``existing_profile_ids`` take."""
    return _encode(list(ids))


def resolve_profile_id(conn: sqlite3.Connection, workspace_id: str, profile_id: str) -> str | None:
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


def list_profile_events(
    conn: sqlite3.Connection, workspace_id: str, profile_id: str, limit: int, before: int | None
) -> EventPage:
    upper = NO_UPPER_BOUND if before is None else before
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


def find_profile_event(
    conn: sqlite3.Connection, workspace_id: str, profile_id: str, message_id: str
) -> ProfileEvent | None:
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


def find_profile_events(
    conn: sqlite3.Connection, workspace_id: str, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], ProfileEvent]:
    # One lookup per pair on the timeline index, all in one trip to the reader thread.
    found: dict[tuple[str, str], ProfileEvent] = {}
    for pair in pairs:
        event = find_profile_event(conn, workspace_id, *pair)
        if event is not None:
            found[pair] = event
    return found


def list_merges(conn: sqlite3.Connection, workspace_id: str, profile_id: str) -> list[MergeRecord]:
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


def profile_docs(
    conn: sqlite3.Connection, workspace_id: str, after_id: str | None, limit: int
) -> list[bytes]:
    """A page of profiles in id order, undecoded (see ``decode_profile``)."""
    rows = conn.execute(
        "SELECT doc FROM profiles WHERE workspace_id = ? AND id > ? ORDER BY id LIMIT ?",
        (workspace_id, "" if after_id is None else after_id, max(limit, 0)),
    ).fetchall()
    return [doc for (doc,) in rows]


def count_profiles(conn: sqlite3.Connection, workspace_id: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM profiles WHERE workspace_id = ?", (workspace_id,)
    ).fetchone()
    return int(row[0])


def timeline_events(
    conn: sqlite3.Connection,
    workspace_id: str,
    profile_ids: Sequence[str],
    names: Sequence[str] | None,
    lower: int,
) -> list[ProfileEvent]:
    """``lower``: the earliest timestamp, from ``lower_micros``."""
    named = "" if names is None else " AND name IN (SELECT value FROM json_each(?))"
    wanted = [] if names is None else [_encode(list(names))]
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


def events_by_name(
    conn: sqlite3.Connection,
    workspace_id: str,
    name: str,
    lower: int,
    after: tuple[int, int],
    limit: int,
) -> list[ProfileEvent]:
    """``lower``: the earliest timestamp, from ``lower_micros``; ``after``: the
    (timestamp, offset) the page starts after."""
    at, offset = after
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


def lower_micros(since: datetime | None) -> int:
    """The lower timestamp bound for ``since`` (none: every event)."""
    return -NO_UPPER_BOUND if since is None else to_micros(since)


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
