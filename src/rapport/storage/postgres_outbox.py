"""The outbox on PostgreSQL: inserting messages, claiming them, recording delivery.

``insert_statement`` is what a processing commit runs for the batch's new
messages (in its transaction, see ``postgres_journey_runs``). Senders of
several workers claim with ``FOR UPDATE SKIP LOCKED`` and a lease
(``next_attempt_at`` moved to ``now + lease`` in the same statement): two
claims never return the same row, and a row whose sender died comes back
when its lease ends. See ``rapport.storage.outbox`` for the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeAlias

import asyncpg
import msgspec

from rapport.storage.base import ProcessingBatch
from rapport.storage.journey_runs import OutboxMessage, check_mark, check_page, new_messages
from rapport.storage.outbox import (
    DeliveryAttempt,
    OutboxPage,
    check_attempt,
    check_claim,
    check_limit,
    first_due,
)
from rapport.storage.postgres_scheduled import scheduled_statements

_Statement: TypeAlias = tuple[str, tuple[object, ...]]
_encode = msgspec.json.Encoder().encode
_decode_message = msgspec.json.Decoder(OutboxMessage).decode
_STATUSES = frozenset(("pending", "sent", "failed", "dropped", "dead"))

_INSERT_SQL = """
INSERT INTO outbox (workspace_id, idempotency_key, status, next_attempt_at, profile_id, doc)
SELECT w, k, s, t, p, d
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bytea[])
     WITH ORDINALITY AS u(w, k, s, t, p, d, n)
