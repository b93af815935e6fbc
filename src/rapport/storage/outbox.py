"""Delivery state of outbox messages: what the sender claims, records and replays.

A processing step inserts each message (``rapport.storage.journey_runs``)
``pending`` with ``next_attempt_at`` set to the gate's ``not_before`` (the
end of quiet hours) or its creation time. Then, per backend
(``sqlite_outbox``, ``postgres_outbox``, ``memory_outbox``):

- ``claim_due(now, limit, lease)`` returns pending messages whose
  ``next_attempt_at`` has come, earliest first, and pushes their
  ``next_attempt_at`` to ``now + lease`` in the same statement: a claimed
  message is invisible to every other claim until the sender records what
  happened, or until the lease runs out (a sender that died mid-send; the
  message is then tried again). On PostgreSQL the claim takes its rows with
  ``FOR UPDATE SKIP LOCKED``, so two workers never claim the same row; on
  SQLite one writer thread serialises claims, and one sender runs per process.
- ``record_attempt(attempt)`` stores one answer: retry at ``retry_at``, sent
  (with the provider's id), or dead (the dead-letter list). It only changes a
  message still pending, and stores ``attempt.event`` (``Message Sent`` /
  ``Message Failed``) as a scheduled row in the same transaction, so the
  relay appends it to the event log exactly when the mark is durable.
- ``list_dead`` / ``replay_dead`` are the dead-letter list; a replay makes the
  message pending again with its attempts reset.
- ``list_profile_messages`` answers "what did we send her, and why?".
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import msgspec

from rapport.core.model import ScheduledEvent
from rapport.storage.journey_runs import OutboxMessage

AttemptOutcome = Literal["retry", "sent", "dead"]

DEFAULT_LEASE = timedelta(minutes=5)
"""How long a claimed message stays invisible to other claims (longer than any send)."""


class DeliveryAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """What one delivery attempt (or one decision not to attempt yet) came to."""

    workspace_id: str
    idempotency_key: str
    at: datetime
    outcome: AttemptOutcome
    retry_at: datetime | None = None
    """``retry``: when the message may be claimed again."""
    counted: bool = True
    """False when the message was not tried (an open circuit, a rate limit, quiet
    hours): ``attempts`` stays as it was."""
    error: str | None = None
    provider_message_id: str | None = None
    template_version: int | None = None
    template_id: str | None = None
    event: ScheduledEvent | None = None
    """Stored for the relay in the same transaction as the mark."""


class OutboxPage(msgspec.Struct, frozen=True):
    messages: list[OutboxMessage]
    next_cursor: int | None
    """Pass back (as ``after`` or ``before``, as the listing says) for the next page."""


def check_attempt(attempt: DeliveryAttempt) -> None:
    """Refuse what ``record_attempt`` cannot store."""
    for moment in (attempt.at, attempt.retry_at):
        if moment is not None and moment.utcoffset() is None:
            raise ValueError(f"naive datetime {moment.isoformat()}: only aware datetimes")
    if attempt.outcome == "retry" and attempt.retry_at is None:
        raise ValueError("a retry needs retry_at")
    if attempt.event is not None and attempt.event.workspace_id != attempt.workspace_id:
        raise ValueError("the attempt's event belongs to another workspace")


def check_claim(now: datetime, limit: int, lease: timedelta) -> None:
    if now.utcoffset() is None:
        raise ValueError(f"naive datetime {now.isoformat()}: only aware datetimes")
    if limit <= 0:
        raise ValueError(f"limit must be positive, not {limit}")
    if lease <= timedelta(0):
        raise ValueError("lease must be positive")


def check_limit(limit: int) -> None:
    if limit <= 0:
        raise ValueError(f"limit must be positive, not {limit}")


def first_due(message: OutboxMessage) -> datetime:
    """When a new message may first be claimed: the gate's ``not_before``, else at once."""
    verdict = message.verdict
    if verdict is not None and verdict.not_before is not None:
        if verdict.not_before.utcoffset() is None:
            raise ValueError(f"outbox message {message.idempotency_key!r}: naive not_before")
        return max(verdict.not_before, message.created_at)
    return message.created_at
