"""The outbox in memory: the in-memory backend's messages and their delivery state.

``prepare`` checks a batch's messages before anything is applied, ``insert``
cannot fail. Messages are frozen structs replaced on every change, so a
caller never changes what is stored. See ``rapport.storage.outbox``.
"""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta

import msgspec

from rapport.storage.journey_runs import OutboxMessage, check_mark, check_page, new_messages
from rapport.storage.outbox import (
    DeliveryAttempt,
    OutboxPage,
    check_attempt,
    check_claim,
    check_limit,
    first_due,
)

Key = tuple[str, str]


class MemoryOutbox:
    def __init__(self) -> None:
        self._messages: dict[Key, OutboxMessage] = {}
        self._pending: list[tuple[int, str, str]] = []
        """``(seq, workspace, key)`` of pending messages, sorted."""
        self._seq = 0

    def prepare(self, messages: list[OutboxMessage]) -> list[tuple[Key, OutboxMessage]]:
        return [
            ((m.workspace_id, m.idempotency_key), msgspec.structs.replace(m, next_attempt_at=due))
            for m in new_messages(messages)
            for due in (first_due(m),)
        ]

    def insert(self, prepared: list[tuple[Key, OutboxMessage]]) -> None:
        for key, message in prepared:
            if key not in self._messages:
                self._seq += 1
                self._messages[key] = msgspec.structs.replace(message, seq=self._seq)
                if message.status == "pending":
                    self._pending.append((self._seq, *key))

    # -- reads ---------------------------------------------------------------
    def pending(self, limit: int, after: int) -> list[OutboxMessage]:
        check_page(limit)
        start = bisect.bisect_right(self._pending, (after, "\U0010ffff", "\U0010ffff"))
        return [self._messages[(ws, key)] for _, ws, key in self._pending[start : start + limit]]

    def get(self, workspace_id: str, idempotency_key: str) -> OutboxMessage | None:
        return self._messages.get((workspace_id, idempotency_key))

    def list_dead(self, workspace_id: str, limit: int, after: int | None) -> OutboxPage:
        check_limit(limit)
        dead = sorted(
            (m for (ws, _), m in self._messages.items() if ws == workspace_id),
            key=lambda m: m.seq,
        )
        found = [m for m in dead if m.status == "dead" and m.seq > (after or 0)]
        chosen = found[:limit]
        return OutboxPage(chosen, chosen[-1].seq if len(found) > limit else None)

    def list_profile(
        self, workspace_id: str, profile_id: str, limit: int, before: int | None
    ) -> OutboxPage:
        check_limit(limit)
        found = sorted(
            (
                m
                for (ws, _), m in self._messages.items()
                if ws == workspace_id
                and m.profile_id == profile_id
                and (before is None or m.seq < before)
            ),
            key=lambda m: -m.seq,
        )
        chosen = found[:limit]
        return OutboxPage(chosen, chosen[-1].seq if len(found) > limit else None)

    # -- writes --------------------------------------------------------------
    def mark(
        self, workspace_id: str, idempotency_key: str, status: str, now: datetime, error: str | None
    ) -> bool:
        check_mark(status, now)
        message = self._pending_message(workspace_id, idempotency_key)
        if message is None:
            return False
        self._finish(
            message,
            status="sent" if status == "sent" else "failed",
            updated_at=now,
            error=error,
        )
        return True

    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[OutboxMessage]:
        check_claim(now, limit, lease)
        due = sorted(
            (m for _, ws, key in self._pending for m in (self._messages[(ws, key)],)),
            key=lambda m: (m.next_attempt_at or now, m.seq),
        )
        claimed = [m for m in due if m.next_attempt_at is None or m.next_attempt_at <= now][:limit]
        leased = [msgspec.structs.replace(m, next_attempt_at=now + lease) for m in claimed]
        for m in leased:
            self._messages[(m.workspace_id, m.idempotency_key)] = m
        return sorted(leased, key=lambda m: m.seq)

    def next_due(self) -> datetime | None:
        due = [self._messages[(ws, key)].next_attempt_at for _, ws, key in self._pending]
        return min((d for d in due if d is not None), default=None)

    def record(self, attempt: DeliveryAttempt) -> bool:
        check_attempt(attempt)
        message = self._pending_message(attempt.workspace_id, attempt.idempotency_key)
        if message is None:
            return False
        attempts = message.attempts + (1 if attempt.counted else 0)
        error = attempt.error if attempt.error is not None else message.error
        if attempt.outcome == "retry":
            self._messages[(message.workspace_id, message.idempotency_key)] = (
                msgspec.structs.replace(
                    message,
                    attempts=attempts,
                    next_attempt_at=attempt.retry_at,
                    updated_at=attempt.at,
                    error=error,
                )
            )
            return True
        self._finish(
            message,
            status=attempt.outcome,
            attempts=attempts,
            updated_at=attempt.at,
            error=error,
            provider_message_id=attempt.provider_message_id,
            template_version=attempt.template_version,
            template_id=attempt.template_id,
            sent_at=attempt.at if attempt.outcome == "sent" else None,
        )
        return True

    def replay_dead(
        self, workspace_id: str, idempotency_key: str, now: datetime
    ) -> OutboxMessage | None:
        key = (workspace_id, idempotency_key)
        message = self._messages.get(key)
        if message is None or message.status != "dead":
            return None
        replayed = msgspec.structs.replace(
            message, status="pending", attempts=0, next_attempt_at=now, updated_at=now
        )
        self._messages[key] = replayed
        bisect.insort(self._pending, (message.seq, *key))
        return replayed

    def _pending_message(self, workspace_id: str, idempotency_key: str) -> OutboxMessage | None:
        message = self._messages.get((workspace_id, idempotency_key))
        return message if message is not None and message.status == "pending" else None

    def _finish(self, message: OutboxMessage, **changes: object) -> None:
        key = (message.workspace_id, message.idempotency_key)
        self._messages[key] = msgspec.structs.replace(message, **changes)
        del self._pending[bisect.bisect_left(self._pending, (message.seq, *key))]
