"""Journey runs on SQLite (tables of ``rapport_0008_journey_runs.sql``).

``PreparedRuns`` is a batch's journey part as SQL parameters (every
encoding error raises before the writer sees the batch), applied by
``sqlite_processing.PreparedBatch`` inside the processing transaction. The other
functions are the reads ``SqliteStorage`` runs on its reader connections (the
outbox is ``sqlite_outbox``). See ``rapport.storage.journey_runs``.

An instance's ``doc`` is MessagePack (the migration's comment says JSON:
rows written before are JSON, and both read; see ``_encode_instance``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from rapport.core.journeys.instances import LIVE_STATUSES, JourneyInstance
from rapport.storage.base import ProcessingBatch
from rapport.storage.journey_runs import (
    InstancePage,
    JourneyMetrics,
    MetricCount,
    check_page,
    latest_instances,
    summed_increments,
)
from rapport.storage.sqlite_db import BulkInsert, to_micros
from rapport.storage.sqlite_outbox import INSERT_MESSAGES, insert_rows

_encode = msgspec.json.Encoder().encode
# Instances are stored as MessagePack: about a quarter smaller than JSON,
# which keeps a typical row (trace included) under SQLite's overflow
# threshold (~1,000 bytes for a WITHOUT ROWID row on 4 KiB pages). A row
# past it takes an overflow page of its own: at 100,000 waiting, each firing
# then rewrote a whole page, four times the WAL traffic. Rows written as
# JSON before still read (``_decode_instance``); the API shows them as JSON.
_encode_instance = msgspec.msgpack.Encoder().encode
_decode_json_instance = msgspec.json.Decoder(JourneyInstance).decode
_decode_msgpack_instance = msgspec.msgpack.Decoder(JourneyInstance).decode

_UPSERT_INSTANCES = BulkInsert(
    "journey_instances",
    (
        "workspace_id",
        "id",
        "journey_id",
        "version",
        "profile_id",
        "correlation_key",
        "status",
        "live",
        "ended_at",
        "doc",
    ),
    # Only what a step changes: a column in SET has its indexes rewritten even
    # when its value stays, and the profile index is in random order (one
    # page per instance). The rest moves with a merge only: ``_MOVE_INSTANCES``.
    "ON CONFLICT (workspace_id, id) DO UPDATE SET status = excluded.status,"
    " live = excluded.live, ended_at = excluded.ended_at, doc = excluded.doc",
)


class _MoveInstances:
    """Rewrites only the rows whose identity columns differ (an instance moved to
    the merged profile); for every other row it is a primary-key probe.

    One ``UPDATE ... FROM (VALUES ...)`` per ``MAX_ROWS`` rows, not an
    ``executemany``: that steps once per row, and every step hands the GIL
    back and waits to take it again, behind the event loop's thread building
    the next step (500 hand-backs per step in a burst of timers). The plan
    walks the values and probes the primary key (checked in the tests).
    """

    MAX_ROWS = 256

    def __init__(self) -> None:
        self._sql: dict[int, str] = {}

    def sql(self, rows: int) -> str:
        sql = self._sql.get(rows)
        if sql is None:
            values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
            sql = (
                "UPDATE journey_instances SET journey_id = m.column3, version = m.column4,"
                " profile_id = m.column5, correlation_key = m.column6"
                f" FROM (VALUES {values}) AS m"
                " WHERE journey_instances.workspace_id = m.column1"
                " AND journey_instances.id = m.column2"
                " AND (journey_instances.journey_id IS NOT m.column3"
                " OR journey_instances.version IS NOT m.column4"
                " OR journey_instances.profile_id IS NOT m.column5"
                " OR journey_instances.correlation_key IS NOT m.column6)"
            )
            self._sql[rows] = sql
        return sql

    def run(self, conn: sqlite3.Connection, rows: Sequence[Sequence[object]]) -> None:
        for start in range(0, len(rows), self.MAX_ROWS):
            chunk = rows[start : start + self.MAX_ROWS]
            conn.execute(self.sql(len(chunk)), [value for row in chunk for value in row])


_MOVE_INSTANCES = _MoveInstances()
_ADD_METRICS = BulkInsert(
    "journey_metrics",
    ("workspace_id", "journey_id", "version", "step_id", "metric", "count"),
    "ON CONFLICT (workspace_id, journey_id, version, step_id, metric)"
    " DO UPDATE SET count = journey_metrics.count + excluded.count",
)

# Every instance of the profiles, in one walk of the profile index: live
# ones are kept, and of the ended ones only the latest per (profile, journey,
# key), which re-entry reads, is decoded (``_latest_ended``). A UNION of the
# live rows and a window over the ended rows probed each profile twice and
# sorted the ended rows (about 6% of the reads of a burst of timer firings).
# INDEXED BY: without statistics (nothing runs ANALYZE) SQLite prefers the
# primary key's workspace prefix, a scan of every instance of the workspace
# per step: 67 ms with 100,000 instances instead of well under 1 ms.
_LOAD_SQL = """
SELECT live, profile_id, journey_id, correlation_key, ended_at, id, doc
FROM journey_instances INDEXED BY journey_instances_profile
WHERE workspace_id = ? AND profile_id IN ({marks})
"""


class PreparedRuns:
    def __init__(self, batch: ProcessingBatch) -> None:
        self.instances = [
            (
                ws,
                i.id,
                i.journey_id,
                i.version,
                i.profile_id,
                i.correlation_key,
                i.status,
                int(i.status in LIVE_STATUSES),
                None if i.ended_at is None else to_micros(i.ended_at),
                _encode_instance(i),
            )
            for ws, i in latest_instances(batch.journey_instances)
        ]
        self.moves = [(ws, i, j, v, p, k) for ws, i, j, v, p, k, *_ in self.instances]
        self.metrics = [
            (*key, count) for key, count in summed_increments(batch.journey_metrics).items()
        ]
        self.marker = (batch.consumer, batch.offset)
        self.messages = insert_rows(batch.outbox)  # rapport.storage.sqlite_outbox

    def apply(self, conn: sqlite3.Connection) -> None:
        _UPSERT_INSTANCES.run(conn, self.instances)
        _MOVE_INSTANCES.run(conn, self.moves)
        if self.metrics:
            added = conn.execute(
                "INSERT INTO journey_metric_batches (consumer, log_offset) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                self.marker,
            ).rowcount
            if added:
                _ADD_METRICS.run(conn, self.metrics)
        INSERT_MESSAGES.run(conn, self.messages)


def _decode_instance(doc: bytes) -> JourneyInstance:
    """A stored instance: MessagePack, or JSON for rows written before."""
    return _decode_json_instance(doc) if doc[:1] == b"{" else _decode_msgpack_instance(doc)


def load_instances(
    conn: sqlite3.Connection, workspace_id: str, profile_ids: Sequence[str]
) -> list[JourneyInstance]:
    found: list[JourneyInstance] = []
    wanted = sorted(set(profile_ids))
    # SQLite allows 32766 parameters.
    for start in range(0, len(wanted), 5000):
        chunk = wanted[start : start + 5000]
        sql = _LOAD_SQL.format(marks=", ".join("?" * len(chunk)))
        ended: dict[tuple[str, str, str | None], tuple[tuple[bool, int], str, bytes]] = {}
        for live, profile_id, journey_id, key, ended_at, instance_id, doc in conn.execute(
            sql, (workspace_id, *chunk)
        ):
            if live:
                found.append(_decode_instance(doc))
            else:
                _latest_ended(ended, (profile_id, journey_id, key), ended_at, instance_id, doc)
        found.extend(_decode_instance(doc) for _, _, doc in ended.values())
    found.sort(key=lambda i: (i.profile_id, i.journey_id, i.id))
    return found


def _latest_ended(
    latest: dict[tuple[str, str, str | None], tuple[tuple[bool, int], str, bytes]],
    slot: tuple[str, str, str | None],
    ended_at: int | None,
    instance_id: str,
    doc: bytes,
) -> None:
    """Keep ``doc`` for ``slot`` if it ended last (ties: the greater id; no
    ``ended_at`` counts as earliest, as NULL sorts in SQL)."""
    rank = (False, 0) if ended_at is None else (True, ended_at)
    kept = latest.get(slot)
    if kept is None or (rank, instance_id) > (kept[0], kept[1]):
        latest[slot] = (rank, instance_id, doc)


def get_instance(
    conn: sqlite3.Connection, workspace_id: str, instance_id: str
) -> JourneyInstance | None:
    row = conn.execute(
        "SELECT doc FROM journey_instances WHERE workspace_id = ? AND id = ?",
        (workspace_id, instance_id),
    ).fetchone()
    return None if row is None else _decode_instance(row[0])


def page_instances(
    conn: sqlite3.Connection,
    workspace_id: str,
    journey_id: str,
    limit: int,
    after: str | None,
    status: str | None,
) -> InstancePage:
    check_page(limit)
    sql = "SELECT id, doc FROM journey_instances WHERE workspace_id = ? AND journey_id = ?"
    args: list[object] = [workspace_id, journey_id]
    if status is not None:
        sql += " AND status = ?"
        args.append(status)
    if after is not None:
        sql += " AND id > ?"
        args.append(after)
    rows = conn.execute(f"{sql} ORDER BY id LIMIT ?", (*args, limit + 1)).fetchall()
    chosen = rows[:limit]
    return InstancePage(
        [_decode_instance(doc) for _, doc in chosen],
        chosen[-1][0] if len(rows) > limit else None,
    )


def instance_counts(conn: sqlite3.Connection, workspace_id: str, journey_id: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, count(*) FROM journey_instances"
        " WHERE workspace_id = ? AND journey_id = ? GROUP BY status",
        (workspace_id, journey_id),
    ).fetchall()
    return {status: int(count) for status, count in rows}


def metrics(conn: sqlite3.Connection, workspace_id: str, journey_id: str) -> JourneyMetrics:
    rows = conn.execute(
        "SELECT version, step_id, metric, count FROM journey_metrics"
        " WHERE workspace_id = ? AND journey_id = ? ORDER BY version, step_id, metric",
        (workspace_id, journey_id),
    ).fetchall()
    return JourneyMetrics(journey_id, [MetricCount(*row) for row in rows])
