"""Running an instance's steps: from a step, at once, until a wait, a hold or the end.

``Session`` gathers what one input (an event or a timer) does to a
profile's instances: the changed instances, the effects in order, and the
per-step metric increments. ``run_from`` advances one instance; the
engine (``engine``) decides when (entry, a wait ending, a hold lifting).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rapport.core.conditions import EvaluationContext
from rapport.core.conditions.instants import is_duration, parse_duration
from rapport.core.ids import IdGenerator
from rapport.core.journeys.build import assign_variant
from rapport.core.journeys.compiled import CompiledJourney
from rapport.core.journeys.effects import (
    CancelTimer,
    Effect,
    Metric,
    MetricIncrement,
    Outcome,
    ScheduleTimer,
    SendEffect,
    TraitUpdateEffect,
    WebhookEffect,
    idempotency_key,
    timer_key,
)
from rapport.core.journeys.instances import HeldMessage, JourneyInstance, Status, WaitState, record
from rapport.core.journeys.model import (
    BranchStep,
    ExitStep,
    GoalStep,
    MessageStep,
    SplitStep,
    UpdateStep,
    WaitForEventStep,
    WaitForStep,
    WaitUntilDateStep,
    WaitUntilTimeStep,
    WebhookStep,
)
from rapport.core.journeys.timing import date_instant, next_local_time, parse_time_text, zone_of
from rapport.core.model import Profile

MAX_STEPS_AT_ONCE = 1000
"""A guard, not a rule: validation already refuses loops that do not wait."""
MAX_TRAIT_OFFSET = timedelta(days=366)
"""A date offset read from a trait longer than this is not used (the default is)."""


class Session:
    """What one input does: effects, metrics and changed instances, in the order they happened."""

    def __init__(
        self,
        profile: Profile,
        now: datetime,
        ids: IdGenerator,
        context: EvaluationContext,
        cause: str,
    ) -> None:
        self.profile = profile
        self.now = now
        self.ids = ids
        self.context = context
        self.cause = cause
        self.effects: list[Effect] = []
        # A plain dict: a Counter costs a few microseconds to make, once per input.
        self.metrics: dict[tuple[str, int, str, Metric], int] = {}
        self.changed: dict[str, JourneyInstance] = {}
        self.due_since: datetime | None = None
        """When what is now running came due, if it was held up by a pause: messages
        reached at once are stale (dropped) if that is longer ago than ``hold.max_age``."""

    def metric(self, journey: CompiledJourney, step_id: str, metric: Metric) -> None:
        key = (journey.id, journey.version, step_id, metric)
        self.metrics[key] = self.metrics.get(key, 0) + 1

    def trace(
        self, instance: JourneyInstance, what: str, why: str = "", step: str | None = None
    ) -> None:
        record(instance, self.now, what, why, self.cause, step)

    def keep(self, instance: JourneyInstance) -> None:
        self.changed[instance.id] = instance

    def end(
        self, journey: CompiledJourney, instance: JourneyInstance, status: Status, reason: str
    ) -> None:
        """End ``instance`` (``completed``, ``exited`` or ``converted``) and drop its timer."""
        instance.status = status
        instance.end_reason = reason
        instance.ended_at = self.now
        instance.wait = None
        instance.held = None
        if status == "exited" and instance.step_id is not None:
            # (a conversion was counted when the goal was reached: ``reach_goal``)
            self.metric(journey, instance.step_id, "exited")
        self.trace(instance, status, reason)
        self.set_timer(instance, None)

    def set_timer(self, instance: JourneyInstance, due_at: datetime | None) -> None:
        """Make the instance's one pending timer due at ``due_at`` (None: no timer)."""
        if due_at == instance.timer_at:
            return
        key = timer_key(instance.id)
        if due_at is None:
            self.effects.append(CancelTimer(key=key, instance_id=instance.id))
            instance.timer_at = None
            return
        instance.timer_seq += 1
        instance.timer_at = due_at
        self.effects.append(
            ScheduleTimer(
                key=key,
                instance_id=instance.id,
                profile_id=instance.profile_id,
                due_at=due_at,
                seq=instance.timer_seq,
                message_id=f"{key}:{instance.timer_seq}",
            )
        )

    def outcome(self) -> Outcome:
        return Outcome(
            instances=tuple(self.changed.values()),
            effects=tuple(self.effects),
            metrics=tuple(
                MetricIncrement(journey_id=j, version=v, step_id=s, metric=m, count=c)
                for (j, v, s, m), c in self.metrics.items()
            ),
        )


def run_from(
    session: Session, journey: CompiledJourney, instance: JourneyInstance, step_id: str | None
) -> None:
    """Advance ``instance`` from ``step_id`` (None: the end) until it waits, holds or ends."""
    instance.status = "active"
    instance.wait = None
    instance.held = None
    current = step_id
    taken = 0
    while current is not None:
        taken += 1
        if taken > MAX_STEPS_AT_ONCE:
            session.end(journey, instance, "exited", f"more than {MAX_STEPS_AT_ONCE} steps at once")
            return
        instance.step_id = current
        instance.visits[current] = instance.visits.get(current, 0) + 1
        session.metric(journey, current, "entered")
        go_on, following = _step(session, journey, instance, current)
        if not go_on:
            return
        session.metric(journey, current, "passed")
        current = following
    session.end(journey, instance, "completed", "reached the end of the journey")


