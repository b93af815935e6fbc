"""Journey runs on SQLite (tables of ``rapport_0008_journey_runs.sql``).

``PreparedRuns`` is a batch's journey part as SQL parameters (every
encoding error raises before the writer sees the batch), applied by
``sqlite._PreparedBatch`` inside the processing transaction. The other
functions are the reads and the outbox marking ``SqliteStorage`` runs on its
reader connections and writer thread. See ``rapport.storage.journey_runs``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

import msgspec

from rapport.core.journeys.instances import LIVE_STATUSES, JourneyInstance
from rapport.storage.base import ProcessingBatch
from rapport.storage.journey_runs import (
    InstancePage,
    JourneyMetrics,
    MetricCount,
    OutboxMessage,
    check_mark,
    check_page,
    latest_instances,
    new_messages,
    summed_increments,
)
from rapport.storage.sqlite_db import BulkInsert, from_micros, to_micros

_encode = msgspec.json.Encoder().encode
_decode_instance = msgspec.json.Decoder(JourneyInstance).decode
_decode_message = msgspec.json.Decoder(OutboxMessage).decode

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
    "ON CONFLICT (workspace_id, id) DO UPDATE SET journey_id = excluded.journey_id,"
    " version = excluded.version, profile_id = excluded.profile_id,"
    " correlation_key = excluded.correlation_key, status = excluded.status,"
    " live = excluded.live, ended_at = excluded.ended_at, doc = excluded.doc",
)
_ADD_METRICS = BulkInsert(
    "journey_metrics",
    ("workspace_id", "journey_id", "version", "step_id", "metric", "count"),
    "ON CONFLICT (workspace_id, journey_id, version, step_id, metric)"
    " DO UPDATE SET count = journey_metrics.count + excluded.count",
)
_INSERT_MESSAGES = BulkInsert(
    "outbox",
    ("workspace_id", "idempotency_key", "status", "doc"),
    "ON CONFLICT (workspace_id, idempotency_key) DO NOTHING",
)

# Every live instance, and the latest ended one per (profile, journey, key).
# INDEXED BY: without statistics (nothing runs ANALYZE) SQLite prefers the
# primary key's workspace prefix, a scan of every instance of the workspace
# per step: 67 ms with 100,000 instances instead of well under 1 ms.
_LOAD_SQL = """
SELECT doc FROM journey_instances INDEXED BY journey_instances_profile
WHERE workspace_id = ? AND profile_id IN ({marks}) AND live = 1
UNION ALL
SELECT doc FROM (
    SELECT doc, row_number() OVER (
        PARTITION BY profile_id, journey_id, correlation_key ORDER BY ended_at DESC, id DESC
    ) AS rank
    FROM journey_instances INDEXED BY journey_instances_profile
    WHERE workspace_id = ? AND profile_id IN ({marks}) AND live = 0
) WHERE rank = 1
"""
_MESSAGE_COLUMNS = "seq, status, updated_at, error, doc"

_MessageRow = tuple[int, str, int | None, str | None, bytes]


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
                _encode(i),
            )
            for ws, i in latest_instances(batch.journey_instances)
        ]
        self.metrics = [
            (*key, count) for key, count in summed_increments(batch.journey_metrics).items()
        ]
        self.marker = (batch.consumer, batch.offset)
        self.messages = [
            (m.workspace_id, m.idempotency_key, "pending", _encode(m))
            for m in new_messages(batch.outbox)
        ]

    def apply(self, conn: sqlite3.Connection) -> None:
        _UPSERT_INSTANCES.run(conn, self.instances)
        if self.metrics:
            added = conn.execute(
                "INSERT INTO journey_metric_batches (consumer, log_offset) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                self.marker,
            ).rowcount
            if added:
                _ADD_METRICS.run(conn, self.metrics)
        _INSERT_MESSAGES.run(conn, self.messages)


def load_instances(
    conn: sqlite3.Connection, workspace_id: str, profile_ids: Sequence[str]
) -> list[JourneyInstance]:
    found: list[JourneyInstance] = []
    wanted = sorted(set(profile_ids))
    # Two uses of the list per statement; SQLite allows 32766 parameters.
    for start in range(0, len(wanted), 5000):
        chunk = wanted[start : start + 5000]
        sql = _LOAD_SQL.format(marks=", ".join("?" * len(chunk)))
        rows = conn.execute(sql, (workspace_id, *chunk, workspace_id, *chunk)).fetchall()
        found.extend(_decode_instance(doc) for (doc,) in rows)
    found.sort(key=lambda i: (i.profile_id, i.journey_id, i.id))
    return found


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


def pending_messages(conn: sqlite3.Connection, limit: int, after: int) -> list[OutboxMessage]:
    check_page(limit)
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM outbox WHERE status = 'pending' AND seq > ?"
        " ORDER BY seq LIMIT ?",
        (after, limit),
    ).fetchall()
    return [_message(row) for row in rows]


def get_message(
    conn: sqlite3.Connection, workspace_id: str, idempotency_key: str
) -> OutboxMessage | None:
    row = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM outbox WHERE workspace_id = ? AND idempotency_key = ?",
        (workspace_id, idempotency_key),
    ).fetchone()
    return None if row is None else _message(row)


def mark_message(
    conn: sqlite3.Connection,
    workspace_id: str,
    idempotency_key: str,
    status: str,
    now: datetime,
    error: str | None,
) -> bool:
    check_mark(status, now)
    cursor = conn.execute(
        "UPDATE outbox SET status = ?, updated_at = ?, error = ?"
        " WHERE workspace_id = ? AND idempotency_key = ? AND status = 'pending'",
        (status, to_micros(now), error, workspace_id, idempotency_key),
    )
    return cursor.rowcount > 0


def _message(row: _MessageRow) -> OutboxMessage:
    seq, status, updated_at, error, doc = row
    return msgspec.structs.replace(
        _decode_message(doc),
        seq=seq,
        status="sent" if status == "sent" else "failed" if status == "failed" else "pending",
        updated_at=None if updated_at is None else from_micros(updated_at),
        error=error,
    )
