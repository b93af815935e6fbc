"""The segment membership index on SQLite (tables of ``rapport_0005_memberships.sql``).

Jobs for ``SqliteDatabase`` (see ``sqlite_db``): ``PreparedMemberships.apply``
runs on the writer thread inside the group-commit transaction, the readers
in a read snapshot. What a batch writes is decided by
``membership_index.plan_memberships``, from the consumer offset read in the
same transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from rapport.storage.membership_index import (
    MemberKey,
    MemberPage,
    MembershipBatch,
    SegmentChange,
    SegmentChangePage,
    SegmentMember,
    plan_memberships,
)
from rapport.storage.sqlite_db import BulkInsert, from_micros, to_micros

_NO_UPPER_BOUND = 2**63 - 1
_encode = msgspec.json.Encoder().encode

_INSERT_HISTORY = BulkInsert(
    "segment_history",
    ("workspace_id", "log_offset", "profile_id", "segment_id", "version", "entered", "at"),
    "ON CONFLICT (workspace_id, log_offset) DO NOTHING",
)


class PreparedMemberships:
    """A ``MembershipBatch`` checked and converted before the writer sees it."""

    def __init__(self, batch: MembershipBatch) -> None:
        # Naive datetimes fail here (to_micros), not inside the transaction.
        self.micros = {(c.workspace_id, c.offset): to_micros(c.at) for c in batch.changes}
        self.batch = batch

    def apply(self, conn: sqlite3.Connection) -> None:
        batch = self.batch
        row = conn.execute(
            "SELECT log_offset FROM consumer_offsets WHERE consumer = ?", (batch.consumer,)
        ).fetchone()
        plan = plan_memberships(batch.changes, 0 if row is None else int(row[0]))
        if plan.history:
            _INSERT_HISTORY.run(conn, [self._history_row(c) for c in plan.history])
            existing = {key for key in plan.final if _is_member(conn, key)}
            conn.executemany(
                "INSERT INTO segment_members"
                " (workspace_id, segment_id, profile_id, version, entered_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (workspace_id, segment_id, profile_id)"
                " DO UPDATE SET version = excluded.version, entered_at = excluded.entered_at",
                [
                    (*c.key, c.version, self.micros[(c.workspace_id, c.offset)])
                    for c in plan.entering
                ],
            )
            conn.executemany(
                "DELETE FROM segment_members"
                " WHERE workspace_id = ? AND segment_id = ? AND profile_id = ?",
                plan.leaving,
            )
            conn.executemany(
                "INSERT INTO segment_sizes (workspace_id, segment_id, members) VALUES (?, ?, ?)"
                " ON CONFLICT (workspace_id, segment_id)"
                " DO UPDATE SET members = members + excluded.members",
                [(*segment, delta) for segment, delta in plan.size_deltas(existing).items()],
            )
        conn.execute(
            "INSERT INTO consumer_offsets (consumer, log_offset) VALUES (?, ?)"
            " ON CONFLICT (consumer) DO UPDATE"
            " SET log_offset = max(log_offset, excluded.log_offset)",
            (batch.consumer, batch.offset),
        )

    def _history_row(self, c: SegmentChange) -> tuple[object, ...]:
        at = self.micros[(c.workspace_id, c.offset)]
        return (c.workspace_id, c.offset, c.profile_id, c.segment_id, c.version, c.entered, at)


def _is_member(conn: sqlite3.Connection, key: MemberKey) -> bool:
    row = conn.execute(
        "SELECT 1 FROM segment_members"
        " WHERE workspace_id = ? AND segment_id = ? AND profile_id = ?",
        key,
    ).fetchone()
    return row is not None


def read_sizes(
    conn: sqlite3.Connection, workspace_id: str, segment_ids: Sequence[str]
) -> dict[str, int]:
    sizes = dict.fromkeys(segment_ids, 0)
    if not sizes:
        return sizes
    rows = conn.execute(
        "SELECT segment_id, members FROM segment_sizes"
        " WHERE workspace_id = ? AND segment_id IN (SELECT value FROM json_each(?))",
        (workspace_id, _encode(list(sizes))),
    ).fetchall()
    sizes.update((segment_id, int(members)) for segment_id, members in rows)
    return sizes


def read_members(
    conn: sqlite3.Connection, workspace_id: str, segment_id: str, limit: int, after: str | None
) -> MemberPage:
    if limit <= 0:
        return MemberPage([], None)
    # One row past the page tells whether another page exists. "" sorts
    # before every profile id.
    rows = conn.execute(
        "SELECT profile_id, version, entered_at FROM segment_members"
        " WHERE workspace_id = ? AND segment_id = ? AND profile_id > ?"
        " ORDER BY profile_id LIMIT ?",
        (workspace_id, segment_id, after or "", limit + 1),
    ).fetchall()
    members = [
        SegmentMember(profile_id=profile_id, version=version, entered_at=from_micros(entered_at))
        for profile_id, version, entered_at in rows[:limit]
    ]
    return MemberPage(members, members[-1].profile_id if len(rows) > limit else None)


def read_history(
    conn: sqlite3.Connection,
    workspace_id: str,
    profile_ids: Sequence[str],
    limit: int,
    before: int | None,
) -> SegmentChangePage:
    if limit <= 0 or not profile_ids:
        return SegmentChangePage([], None)
    rows = conn.execute(
        "SELECT workspace_id, log_offset, profile_id, segment_id, version, entered, at"
        # INDEXED BY: without statistics SQLite would walk the workspace's whole
        # history by its primary key, newest first, until it found this profile's.
        " FROM segment_history INDEXED BY segment_history_by_profile WHERE workspace_id = ?"
        " AND profile_id IN (SELECT value FROM json_each(?)) AND log_offset < ?"
        " ORDER BY log_offset DESC LIMIT ?",
        (
            workspace_id,
            _encode(list(dict.fromkeys(profile_ids))),
            _NO_UPPER_BOUND if before is None else before,
            limit + 1,
        ),
    ).fetchall()
    changes = [
        SegmentChange(
            workspace_id=ws,
            offset=offset,
            profile_id=profile_id,
            segment_id=segment_id,
            version=version,
            entered=bool(entered),
            at=from_micros(at),
        )
        for ws, offset, profile_id, segment_id, version, entered, at in rows[:limit]
    ]
    return SegmentChangePage(changes, changes[-1].offset if len(rows) > limit else None)