ORDER BY n
ON CONFLICT (workspace_id, idempotency_key) DO NOTHING
"""
_COLUMNS = (
    "seq, status, updated_at, error, attempts, next_attempt_at, provider_message_id,"
    " sent_at, template_version, template_id, doc"
)
_PENDING_SQL = f"""
SELECT {_COLUMNS} FROM outbox WHERE status = 'pending' AND seq > $1 ORDER BY seq LIMIT $2
"""
_GET_SQL = f"SELECT {_COLUMNS} FROM outbox WHERE workspace_id = $1 AND idempotency_key = $2"
_MARK_SQL = """
UPDATE outbox SET status = $3, updated_at = $4, error = $5
WHERE workspace_id = $1 AND idempotency_key = $2 AND status = 'pending'
"""
_CLAIM_SQL = """
WITH due AS (
    SELECT seq FROM outbox
    WHERE status = 'pending' AND next_attempt_at <= $1
    ORDER BY next_attempt_at, seq LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox AS o SET next_attempt_at = $3 FROM due WHERE o.seq = due.seq
RETURNING o.seq, o.status, o.updated_at, o.error, o.attempts, o.next_attempt_at,
    o.provider_message_id, o.sent_at, o.template_version, o.template_id, o.doc
"""
_RETRY_SQL = """
UPDATE outbox SET attempts = attempts + $3, next_attempt_at = $4, updated_at = $5,
    error = coalesce($6, error)
WHERE workspace_id = $1 AND idempotency_key = $2 AND status = 'pending'
"""
_FINISH_SQL = """
UPDATE outbox SET status = $3, attempts = attempts + $4, updated_at = $5,
    error = coalesce($6, error), provider_message_id = $7, template_version = $8, sent_at = $9,
    template_id = $10
WHERE workspace_id = $1 AND idempotency_key = $2 AND status = 'pending'
"""
_DEAD_SQL = f"""
SELECT {_COLUMNS} FROM outbox
WHERE workspace_id = $1 AND status = 'dead' AND seq > $2 ORDER BY seq LIMIT $3
"""
_REPLAY_SQL = f"""
UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $3, updated_at = $3
WHERE workspace_id = $1 AND idempotency_key = $2 AND status = 'dead'
RETURNING {_COLUMNS}
"""
_PROFILE_SQL = f"""
SELECT {_COLUMNS} FROM outbox
WHERE workspace_id = $1 AND profile_id = $2 AND ($3::bigint IS NULL OR seq < $3)
ORDER BY seq DESC LIMIT $4
"""


def insert_statement(messages: list[OutboxMessage]) -> list[_Statement]:
    """The statement inserting the batch's new messages (none when there are none)."""
    rows = new_messages(messages)
    if not rows:
        return []
    return [
        (
            _INSERT_SQL,
            (
                [m.workspace_id for m in rows],
                [m.idempotency_key for m in rows],
                [m.status for m in rows],
                [first_due(m) for m in rows],
                [m.profile_id for m in rows],
                [_encode(m) for m in rows],
            ),
        )
    ]


def message(row: asyncpg.Record) -> OutboxMessage:
    status = row["status"]
    return msgspec.structs.replace(
        _decode_message(row["doc"]),
        seq=int(row["seq"]),
        status=status if status in _STATUSES else "pending",
        updated_at=row["updated_at"],
        error=row["error"],
        attempts=int(row["attempts"]),
        next_attempt_at=row["next_attempt_at"],
        provider_message_id=row["provider_message_id"],
        sent_at=row["sent_at"],
        template_version=row["template_version"],
        template_id=row["template_id"],
    )


async def pending_messages(pool: asyncpg.Pool, limit: int, after: int) -> list[OutboxMessage]:
    check_page(limit)
    return [message(row) for row in await pool.fetch(_PENDING_SQL, after, limit)]


async def get_message(
    pool: asyncpg.Pool, workspace_id: str, idempotency_key: str
) -> OutboxMessage | None:
    row = await pool.fetchrow(_GET_SQL, workspace_id, idempotency_key)
    return None if row is None else message(row)


async def mark_message(
    pool: asyncpg.Pool,
    workspace_id: str,
    idempotency_key: str,
    status: str,
    now: datetime,
    error: str | None,
) -> bool:
    check_mark(status, now)
    result: str = await pool.execute(_MARK_SQL, workspace_id, idempotency_key, status, now, error)
    return result != "UPDATE 0"


async def claim_due(
    pool: asyncpg.Pool, now: datetime, limit: int, lease: timedelta
) -> list[OutboxMessage]:
    check_claim(now, limit, lease)
    rows = await pool.fetch(_CLAIM_SQL, now, limit, now + lease)
    return sorted((message(row) for row in rows), key=lambda m: m.seq)


async def next_due(pool: asyncpg.Pool) -> datetime | None:
    due: datetime | None = await pool.fetchval(
        "SELECT min(next_attempt_at) FROM outbox WHERE status = 'pending'"
    )
    return due


async def record_attempt(
    pool: asyncpg.Pool, attempt: DeliveryAttempt, encode: Callable[[object], bytes]
) -> bool:
    check_attempt(attempt)
    key = (attempt.workspace_id, attempt.idempotency_key)
    counted = 1 if attempt.counted else 0
    events: list[_Statement] = []
    if attempt.event is not None:
        events = scheduled_statements(
            ProcessingBatch(consumer="rapport:delivery", offset=0, scheduled=[attempt.event]),
            encode,
        )
    async with pool.acquire() as conn, conn.transaction():
        if attempt.outcome == "retry":
            result = await conn.execute(
                _RETRY_SQL, *key, counted, attempt.retry_at, attempt.at, attempt.error
            )
        else:
            result = await conn.execute(
                _FINISH_SQL,
                *key,
                attempt.outcome,
                counted,
                attempt.at,
                attempt.error,
                attempt.provider_message_id,
                attempt.template_version,
                attempt.at if attempt.outcome == "sent" else None,
                attempt.template_id,
            )
        if result == "UPDATE 0":
            return False
        for sql, args in events:  # the relay appends it once this commits
            await conn.execute(sql, *args)
    return True


async def list_dead(
    pool: asyncpg.Pool, workspace_id: str, limit: int, after: int | None
) -> OutboxPage:
    check_limit(limit)
    rows = await pool.fetch(_DEAD_SQL, workspace_id, after or 0, limit + 1)
    chosen = [message(row) for row in rows[:limit]]
    return OutboxPage(chosen, chosen[-1].seq if len(rows) > limit else None)


async def replay_dead(
    pool: asyncpg.Pool, workspace_id: str, idempotency_key: str, now: datetime
) -> OutboxMessage | None:
    if now.utcoffset() is None:
        raise ValueError(f"naive datetime {now.isoformat()}: only aware datetimes")
    row = await pool.fetchrow(_REPLAY_SQL, workspace_id, idempotency_key, now)
    return None if row is None else message(row)


async def list_profile_messages(
    pool: asyncpg.Pool, workspace_id: str, profile_id: str, limit: int, before: int | None
) -> OutboxPage:
    check_limit(limit)
    rows = await pool.fetch(_PROFILE_SQL, workspace_id, profile_id, before, limit + 1)
    chosen = [message(row) for row in rows[:limit]]
    return OutboxPage(chosen, chosen[-1].seq if len(rows) > limit else None)
