"""The outbox on SQLite: inserting messages, claiming them, recording delivery.

Messages are inserted by the processing commit (``INSERT_MESSAGES`` with
``insert_rows``, run by ``sqlite_journey_runs.PreparedRuns``); the other
functions run on ``SqliteStorage``'s reader connections and writer thread.
One writer thread serialises every claim, so a claim is a plain
``UPDATE ... RETURNING``. See ``rapport.storage.outbox`` for the rules.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

import msgspec

from rapport.storage.base import ProcessingBatch
from rapport.storage.journey_runs import (
    OutboxMessage,
    check_mark,
    check_page,
    new_messages,
)
from rapport.storage.outbox import (
    DeliveryAttempt,
    OutboxPage,
    check_attempt,
    check_claim,
    check_limit,
    first_due,
)
from rapport.storage.sqlite_db import BulkInsert, from_micros, to_micros
from rapport.storage.sqlite_scheduled import PreparedSchedule

_encode = msgspec.json.Encoder().encode
_decode_message = msgspec.json.Decoder(OutboxMessage).decode

INSERT_MESSAGES = BulkInsert(
    "outbox",
    ("workspace_id", "idempotency_key", "status", "next_attempt_at", "profile_id", "doc"),
    "ON CONFLICT (workspace_id, idempotency_key) DO NOTHING",
)
_COLUMNS = (
    "seq, status, updated_at, error, attempts, next_attempt_at, provider_message_id,"
    " sent_at, template_version, template_id, doc"
)
_Row = tuple[
    int,
    str,
    int | None,
    str | None,
    int,
    int | None,
    str | None,
    int | None,
    int | None,
    str | None,
    bytes,
]
_STATUSES = frozenset(("pending", "sent", "failed", "dropped", "dead"))


def insert_rows(messages: list[OutboxMessage]) -> list[tuple[object, ...]]:
    """The batch's new messages as ``INSERT_MESSAGES`` rows (checked and encoded here)."""
    return [
        (
            m.workspace_id,
            m.idempotency_key,
            m.status,
            to_micros(first_due(m)),
            m.profile_id,
            _encode(m),
        )
        for m in new_messages(messages)
    ]


def message(row: _Row) -> OutboxMessage:
    seq, status, updated_at, error, attempts, next_at, provider_id, sent_at, version, used, doc = (
        row
    )
    return msgspec.structs.replace(
        _decode_message(doc),
        seq=seq,
        status=status if status in _STATUSES else "pending",
        updated_at=None if updated_at is None else from_micros(updated_at),
        error=error,
        attempts=attempts,
        next_attempt_at=None if next_at is None else from_micros(next_at),
        provider_message_id=provider_id,
        sent_at=None if sent_at is None else from_micros(sent_at),
        template_version=version,
        template_id=used,
    )


def pending_messages(conn: sqlite3.Connection, limit: int, after: int) -> list[OutboxMessage]:
    check_page(limit)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox WHERE status = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
        (after, limit),
    ).fetchall()
    return [message(row) for row in rows]


def get_message(
    conn: sqlite3.Connection, workspace_id: str, idempotency_key: str
) -> OutboxMessage | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox WHERE workspace_id = ? AND idempotency_key = ?",
        (workspace_id, idempotency_key),
    ).fetchone()
    return None if row is None else message(row)


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


def claim_due(
    conn: sqlite3.Connection, now: datetime, limit: int, lease: timedelta
) -> list[OutboxMessage]:
    check_claim(now, limit, lease)
    rows = conn.execute(
        f"UPDATE outbox SET next_attempt_at = ? WHERE seq IN ("
        " SELECT seq FROM outbox INDEXED BY outbox_due"
        " WHERE status = 'pending' AND next_attempt_at <= ?"
        " ORDER BY next_attempt_at, seq LIMIT ?"
        f") RETURNING {_COLUMNS}",
        (to_micros(now + lease), to_micros(now), limit),
    ).fetchall()
    return sorted((message(row) for row in rows), key=lambda m: m.seq)


def next_due(conn: sqlite3.Connection) -> datetime | None:
    row = conn.execute(
        "SELECT min(next_attempt_at) FROM outbox INDEXED BY outbox_due WHERE status = 'pending'"
    ).fetchone()
    return None if row is None or row[0] is None else from_micros(row[0])


def record_attempt(conn: sqlite3.Connection, attempt: DeliveryAttempt) -> bool:
    check_attempt(attempt)
    at = to_micros(attempt.at)
    counted = int(attempt.counted)
    if attempt.outcome == "retry":
        assert attempt.retry_at is not None  # check_attempt
        cursor = conn.execute(
            "UPDATE outbox SET attempts = attempts + ?, next_attempt_at = ?, updated_at = ?,"
            " error = coalesce(?, error)"
            " WHERE workspace_id = ? AND idempotency_key = ? AND status = 'pending'",
            (
                counted,
                to_micros(attempt.retry_at),
                at,
                attempt.error,
                attempt.workspace_id,
                attempt.idempotency_key,
            ),
        )
    else:
        cursor = conn.execute(
            "UPDATE outbox SET status = ?, attempts = attempts + ?, updated_at = ?,"
            " error = coalesce(?, error), provider_message_id = ?, template_version = ?,"
            " template_id = ?, sent_at = ?"
            " WHERE workspace_id = ? AND idempotency_key = ? AND status = 'pending'",
            (
                attempt.outcome,
                counted,
                at,
                attempt.error,
                attempt.provider_message_id,
                attempt.template_version,
                attempt.template_id,
                at if attempt.outcome == "sent" else None,
                attempt.workspace_id,
                attempt.idempotency_key,
            ),
        )
    if cursor.rowcount == 0:
        return False
    if attempt.event is not None:
        # The relay's own table: the event reaches the log once this commits.
        PreparedSchedule(
            ProcessingBatch(consumer="rapport:delivery", offset=0, scheduled=[attempt.event])
        ).apply(conn)
    return True


def list_dead(
    conn: sqlite3.Connection, workspace_id: str, limit: int, after: int | None
) -> OutboxPage:
    check_limit(limit)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox INDEXED BY outbox_dead"
        " WHERE workspace_id = ? AND status = 'dead' AND seq > ? ORDER BY seq LIMIT ?",
        (workspace_id, after or 0, limit + 1),
    ).fetchall()
    chosen = [message(row) for row in rows[:limit]]
    return OutboxPage(chosen, chosen[-1].seq if len(rows) > limit else None)


def replay_dead(
    conn: sqlite3.Connection, workspace_id: str, idempotency_key: str, now: datetime
) -> OutboxMessage | None:
    row = conn.execute(
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ?"
        " WHERE workspace_id = ? AND idempotency_key = ? AND status = 'dead'"
        f" RETURNING {_COLUMNS}",
        (to_micros(now), to_micros(now), workspace_id, idempotency_key),
    ).fetchone()
    return None if row is None else message(row)


def list_profile_messages(
    conn: sqlite3.Connection, workspace_id: str, profile_id: str, limit: int, before: int | None
) -> OutboxPage:
    check_limit(limit)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox INDEXED BY outbox_profile"
        " WHERE workspace_id = ? AND profile_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
        (workspace_id, profile_id, before if before is not None else 2**63 - 1, limit + 1),
    ).fetchall()
    chosen = [message(row) for row in rows[:limit]]
    return OutboxPage(chosen, chosen[-1].seq if len(rows) > limit else None)
