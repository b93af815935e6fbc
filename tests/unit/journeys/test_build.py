"""The typed reading of a journey (what the runtime gets), the split assignment and
what a journey refers to."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, time, timedelta

import pytest

from rapport.core.journeys import (
    InvalidJourney,
    assign_variant,
    conditions_of,
    parse_journey,
    referenced_segments,
)
from rapport.core.journeys.model import (
    BranchStep,
    BusinessEventTrigger,
    DateTrigger,
    EventFanOut,
    ExitOnCondition,
    ExitOnEvent,
    IdentifierFanOut,
    MessageStep,
    ScheduleTrigger,
    SegmentFanOut,
    SegmentTrigger,
    SplitStep,
    UpdateStep,
    WaitForEventStep,
    WaitForStep,
    WaitUntilDateStep,
    WaitUntilTimeStep,
    WebhookStep,
)
from tests.unit.journeys.kitchen_sink import KITCHEN_SINK, SCHEDULED


def test_the_kitchen_sink_reads_into_typed_values() -> None:
    journey = parse_journey(KITCHEN_SINK)
    assert (journey.id, journey.priority, journey.start) == ("kitchen-sink", 70, "route")
    assert journey.reentry.mode == "after" and journey.reentry.cooldown == timedelta(days=7)
    assert (journey.time_zone.trait, journey.time_zone.default) == ("tz", "Europe/Paris")
    delayed = journey.triggers[1]
    assert isinstance(delayed, BusinessEventTrigger)
    assert delayed.to == EventFanOut(
        event="Order Completed",
        match=(("properties.order_id", "properties.order_id"),),
        where=({"field": "properties.channel", "op": "equals", "value": "web"},),
        window=timedelta(days=90),
    )
    by_email = journey.triggers[2]
    assert isinstance(by_email, BusinessEventTrigger)
    assert by_email.to == IdentifierFanOut(
        identifier_type="email", field="properties.customer_email"
    )
    assert isinstance(journey.exit_when[0], ExitOnEvent)
    assert isinstance(journey.exit_when[1], ExitOnCondition)
    assert [g.exit for g in journey.goals] == [False, True]
    assert journey.hold is not None and journey.hold.max_age == timedelta(days=2)
    steps = journey.steps
    assert list(steps) == list(KITCHEN_SINK["steps"])
    assert isinstance(steps["route"], BranchStep) and steps["route"].otherwise == "delivered"
    split = steps["ab"]
    assert isinstance(split, SplitStep) and [v.holdout for v in split.variants] == [
        False,
        False,
        True,
    ]
    notify = steps["notify"]
    assert isinstance(notify, MessageStep) and notify.channels == ("sms", "email")
    delivered = steps["delivered"]
    assert isinstance(delivered, WaitForEventStep)
    assert (delivered.timeout, delivered.on_timeout) == (timedelta(days=30), "sorry")
    settle = steps["settle"]
    assert isinstance(settle, WaitForStep) and settle.duration == timedelta(hours=1, minutes=30)
    evening = steps["evening"]
    assert isinstance(evening, WaitUntilTimeStep)
    assert (evening.trait, evening.default, evening.days) == (
        "usual_time",
        time(19, 0),
        (0, 1, 2, 3, 4),
    )
    birthday = steps["birthday"]
    assert isinstance(birthday, WaitUntilDateStep)
    assert (birthday.offset, birthday.at, birthday.yearly, birthday.missed) == (
        timedelta(days=-1),
        time(9, 0),
        True,
        "done",
    )
    reward = steps["reward"]
    assert isinstance(reward, UpdateStep) and reward.increment == {
        "loyalty_points": 500,
        "score": 0.5,
    }
    crm = steps["crm"]
    assert isinstance(crm, WebhookStep) and (crm.method, crm.has_body) == ("PUT", True)


def test_triggers_of_the_scheduled_journey() -> None:
    triggers = parse_journey(SCHEDULED).triggers
    once, weekly, _, monthly, birthday, renewal, reservation, vip, cart, stock = triggers
    assert isinstance(once, ScheduleTrigger)
    assert once.schedule.once == datetime(2026, 6, 1, 9, tzinfo=UTC)
    assert isinstance(weekly, ScheduleTrigger)
    assert (weekly.schedule.every, weekly.schedule.days, weekly.schedule.at) == (
        "week",
        (0, 3),
        time(9, 30),
    )
    assert isinstance(monthly, ScheduleTrigger) and monthly.schedule.day == 31
    assert isinstance(birthday, DateTrigger) and birthday.yearly and birthday.at == time(9)
    assert isinstance(renewal, DateTrigger) and renewal.offset == -timedelta(days=7)
    assert isinstance(reservation, DateTrigger) and reservation.offset == timedelta(hours=2)
    assert isinstance(vip, SegmentTrigger) and vip.entered
    assert isinstance(cart, SegmentTrigger) and not cart.entered
    assert isinstance(stock, BusinessEventTrigger) and stock.to == SegmentFanOut(segment="waitlist")


def test_invalid_documents_are_refused() -> None:
    with pytest.raises(InvalidJourney):
        parse_journey({**KITCHEN_SINK, "start": "nowhere"})


def test_references() -> None:
    assert referenced_segments(parse_journey(KITCHEN_SINK)) == {"customers", "vip"}
    assert referenced_segments(parse_journey(SCHEDULED)) == {
        "newsletter",
        "daily-digest",
        "monthly",
        "vip",
        "cart-open",
        "waitlist",
    }
    assert len(list(conditions_of(parse_journey(KITCHEN_SINK)))) == 7


def test_split_assignment_is_deterministic_and_follows_the_weights() -> None:
    split = parse_journey(KITCHEN_SINK).steps["ab"]
    assert isinstance(split, SplitStep)
    first = [assign_variant(split, "kitchen-sink", f"prof_{n}").name for n in range(3000)]
    again = [assign_variant(split, "kitchen-sink", f"prof_{n}").name for n in range(3000)]
    assert first == again
    counts = Counter(first)
    assert abs(counts["sms-first"] - 1350) < 150
    assert abs(counts["email-first"] - 1350) < 150
    assert abs(counts["control"] - 300) < 80
    # Another journey (or step) shuffles customers independently.
    other = [assign_variant(split, "other-journey", f"prof_{n}").name for n in range(3000)]
    assert other != first


def test_a_schedule_catch_up_is_a_duration() -> None:
    schedule = {"schedule": {"every": "day", "at": "08:00"}, "segment": "news"}
    document = {**SCHEDULED, "triggers": [schedule, {**schedule, "catch_up": "1h30m"}]}
    default, patient = parse_journey(document).triggers
    assert isinstance(default, ScheduleTrigger) and default.catch_up is None
    assert isinstance(patient, ScheduleTrigger) and patient.catch_up == timedelta(minutes=90)
