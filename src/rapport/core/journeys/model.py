"""A validated journey as typed values: what the runtime reads (``build.parse_journey``).

The stored form of a journey is its document (JSON, as written); these
structs are its typed reading, with durations as ``timedelta``, times of
day as ``time``, weekdays as numbers (Monday 0, as ``datetime.weekday``)
and signed date offsets (``before: 2h`` is ``-2h``). Embedded conditions
stay trees, for ``rapport.core.conditions.compile_condition``.

The meaning of every field is documented in docs/journeys.md.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

import msgspec

# -- triggers ------------------------------------------------------------------


class EventTrigger(msgspec.Struct, frozen=True, kw_only=True, tag="event"):
    """A customer's own ``track`` event named ``event`` whose fields pass ``where``."""

    event: str
    where: tuple[Any, ...] = ()
    condition: Any = None
    """Profile condition, evaluated once the event is applied; None: always true."""


class SegmentTrigger(msgspec.Struct, frozen=True, kw_only=True, tag="segment"):
    segment: str
    entered: bool
    """True: entering the segment triggers; False: leaving it."""
    condition: Any = None


class DateTrigger(msgspec.Struct, frozen=True, kw_only=True, tag="date"):
    """The instant a date trait gives, shifted by ``offset`` (see docs: date references)."""

    trait: str
    offset: timedelta = timedelta(0)
    at: time | None = None
    yearly: bool = False
    condition: Any = None


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """One run (``once``) or a recurrence (``every`` day, week or month at ``at``)."""

    once: datetime | None = None
    every: str | None = None
    at: time | None = None
    days: tuple[int, ...] = ()
    """Weekdays of a weekly schedule (Monday 0)."""
    day: int | None = None
    """Day of the month of a monthly schedule (a shorter month runs on its last day)."""
    time_zone: str | None = None
    """The zone of ``at``; None: the journey's default time zone."""
    until: datetime | None = None


class ScheduleTrigger(msgspec.Struct, frozen=True, kw_only=True, tag="schedule"):
    schedule: Schedule
    segment: str
    """The audience: members of this segment when the schedule runs."""
    catch_up: timedelta | None = None
    """How late a run may still go out (the runtime was down); None: the runtime's default."""
    condition: Any = None


class IdentifierFanOut(msgspec.Struct, frozen=True, kw_only=True, tag="identifier"):
    """The profile owning identifier ``(identifier_type, value of field)``."""

    identifier_type: str
    field: str


class EventFanOut(msgspec.Struct, frozen=True, kw_only=True, tag="event"):
    """Profiles that sent ``event`` (within ``window``) whose fields equal the business event's."""

    event: str
    match: tuple[tuple[str, str], ...]
    """``(their event's field, the business event's field)`` pairs that must all be equal."""
    where: tuple[Any, ...] = ()
    window: timedelta | None = None


class SegmentFanOut(msgspec.Struct, frozen=True, kw_only=True, tag="segment"):
    segment: str


FanOut = IdentifierFanOut | EventFanOut | SegmentFanOut


class BusinessEventTrigger(msgspec.Struct, frozen=True, kw_only=True, tag="business_event"):
    """An event about the business (not sent by a customer), fanned out to customers."""

    event: str
    to: FanOut
    where: tuple[Any, ...] = ()
    condition: Any = None


Trigger = EventTrigger | SegmentTrigger | DateTrigger | ScheduleTrigger | BusinessEventTrigger

# -- journey-wide rules ----------------------------------------------------------


class Reentry(msgspec.Struct, frozen=True, kw_only=True):
    mode: str = "never"
    """``never``, ``always`` or ``after`` (then ``cooldown`` is set)."""
    cooldown: timedelta | None = None


class TimeZoneRule(msgspec.Struct, frozen=True, kw_only=True):
    trait: str = "timezone"
    """The profile trait holding the customer's IANA time zone."""
    default: str = "UTC"
    """Used when the trait is missing or not a known zone."""


class ExitOnEvent(msgspec.Struct, frozen=True, kw_only=True, tag="event"):
    event: str
    where: tuple[Any, ...] = ()
    correlate: str | None = None


class ExitOnCondition(msgspec.Struct, frozen=True, kw_only=True, tag="condition"):
    condition: Any


ExitCriterion = ExitOnEvent | ExitOnCondition


