"""A tiny in-memory runtime around the pure journey engine, for scenario tests.

It does what the real runtime must do, and nothing more: keep instances by
id, keep one timer row per key (a new schedule replaces it, a cancel
removes it), deliver due timers in order through ``on_timer`` with a
virtual ``now``, apply profile updates, and keep the outbox keyed by
idempotency key (a repeated key is one message).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from rapport.core.ids import SequentialIds
from rapport.core.journeys.build import parse_journey
from rapport.core.journeys.compiled import CompiledJourney, compile_journey
from rapport.core.journeys.effects import (
    CancelTimer,
    Outcome,
    ScheduleTimer,
    SendEffect,
    TraitUpdateEffect,
    WebhookEffect,
)
from rapport.core.journeys.engine import on_event, on_resume, on_timer
from rapport.core.journeys.instances import JourneyInstance
from rapport.core.model import Event, Profile, TraitValue

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


def compile_doc(document: dict[str, Any], version: int = 1, **options: Any) -> CompiledJourney:
    return compile_journey(parse_journey(document), version, **options)


class Harness:
    def __init__(self, *journeys: CompiledJourney, start: datetime = START) -> None:
        self.journeys = list(journeys)
        self.now = start
        self.ids = SequentialIds()
        self.profile = Profile(id="prof_1", workspace_id="ws", created_at=start, updated_at=start)
        self.instances: dict[str, JourneyInstance] = {}
        self.timers: dict[str, ScheduleTimer] = {}
        self.outbox: dict[str, SendEffect] = {}
        self.webhooks: dict[str, WebhookEffect] = {}
        self.updates: list[TraitUpdateEffect] = []
        self.metrics: Counter[tuple[str, str, str]] = Counter()
        self.outcomes: list[Outcome] = []
        self._messages = 0

    # -- inputs ----------------------------------------------------------------

    def track(self, name: str, **properties: Any) -> Outcome:
        return self.deliver(self.make_event(name, properties))

    def make_event(
        self, name: str | None, properties: dict[str, Any], kind: str = "track"
    ) -> Event:
        self._messages += 1
        return Event(
            workspace_id="ws",
            message_id=f"msg-{self._messages}",
            type=kind,
            timestamp=self.now,
            received_at=self.now,
            source="test",
            user_id="u1",
            event=name,
            properties=properties,
        )

    def deliver(self, event: Event) -> Outcome:
        outcome = on_event(
            self.journeys, list(self.instances.values()), self.profile, event, self.now, self.ids
        )
        self.apply(outcome)
        return outcome

    def set_traits(self, **traits: Any) -> Outcome:
        """Change traits and process the identify event that carried them."""
        for name, value in traits.items():
            self.profile.traits[name] = TraitValue(
                value=value, source="test", observed_at=self.now, received_at=self.now
            )
        return self.deliver(self.make_event(None, {}, kind="identify"))

    def advance(self, delta: timedelta) -> list[Outcome]:
        """Move time forward, firing every timer that comes due, in due order."""
        end = self.now + delta
        fired = []
        while True:
            due = sorted(
                (t for t in self.timers.values() if t.due_at <= end),
                key=lambda t: (t.due_at, t.key),
            )
            if not due:
                break
            timer = due[0]
            del self.timers[timer.key]
            self.now = max(self.now, timer.due_at)
            fired.append(self.fire(timer))
        self.now = end
        return fired

    def fire(self, timer: ScheduleTimer) -> Outcome:
        outcome = on_timer(
            self.journeys,
            list(self.instances.values()),
            self.profile,
            timer.instance_id,
            timer.seq,
            self.now,
            self.ids,
        )
        self.apply(outcome)
        return outcome

    def resume(self) -> Outcome:
        outcome = on_resume(
            self.journeys, list(self.instances.values()), self.profile, self.now, self.ids
        )
        self.apply(outcome)
        return outcome

    # -- the runtime's half ----------------------------------------------------------

    def apply(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        for instance in outcome.instances:
            self.instances[instance.id] = instance
        for effect in outcome.effects:
            if isinstance(effect, ScheduleTimer):
                self.timers[effect.key] = effect
            elif isinstance(effect, CancelTimer):
                self.timers.pop(effect.key, None)
            elif isinstance(effect, SendEffect):
                self.outbox.setdefault(effect.idempotency_key, effect)
            elif isinstance(effect, WebhookEffect):
                self.webhooks.setdefault(effect.idempotency_key, effect)
            else:
                self.updates.append(effect)
        for metric in outcome.metrics:
            self.metrics[(metric.journey_id, metric.step_id, metric.metric)] += metric.count

    # -- reading ---------------------------------------------------------------------

    @property
    def sent(self) -> list[str]:
        return [send.template for send in self.outbox.values()]

    def only(self, journey_id: str | None = None) -> JourneyInstance:
        found = [i for i in self.instances.values() if journey_id in (None, i.journey_id)]
        assert len(found) == 1, found
        return found[0]

    def live(self) -> list[JourneyInstance]:
        return [i for i in self.instances.values() if i.live]


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def days(n: float) -> timedelta:
    return timedelta(days=n)
