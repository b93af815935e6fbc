"""The journey engine: what an event or a timer does to one profile's journey instances.

Pure: it takes the compiled running versions, the profile's instances, the
profile, the input and ``now``, and returns an ``Outcome`` (changed and new
instances, effects, metric increments) for the runtime to commit in one
transaction with the event's other results. Time comes only from ``now``
and ids only from the injected generator, so the same inputs give the same
outcome: a replay after a crash decides exactly what the first run did.

For each input, live instances react first (in journey id, then instance
id order): an archived version ends them; then exit criteria, goals, a
lifted hold, the awaited event or the due wait move them. Then triggers
may let the customer into journeys (the event that lets her in is not
matched by the instance's own waits, exits and goals). The semantics are
documented in docs/journeys.md, "How journeys run".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from rapport.core.conditions import EvaluationContext, ProfileContext
from rapport.core.ids import IdGenerator
from rapport.core.journeys.compiled import CompiledJourney, field_key
from rapport.core.journeys.effects import EMPTY_OUTCOME, Outcome
from rapport.core.journeys.instances import JourneyInstance, working_copy
from rapport.core.journeys.model import (
    BusinessEventTrigger,
    DateTrigger,
    EventTrigger,
    ExitOnEvent,
    MessageStep,
    SegmentTrigger,
    Trigger,
    WaitForEventStep,
    WaitUntilDateStep,
)
from rapport.core.journeys.runner import (
    Session,
    hold_applies,
    reach_goal,
    run_from,
    send_message,
    until_date,
)
from rapport.core.journeys.triggers import (
    DATE_REACHED,
    SCHEDULED_ENTRY,
    addressed,
    business_copy_for,
    trait_value,
)
from rapport.core.model import Event, Profile

SEGMENT_ENTERED = "Segment Entered"
SEGMENT_EXITED = "Segment Exited"
INSTANCE_ID_PREFIX = "jrn"


def on_event(
    journeys: Sequence[CompiledJourney],
    instances: Sequence[JourneyInstance],
    profile: Profile,
    event: Event,
    now: datetime,
    ids: IdGenerator,
    *,
    context: EvaluationContext | None = None,
) -> Outcome:
    """React to ``event`` (already applied to ``profile``): move instances, let her in.

    ``instances``: the profile's instances of these journeys, live ones and
    at least her latest ended one per (journey, key) (re-entry reads them).
    ``context``: how conditions read the profile (the runtime passes one
    reading the event aggregates kept on it, ``JourneyCatalog.context``,
    where the event that just arrived is counted); by default the profile's
    traits, consents and segments, with every aggregate empty.
    """
    session = Session(profile, now, ids, context or _context(profile, now), _event_cause(event))
    versions = {(j.id, j.version): j for j in journeys}
    for instance in sorted((i for i in instances if i.live), key=_order):
        journey = versions.get((instance.journey_id, instance.version))
        if journey is not None:
            _react(session, journey, instance, event)
    known = [session.changed.get(i.id, i) for i in instances]
    for journey in sorted((j for j in journeys if j.entry), key=lambda j: j.id):
        entered = _enter(session, journey, known, event)
        if entered is not None:
            known.append(entered)
    return session.outcome()


def on_timer(
    journeys: Sequence[CompiledJourney],
    instances: Sequence[JourneyInstance],
    profile: Profile,
    instance_id: str,
    seq: int,
    now: datetime,
    ids: IdGenerator,
    *,
    context: EvaluationContext | None = None,
) -> Outcome:
    """Deliver timer ``seq`` of instance ``instance_id`` (a ``Journey Timer`` event).

    A timer that is not the instance's pending one (an older sequence, an
    ended instance, a second delivery) does nothing: no step fires twice.
    """
    instance = next((i for i in instances if i.id == instance_id), None)
    if instance is None or not instance.live or seq != instance.timer_seq:
        return EMPTY_OUTCOME
    journey = next(
        (j for j in journeys if j.id == instance.journey_id and j.version == instance.version), None
    )
    if journey is None:
        return EMPTY_OUTCOME
    session = Session(profile, now, ids, context or _context(profile, now), f"timer {seq}")
    work = working_copy(instance)
    work.timer_at = None  # delivered: the runtime has removed the row
    session.keep(work)
    if _ended_by_rules(session, journey, work, None):
        return session.outcome()
    if journey.status == "paused":
        if work.paused_since is None:
            work.paused_since = now
            session.trace(work, "paused", "the journey is paused: she waits for resume")
        return session.outcome()
    wait = work.wait
    if work.paused_since is not None:
        work.paused_since = None
        session.due_since = wait.until if wait is not None and wait.until is not None else None
    _release_hold(session, journey, work)
    if (
        work.status == "waiting"
        and wait is not None
        and wait.until is not None
        and wait.until <= now
    ):
        step = journey.step(work.step_id or "")
        session.metric(journey, step.id, "passed")
        if wait.kind == "holdout":
            session.end(journey, work, "completed", "held-out: goal window over")
        elif isinstance(step, WaitForEventStep):
            session.trace(work, "timeout", f"no '{step.event}' within {step.timeout}")
            run_from(session, journey, work, step.on_timeout)
        else:
            session.trace(work, "wait over", f"{wait.kind} reached")
            run_from(session, journey, work, getattr(step, "next", None))
    _sync_timer(session, journey, work)
    return session.outcome()


def on_resume(
    journeys: Sequence[CompiledJourney],
    instances: Sequence[JourneyInstance],
    profile: Profile,
    now: datetime,
    ids: IdGenerator,
    *,
    context: EvaluationContext | None = None,
) -> Outcome:
    """After ``resume``: give back a timer, due at once, to every instance a pause stopped.

    When it fires, she goes on where she was; a message that came due longer
    ago than ``hold.max_age`` is then dropped as stale.
    """
    session = Session(profile, now, ids, context or _context(profile, now), "resume")
    versions = {(j.id, j.version): j for j in journeys if j.status == "published"}
    for instance in sorted((i for i in instances if i.live and i.paused_since), key=_order):
        journey = versions.get((instance.journey_id, instance.version))
        if journey is not None:
            work = working_copy(instance)
            assert work.paused_since is not None
            session.trace(work, "resumed", f"paused since {work.paused_since.isoformat()}")
            _sync_timer(session, journey, work, resuming=True)
            session.keep(work)
    return session.outcome()


def _react(
    session: Session, journey: CompiledJourney, instance: JourneyInstance, event: Event
) -> None:
    work = working_copy(instance)
    if journey.status == "paused":
        # Exits and goals still end her; nothing advances until resume, which
        # re-checks her at once (an awaited event that came meanwhile is missed).
        if not _ended_by_rules(session, journey, work, event) and work.paused_since is None:
            work.paused_since = session.now
            session.trace(work, "paused", "the journey is paused: she waits for resume")
    elif event.message_id != work.entered_by and not _ended_by_rules(session, journey, work, event):
        _release_hold(session, journey, work)
        if work.status == "waiting" and work.wait is not None:
            step = journey.step(work.step_id or "")
            if isinstance(step, WaitForEventStep) and _awaited(journey, work, step, event):
                session.metric(journey, step.id, "passed")
                session.trace(work, "event arrived", f"'{step.event}' came while waiting")
                run_from(session, journey, work, step.next)
            elif isinstance(step, WaitUntilDateStep):
                _recompute_date(session, journey, work, step)
        _sync_timer(session, journey, work)
    if work != instance:
        session.keep(work)


def _ended_by_rules(
    session: Session, journey: CompiledJourney, work: JourneyInstance, event: Event | None
) -> bool:
    """Archive, goals, then exit criteria; True if the instance ended.

    Goals come first: a purchase that is both the goal and an exit criterion
    ends her as converted, so the report counts it.
    """
    if journey.status == "archived":
        session.end(journey, work, "exited", "archived: the journey version was archived")
        return True
    for index, goal in enumerate(journey.journey.goals):
        if goal.name in work.goals_reached or session.now > work.entered_at + goal.within:
            continue
        if goal.event is not None:
            path = f"$.goals[{index}].where"
            reached = event is not None and _matches(
                journey, work, event, goal.event, path, goal.correlate
            )
            why = f"event {goal.event} within {goal.within}"
        else:
            condition = journey.condition(f"$.goals[{index}].condition")
            reached = condition is not None and condition.holds(session.context)
            why = f"condition $.goals[{index}].condition true within {goal.within}"
        if reached and reach_goal(session, journey, work, goal.name, why) and goal.exit:
            session.end(journey, work, "converted", f"goal '{goal.name}' reached")
            return True
    for index, criterion in enumerate(journey.journey.exit_when):
        if isinstance(criterion, ExitOnEvent):
            if event is not None and _matches(
                journey,
                work,
                event,
                criterion.event,
                f"$.exit_when[{index}].where",
                criterion.correlate,
            ):
                session.end(
                    journey, work, "exited", f"exit criterion {index} matched event {event.event}"
                )
                return True
        else:
            condition = journey.condition(f"$.exit_when[{index}].condition")
            if condition is not None and condition.holds(session.context):
                session.end(
                    journey,
                    work,
                    "exited",
                    f"exit criterion {index}: condition {condition.path} true",
                )
                return True
    return False


def _release_hold(session: Session, journey: CompiledJourney, work: JourneyInstance) -> None:
    """If she is held and the hold no longer holds: send the message, or drop it if stale."""
    held = work.held
    hold = journey.journey.hold
    if work.status != "held" or held is None or hold is None:
        return
    step = journey.step(held.step_id)
    assert isinstance(step, MessageStep)
    if hold_applies(session, journey, step):
        return
    age = session.now - held.since
    if age > hold.max_age:
        session.metric(journey, step.id, "dropped")
        session.trace(work, "dropped", f"stale: held {age}, longer than max_age {hold.max_age}")
    else:
        session.trace(work, "released", f"hold condition false after {age}")
        send_message(session, journey, work, step)
    session.metric(journey, step.id, "passed")
    run_from(session, journey, work, step.next)


def _recompute_date(
    session: Session, journey: CompiledJourney, work: JourneyInstance, step: WaitUntilDateStep
) -> None:
    """A date wait follows its trait: a moved reservation moves the reminder."""
    wait = work.wait
    assert wait is not None
    until = until_date(session, journey, step)
    if until == wait.until:
        return
    if until is None:
        session.trace(work, "missed", f"trait '{step.trait}' no longer gives an instant ahead")
        run_from(session, journey, work, step.missed)
        return
    work.wait = type(wait)(kind=wait.kind, since=wait.since, until=until)
    session.trace(work, "rescheduled", f"trait '{step.trait}' changed: until {until.isoformat()}")


def _sync_timer(
    session: Session, journey: CompiledJourney, work: JourneyInstance, *, resuming: bool = False
) -> None:
    """One timer per live instance, at the earliest instant something may change for it.

    None for one a pause stopped, until ``on_resume`` gives her one due at once.
    """
    if not work.live or (work.paused_since is not None and not resuming):
        return
    candidates: list[datetime] = [session.now] if resuming else []
    if work.wait is not None and work.wait.until is not None:
        candidates.append(work.wait.until)
    paths = [f"$.exit_when[{i}].condition" for i in range(len(journey.journey.exit_when))]
    paths += [
        f"$.goals[{i}].condition"
        for i, goal in enumerate(journey.journey.goals)
        if goal.name not in work.goals_reached and session.now <= work.entered_at + goal.within
    ]
    if work.status == "held":
        paths.append("$.hold.while")
    for path in paths:
        condition = journey.condition(path)
        if condition is not None and condition.compiled.time_dependent:
            instant = condition.compiled.next_change(session.context)
            if instant is not None:
                candidates.append(instant)
    session.set_timer(work, min(candidates) if candidates else None)


def _enter(
    session: Session, journey: CompiledJourney, known: Iterable[JourneyInstance], event: Event
) -> JourneyInstance | None:
    """Let her into ``journey`` if a trigger fires and the entry rules allow it."""
    definition = journey.journey
    fired = next(
        (i for i, t in enumerate(definition.triggers) if _fires(session, journey, i, t, event)),
        None,
    )
    if fired is None or journey.status != "published":
        return None
    key = None
    if definition.correlation_key is not None:
        key = field_key(event, definition.correlation_key)
        if key is None:
            return None
    same = [i for i in known if i.journey_id == journey.id and i.correlation_key == key]
    if any(i.live for i in same):
        return None
    if same and not _reentry_allows(journey, same, session.now):
        return None
    for index in range(len(definition.exit_when)):
        condition = journey.condition(f"$.exit_when[{index}].condition")
        if condition is not None and condition.holds(session.context):
            return None
    instance = JourneyInstance(
        id=session.ids.new_id(INSTANCE_ID_PREFIX),
        journey_id=journey.id,
        version=journey.version,
        profile_id=session.profile.id,
        status="active",
        entered_at=session.now,
        entered_by=event.message_id,
        correlation_key=key,
    )
    keyed = f" with key {key!r}" if key is not None else ""
    session.trace(
        instance,
        "entered",
        f"trigger {fired} fired{keyed}, version {journey.version}",
        step=definition.start,
    )
    run_from(session, journey, instance, definition.start)
    _sync_timer(session, journey, instance)
    session.keep(instance)
    return instance


def _fires(
    session: Session, journey: CompiledJourney, index: int, trigger: Trigger, event: Event
) -> bool:
    if isinstance(trigger, EventTrigger):
        fires = event.type == "track" and event.event == trigger.event
    elif isinstance(trigger, SegmentTrigger):
        name = SEGMENT_ENTERED if trigger.entered else SEGMENT_EXITED
        fires = event.event == name and event.properties.get("segment_id") == trigger.segment
    elif isinstance(trigger, BusinessEventTrigger):
        # The runtime fans a business event out as one copy per concerned profile,
        # addressed to her (``profile_id``), naming the journeys it concerns her for.
        fires = (
            event.event == trigger.event
            and event.profile_id == session.profile.id
            and business_copy_for(event, journey.id)
        )
    elif isinstance(trigger, DateTrigger):
        # Her date timer came (``journey_triggers``); a value changed since is not hers.
        fires = addressed(event, DATE_REACHED, journey.id, journey.version, index) and (
            event.properties.get("value")
            == trait_value(_trait_values(session.profile), trigger.trait)
        )
    else:
        fires = addressed(event, SCHEDULED_ENTRY, journey.id, journey.version, index)
    if not fires or not journey.passes(f"$.triggers[{index}].where", event):
        return False
    condition = journey.condition(f"$.triggers[{index}].condition")
    return condition is None or condition.holds(session.context)


def _trait_values(profile: Profile) -> dict[str, object]:
    return {name: trait.value for name, trait in profile.traits.items()}


def _reentry_allows(journey: CompiledJourney, same: list[JourneyInstance], now: datetime) -> bool:
    rule = journey.journey.reentry
    if rule.mode == "always":
        return True
    if rule.mode == "never" or rule.cooldown is None:
        return False
    return max(i.entered_at for i in same) + rule.cooldown <= now


def _matches(
    journey: CompiledJourney,
    work: JourneyInstance,
    event: Event,
    name: str,
    where_path: str,
    correlate: str | None,
) -> bool:
    if event.event != name or not journey.passes(where_path, event):
        return False
    return correlate is None or field_key(event, correlate) == work.correlation_key


def _awaited(
    journey: CompiledJourney, work: JourneyInstance, step: WaitForEventStep, event: Event
) -> bool:
    return _matches(
        journey, work, event, step.event, f"$.steps.{step.id}.wait.where", step.correlate
    )


def _context(profile: Profile, now: datetime) -> EvaluationContext:
    return ProfileContext(profile, now, segments=frozenset(profile.segments))


def _event_cause(event: Event) -> str:
    return f"event {event.event or event.type} ({event.message_id})"


def _order(instance: JourneyInstance) -> tuple[str, str]:
    return (instance.journey_id, instance.id)
