"""Journey runs as stored state: instances, per-step metrics and the outbox.

A processing step that ran journeys (``rapport.core.journeys.engine``)
commits, in the ONE transaction of its ``ProcessingBatch``, the instances it
changed, its metric increments and the messages its send and webhook
effects ask for. This module holds what the backends share: the stored
shapes and the preparation every backend does before it writes (the last
version of an instance wins, increments of the same counter are added up,
the first message of an idempotency key wins).

Replays are harmless:

- an instance is an upsert keyed by ``(workspace, id)``;
- a message is inserted only if its ``(workspace, idempotency key)`` is new:
  the engine derives the key from the instance, step and visit, so the same
  step run again yields the same key and the outbox keeps one row, whatever
  its status became since;
- metric increments are added to running counters (one row per counter, so
  reading totals costs the number of steps, not the number of events), and
  a batch adds its increments only once per ``(consumer, offset)``: the
  batch stores that marker in the same transaction and a replay finds it.
  Hence a batch carrying metrics must have an offset (for its consumer) that
  no other batch carrying metrics used; a batch of log entries always does.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Literal

import msgspec

from rapport.core.journeys.effects import MetricIncrement, SendEffect, WebhookEffect
from rapport.core.journeys.instances import JourneyInstance
from rapport.core.policy.checks import GateVerdict

OutboxStatus = Literal["pending", "sent", "failed", "dropped", "dead"]
"""``pending``: waiting for a sender (or, with ``verdict.not_before``, for quiet hours
to end); ``sent``; ``failed``; ``dropped``: the policy gate said no (``verdict``
says why); ``dead``: retries exhausted or a permanent error (the dead-letter list)."""
OUTBOX_STATUSES: frozenset[str] = frozenset(("pending", "sent", "failed", "dropped", "dead"))

CounterKey = tuple[str, str, int, str, str]
"""``(workspace_id, journey_id, version, step_id, metric)``."""


class OutboxMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One outbound message (a send or a webhook) waiting for, or done by, a channel.

    Written by a processing step with status ``pending``; ``seq`` is given by
    the storage at insertion and orders pending messages for senders.
    """

    workspace_id: str
    idempotency_key: str
    profile_id: str
    effect: SendEffect | WebhookEffect
    created_at: datetime
    status: OutboxStatus = "pending"
    seq: int = 0
    updated_at: datetime | None = None
    """When the status last changed (None while pending)."""
    error: str | None = None
    """The last delivery error (why a ``failed`` or ``dead`` message failed; kept after
    a later success, for the record)."""
    verdict: GateVerdict | None = None
    """The policy gate's decision and every check it made (None: not gated, a webhook)."""
    # Delivery state, written by the sender (see rapport.storage.outbox).
    attempts: int = 0
    """Delivery attempts made (a message held back by a limit or an open circuit is not
    attempted); a dead-letter replay resets it."""
    next_attempt_at: datetime | None = None
    """A pending message is not claimed before this instant (quiet hours, a retry, a lease)."""
    provider_message_id: str | None = None
    sent_at: datetime | None = None
    template_version: int | None = None
    """The version of the template the sent message was rendered from."""
    template_id: str | None = None
    """The template the sent message was rendered from: the step's, or its channel
    variant (None: not sent, or sent before this was recorded)."""


class InstancePage(msgspec.Struct, frozen=True):
    instances: list[JourneyInstance]
    next_after: str | None
    """Pass as ``after`` to get the next page (ids in order); None when done."""


class MetricCount(msgspec.Struct, frozen=True):
    version: int
    step_id: str
    metric: str
    count: int


class JourneyMetrics(msgspec.Struct, frozen=True):
    """Every counter of one journey, by version, step and metric (in that order)."""

    journey_id: str
    counts: list[MetricCount]

    def by_step(self, version: int | None = None) -> dict[str, dict[str, int]]:
        """Step id -> metric -> count, of one version or summed over all of them."""
        steps: dict[str, dict[str, int]] = defaultdict(dict)
        for c in self.counts:
            if version is None or c.version == version:
                step = steps[c.step_id]
                step[c.metric] = step.get(c.metric, 0) + c.count
        return dict(steps)

    def totals(self, version: int | None = None) -> dict[str, int]:
        """Metric -> count summed over the steps (``entered`` counts every step reached)."""
        totals: dict[str, int] = {}
        for c in self.counts:
            if version is None or c.version == version:
                totals[c.metric] = totals.get(c.metric, 0) + c.count
        return totals


def latest_instances(
    rows: list[tuple[str, JourneyInstance]],
) -> list[tuple[str, JourneyInstance]]:
    """The last version of each ``(workspace, id)`` in the batch, in first-seen order."""
    latest: dict[tuple[str, str], tuple[str, JourneyInstance]] = {}
    for workspace_id, instance in rows:
        for moment in (instance.entered_at, instance.ended_at):
            if moment is not None and moment.utcoffset() is None:
                raise ValueError(f"journey instance {instance.id!r}: naive datetime")
        latest[(workspace_id, instance.id)] = (workspace_id, instance)
    return list(latest.values())


def summed_increments(rows: list[tuple[str, MetricIncrement]]) -> dict[CounterKey, int]:
    """The batch's increments added up per counter (zero sums left out)."""
    sums: dict[CounterKey, int] = {}
    for workspace_id, m in rows:
        key = (workspace_id, m.journey_id, m.version, m.step_id, m.metric)
        sums[key] = sums.get(key, 0) + m.count
    return {key: count for key, count in sums.items() if count}


def new_messages(rows: list[OutboxMessage]) -> list[OutboxMessage]:
    """The first message of each ``(workspace, key)`` in the batch, checked, status pending
    (or ``dropped``, when the policy gate dropped it: kept for the record, never sent)."""
    first: dict[tuple[str, str], OutboxMessage] = {}
    for message in rows:
        if message.effect.idempotency_key != message.idempotency_key:
            raise ValueError(
                f"outbox message {message.idempotency_key!r} carries an effect keyed"
                f" {message.effect.idempotency_key!r}"
            )
        if message.created_at.utcoffset() is None:
            raise ValueError(f"outbox message {message.idempotency_key!r}: naive created_at")
        first.setdefault(
            (message.workspace_id, message.idempotency_key),
            msgspec.structs.replace(
                message,
                status="dropped" if message.status == "dropped" else "pending",
                seq=0,
                updated_at=None,
                error=None,
                attempts=0,
                next_attempt_at=None,
                provider_message_id=None,
                sent_at=None,
                template_version=None,
            ),
        )
    return list(first.values())


def check_mark(status: str, now: datetime) -> None:
    """Refuse what ``mark_outbox`` cannot store: a status other than sent/failed, a naive time."""
    if status not in ("sent", "failed"):
        raise ValueError(f"a message is marked sent or failed, not {status!r}")
    if now.utcoffset() is None:
        raise ValueError(f"naive datetime {now.isoformat()}: only aware datetimes are stored")


def check_page(limit: int) -> None:
    if limit <= 0:
        raise ValueError(f"limit must be positive, not {limit}")