def send_message(
    session: Session, journey: CompiledJourney, instance: JourneyInstance, step: MessageStep
) -> None:
    session.effects.append(
        SendEffect(
            idempotency_key=idempotency_key(instance.id, step.id, instance.visits.get(step.id, 1)),
            instance_id=instance.id,
            journey_id=journey.id,
            version=journey.version,
            step_id=step.id,
            profile_id=instance.profile_id,
            channels=step.channels,
            template=step.template,
            category=step.category,
            topic=step.topic,
            data=_message_data(session, step),
            correlation_key=instance.correlation_key,
            priority=journey.journey.priority,
            trigger_message_id=instance.entered_by,
        )
    )
    session.metric(journey, step.id, "sent")
    session.trace(
        instance, "sent", f"{step.category} message '{step.template}' on {', '.join(step.channels)}"
    )


def _message_data(session: Session, step: MessageStep) -> dict[str, Any]:
    """The step's ``data``, with the values it reads from her traits as they are now."""
    if not step.data_traits:
        return step.data
    return {
        **step.data,
        **{key: trait_at(session, path) for key, path in step.data_traits.items()},
    }


def hold_applies(session: Session, journey: CompiledJourney, step: MessageStep) -> bool:
    hold = journey.journey.hold
    if hold is None or (hold.messages == "promotional" and step.category != "promotional"):
        return False
    condition = journey.condition("$.hold.while")
    return condition is not None and condition.holds(session.context)


def _step(
    session: Session, journey: CompiledJourney, instance: JourneyInstance, step_id: str
) -> tuple[bool, str | None]:
    """Run one step: ``(go on at once, the next step or None for the end)``."""
    step = journey.step(step_id)
    now = session.now
    if isinstance(step, MessageStep):
        if hold_applies(session, journey, step):
            instance.status = "held"
            instance.held = HeldMessage(step_id=step.id, since=now)
            session.metric(journey, step.id, "held")
            session.trace(instance, "held", "hold condition $.hold.while true: the message waits")
            return False, None
        if _stale_after_pause(session, journey, step):
            session.metric(journey, step.id, "dropped")
            late = now - (session.due_since or now)
            session.trace(instance, "dropped", f"stale: came due {late} ago, during a pause")
            return True, step.next
        send_message(session, journey, instance, step)
        return True, step.next
    if isinstance(step, WaitForStep):
        return _wait(
            session, journey, instance, WaitState(kind="for", since=now, until=now + step.duration)
        )
    if isinstance(step, WaitUntilTimeStep):
        zone = zone_of(
            session.context.trait(journey.journey.time_zone.trait), journey.journey.time_zone
        )
        at = step.at
        if at is None:
            at = parse_time_text(session.context.trait(step.trait or "")) or step.default
        assert at is not None, "validation requires a time or a default"
        local = next_local_time(now, at, step.days, zone)
        return _wait(
            session, journey, instance, WaitState(kind="until_time", since=now, until=local)
        )
    if isinstance(step, WaitUntilDateStep):
        until = until_date(session, journey, step)
        if until is None:
            session.trace(instance, "missed", f"no instant ahead from trait '{step.trait}'")
            return True, step.missed
        return _wait(
            session, journey, instance, WaitState(kind="until_date", since=now, until=until)
        )
    if isinstance(step, WaitForEventStep):
        state = WaitState(
            kind="event",
            since=now,
            until=now + step.timeout,
            event=step.event,
            correlation=instance.correlation_key if step.correlate else None,
        )
        return _wait(session, journey, instance, state)
    if isinstance(step, BranchStep):
        for index, case in enumerate(step.cases):
            path = f"$.steps.{step.id}.branch[{index}].when"
            condition = journey.condition(path)
            if condition is not None and condition.holds(session.context):
                session.trace(
                    instance,
                    "branch",
                    f"case {index} taken to '{case.next}': condition {path} true",
                )
                return True, case.next
        session.trace(instance, "branch", f"no case held: otherwise to '{step.otherwise}'")
        return True, step.otherwise
    if isinstance(step, SplitStep):
        variant = assign_variant(step, journey.id, instance.profile_id)
        instance.variables[f"variant:{step.id}"] = variant.name
        if not variant.holdout:
            session.trace(instance, "split", f"variant '{variant.name}' to '{variant.next}'")
            return True, variant.next
        return _holdout(session, journey, instance, variant.name)
    if isinstance(step, UpdateStep):
        session.effects.append(
            TraitUpdateEffect(
                idempotency_key=idempotency_key(instance.id, step.id, instance.visits[step.id]),
                instance_id=instance.id,
                profile_id=instance.profile_id,
                source=f"journey:{journey.id}:v{journey.version}:{step.id}",
                set=step.set,
                unset=step.unset,
                increment=step.increment,
                add_tags=step.add_tags,
                remove_tags=step.remove_tags,
            )
        )
        session.trace(instance, "updated", "profile changes handed to the runtime")
        return True, step.next
    if isinstance(step, WebhookStep):
        body: Any = step.body if step.has_body else _default_body(journey, instance, step.id)
        session.effects.append(
            WebhookEffect(
                idempotency_key=idempotency_key(instance.id, step.id, instance.visits[step.id]),
                instance_id=instance.id,
                journey_id=journey.id,
                version=journey.version,
                step_id=step.id,
                profile_id=instance.profile_id,
                url=step.url,
                method=step.method,
                headers=step.headers,
                body=body,
            )
        )
        session.trace(instance, "webhook", f"{step.method} {step.url}")
        return True, step.next
    if isinstance(step, GoalStep):
        reach_goal(session, journey, instance, step.goal, f"goal step '{step.id}'")
        return True, step.next
    assert isinstance(step, ExitStep)
    session.end(journey, instance, "exited", f"exit step: {step.reason}")
    return False, None