class Goal(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    within: timedelta
    event: str | None = None
    where: tuple[Any, ...] = ()
    correlate: str | None = None
    condition: Any = None
    exit: bool = True


class Hold(msgspec.Struct, frozen=True, kw_only=True):
    condition: Any
    max_age: timedelta
    messages: str = "all"
    """``all`` or ``promotional``: which message steps the hold applies to."""


# -- steps -----------------------------------------------------------------------


class MessageStep(msgspec.Struct, frozen=True, kw_only=True, tag="message"):
    id: str
    channels: tuple[str, ...]
    """In order of preference: the first the customer can receive is used."""
    template: str
    category: str
    topic: str | None = None
    data: dict[str, Any] = {}
    """The fixed values of ``data``."""
    data_traits: dict[str, str] = {}
    """``data`` keys whose value is read from a trait (a path) when the step runs."""
    next: str | None = None


class WaitForStep(msgspec.Struct, frozen=True, kw_only=True, tag="wait_for"):
    id: str
    duration: timedelta
    next: str | None = None


class WaitUntilTimeStep(msgspec.Struct, frozen=True, kw_only=True, tag="wait_until_time"):
    """Until a local time of day: ``at``, or the time in ``trait`` (``default`` if unusable)."""

    id: str
    at: time | None = None
    trait: str | None = None
    default: time | None = None
    days: tuple[int, ...] = ()
    """Weekdays allowed (Monday 0); empty: any day."""
    next: str | None = None


class OffsetTrait(msgspec.Struct, frozen=True, kw_only=True):
    """A per-customer date offset: the duration text in ``trait``, earlier if ``before``."""

    trait: str
    before: bool


class WaitUntilDateStep(msgspec.Struct, frozen=True, kw_only=True, tag="wait_until_date"):
    id: str
    trait: str
    offset: timedelta = timedelta(0)
    """Signed; with ``offset_trait``, the default for a customer without a usable value."""
    offset_trait: OffsetTrait | None = None
    at: time | None = None
    yearly: bool = False
    next: str | None = None
    missed: str | None = None
    """Taken at once when there is no such instant ahead; None: the instance ends."""


class WaitForEventStep(msgspec.Struct, frozen=True, kw_only=True, tag="wait_for_event"):
    id: str
    event: str
    timeout: timedelta
    where: tuple[Any, ...] = ()
    correlate: str | None = None
    next: str | None = None
    on_timeout: str | None = None


class BranchCase(msgspec.Struct, frozen=True, kw_only=True):
    when: Any
    next: str


class BranchStep(msgspec.Struct, frozen=True, kw_only=True, tag="branch"):
    id: str
    cases: tuple[BranchCase, ...]
    otherwise: str


class Variant(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    weight: int
    next: str | None = None
    holdout: bool = False


class SplitStep(msgspec.Struct, frozen=True, kw_only=True, tag="split"):
    id: str
    variants: tuple[Variant, ...]


class UpdateStep(msgspec.Struct, frozen=True, kw_only=True, tag="update"):
    """Applied in this order: set, unset, increment, add_tags, remove_tags."""

    id: str
    set: dict[str, Any] = {}
    unset: tuple[str, ...] = ()
    increment: dict[str, int | float] = {}
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    next: str | None = None


class WebhookStep(msgspec.Struct, frozen=True, kw_only=True, tag="webhook"):
    id: str
    url: str
    method: str = "POST"
    headers: dict[str, str] = {}
    body: Any = None
    has_body: bool = False
    """False: the runtime sends its default body (see docs); True: ``body`` as given."""
    next: str | None = None


class GoalStep(msgspec.Struct, frozen=True, kw_only=True, tag="goal"):
    id: str
    goal: str
    next: str | None = None


class ExitStep(msgspec.Struct, frozen=True, kw_only=True, tag="exit"):
    id: str
    reason: str


Step = (
    MessageStep
    | WaitForStep
    | WaitUntilTimeStep
    | WaitUntilDateStep
    | WaitForEventStep
    | BranchStep
    | SplitStep
    | UpdateStep
    | WebhookStep
    | GoalStep
    | ExitStep
)
WAIT_STEPS = (WaitForStep, WaitUntilTimeStep, WaitUntilDateStep, WaitForEventStep)


class Journey(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    triggers: tuple[Trigger, ...]
    start: str
    steps: dict[str, Step]
    """By id, in document order."""
    description: str = ""
    priority: int = 50
    correlation_key: str | None = None
    reentry: Reentry = Reentry()
    time_zone: TimeZoneRule = TimeZoneRule()
    exit_when: tuple[ExitCriterion, ...] = ()
    goals: tuple[Goal, ...] = ()
    hold: Hold | None = None
