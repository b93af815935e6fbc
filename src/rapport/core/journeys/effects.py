"""What running a journey asks of the runtime: effects, metric increments, and the outcome.

The engine decides; the runtime does. Every effect that leaves the system
(a send, a webhook, a profile update) carries an ``idempotency_key``
derived from the instance id, the step id and how many times the instance
reached that step, so processing the same input again (a retry, a restarted
worker) produces the same key and the outbox keeps one row. Timers are
keyed by instance: one pending timer per instance, which a new schedule
replaces.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from rapport.core.journeys.instances import JourneyInstance

TIMER_EVENT = "Journey Timer"
"""The name of the internal event a journey timer is delivered as (``properties``:
``instance_id``, ``seq``)."""

Metric = Literal["entered", "waiting", "passed", "exited", "converted", "held", "dropped", "sent"]


def timer_key(instance_id: str) -> str:
    """The stored-timer key of an instance: one row per instance, replaced when it moves."""
    return f"journey:{instance_id}"


def idempotency_key(instance_id: str, step_id: str, visit: int) -> str:
    """The key of the effect of one visit of one step: stable across replays."""
    return f"journey:{instance_id}:{step_id}:{visit}"


class SendEffect(msgspec.Struct, frozen=True, kw_only=True, tag="send"):
    """Hand a message to the policy gate and the outbox."""

    idempotency_key: str
    instance_id: str
    journey_id: str
    version: int
    step_id: str
    profile_id: str
    channels: tuple[str, ...]
    template: str
    category: str
    topic: str | None = None
    data: dict[str, Any] = {}
    correlation_key: str | None = None
    priority: int = 50
    trigger_message_id: str | None = None
    """The event that let her in: templates may render it."""


class WebhookEffect(msgspec.Struct, frozen=True, kw_only=True, tag="webhook"):
    idempotency_key: str
    instance_id: str
    journey_id: str
    version: int
    step_id: str
    profile_id: str
    url: str
    method: str
    headers: dict[str, str]
    body: Any
    """The body to send: the step's, or the documented default when it gives none."""


class TraitUpdateEffect(msgspec.Struct, frozen=True, kw_only=True, tag="update"):
    """Profile changes, applied in this order: set, unset, increment, add_tags, remove_tags."""

    idempotency_key: str
    instance_id: str
    profile_id: str
    source: str
    """``journey:<id>:v<version>:<step>``: the provenance of every value written."""
    set: dict[str, Any] = {}
    unset: tuple[str, ...] = ()
    increment: dict[str, int | float] = {}
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()


class ScheduleTimer(msgspec.Struct, frozen=True, kw_only=True, tag="schedule_timer"):
    """Store (or move) the instance's timer: deliver a ``Journey Timer`` event at ``due_at``."""

    key: str
    instance_id: str
    profile_id: str
    due_at: datetime
    seq: int
    message_id: str
    """Derived from instance and sequence: delivering the row twice appends it once."""


class CancelTimer(msgspec.Struct, frozen=True, kw_only=True, tag="cancel_timer"):
    key: str
    instance_id: str


Effect = SendEffect | WebhookEffect | TraitUpdateEffect | ScheduleTimer | CancelTimer


class MetricIncrement(msgspec.Struct, frozen=True, kw_only=True):
    """Add ``count`` to one per-step counter of one journey version."""

    journey_id: str
    version: int
    step_id: str
    metric: Metric
    count: int = 1


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one input did: the runtime commits all of it in one transaction."""

    instances: tuple[JourneyInstance, ...] = ()
    """New and changed instances (an unchanged one is not listed)."""
    effects: tuple[Effect, ...] = ()
    metrics: tuple[MetricIncrement, ...] = ()

    @property
    def sends(self) -> tuple[SendEffect, ...]:
        return tuple(e for e in self.effects if isinstance(e, SendEffect))


EMPTY_OUTCOME = Outcome()