def _stale_after_pause(session: Session, journey: CompiledJourney, step: MessageStep) -> bool:
    hold = journey.journey.hold
    if session.due_since is None or hold is None:
        return False
    if hold.messages == "promotional" and step.category != "promotional":
        return False
    return session.now - session.due_since > hold.max_age


def reach_goal(
    session: Session, journey: CompiledJourney, instance: JourneyInstance, name: str, why: str
) -> bool:
    """Record goal ``name`` once per instance; False if it was already reached."""
    if name in instance.goals_reached:
        return False
    instance.goals_reached.append(name)
    if instance.step_id is not None:
        session.metric(journey, instance.step_id, "converted")
    session.trace(instance, "goal", f"goal '{name}' reached: {why}")
    return True


def until_date(
    session: Session, journey: CompiledJourney, step: WaitUntilDateStep
) -> datetime | None:
    """The instant a date wait ends at now, or None when none is ahead."""
    zone = zone_of(
        session.context.trait(journey.journey.time_zone.trait), journey.journey.time_zone
    )
    instant = date_instant(
        trait_at(session, step.trait),
        now=session.now,
        zone=zone,
        at=step.at,
        yearly=step.yearly,
        offset=_date_offset(session, step),
    )
    return instant if instant is not None and instant > session.now else None


def trait_at(session: Session, path: str) -> Any:
    """Her trait at a dotted path (``appointment.at``), or None."""
    head, *rest = path.split(".")
    value = session.context.trait(head)
    for part in rest:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _date_offset(session: Session, step: WaitUntilDateStep) -> timedelta:
    """The step's offset, or hers from ``offset_trait`` when it holds usable duration text."""
    rule = step.offset_trait
    if rule is None:
        return step.offset
    value = trait_at(session, rule.trait)
    if not isinstance(value, str) or not is_duration(value):
        return step.offset
    duration = timedelta(microseconds=parse_duration(value))
    if duration > MAX_TRAIT_OFFSET:
        return step.offset
    return -duration if rule.before else duration


def _wait(
    session: Session, journey: CompiledJourney, instance: JourneyInstance, state: WaitState
) -> tuple[bool, str | None]:
    instance.status = "waiting"
    instance.wait = state
    session.metric(journey, instance.step_id or "", "waiting")
    until = state.until.isoformat() if state.until else "-"
    if state.kind == "event":
        key = f" with key {state.correlation!r}" if state.correlation else ""
        why = f"for event '{state.event}'{key}, timeout at {until}"
    else:
        why = f"for {_WAIT_LABELS.get(state.kind, state.kind)}, until {until}"
    session.trace(instance, "waiting", why)
    return False, None


_WAIT_LABELS = {"for": "a duration", "until_time": "a local time", "until_date": "a date"}


def _holdout(
    session: Session, journey: CompiledJourney, instance: JourneyInstance, variant: str
) -> tuple[bool, str | None]:
    windows = [goal.within for goal in journey.journey.goals]
    if not windows:
        session.trace(instance, "split", f"held-out variant '{variant}': no goal to measure")
        return True, None
    until = instance.entered_at + max(windows)
    session.trace(
        instance, "split", f"held-out variant '{variant}': silent until {until.isoformat()}"
    )
    if until <= session.now:
        return True, None
    instance.status = "waiting"
    instance.wait = WaitState(kind="holdout", since=session.now, until=until)
    return False, None


def _default_body(
    journey: CompiledJourney, instance: JourneyInstance, step_id: str
) -> dict[str, Any]:
    return {
        "journey_id": journey.id,
        "version": journey.version,
        "step_id": step_id,
        "profile_id": instance.profile_id,
        "correlation_key": instance.correlation_key,
    }
