"""Processing commits on SQLite: a ``ProcessingBatch`` applied to ``rapport.db``.

``PreparedBatch`` turns a batch into SQL parameters on the event loop's
thread (so bad input fails before the writer sees it) and applies them on
the single writer thread, in the order ``ProcessingBatch`` documents.
"""

from __future__ import annotations

import sqlite3

import msgspec

from rapport.storage import sqlite_journey_runs, sqlite_scheduled
from rapport.storage.base import ProcessingBatch
from rapport.storage.sqlite_db import BulkInsert, MicrosCache, to_micros

_encode = msgspec.json.Encoder().encode

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


class PreparedBatch:
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
