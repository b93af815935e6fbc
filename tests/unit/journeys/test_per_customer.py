"""What a step reads from the customer herself: a date wait's offset from a trait
(her own lead time) and message ``data`` values snapshotted from her traits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rapport.core.journeys import InvalidJourney
from rapport.core.journeys.build import parse_journey
from rapport.core.journeys.model import MessageStep, OffsetTrait, WaitUntilDateStep
from tests.unit.journeys.engine_harness import Harness, compile_doc

APPOINTMENT = "2026-03-04T10:00:00+00:00"
AT = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)


def reminder(before: Any, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "reminder",
        "name": "Appointment reminder",
        "triggers": [{"event": "Booked"}],
        "reentry": "always",
        "start": "wait",
        "steps": {
            "wait": {
                "wait": {"until_date": "appointment_at", "before": before, "missed": "late"},
                "next": "remind",
            },
            "remind": {
                "message": {
                    "channel": "email",
                    "template": "reminder",
                    "category": "transactional",
                    "data": data or {},
                }
            },
            "late": {"exit": "too late"},
        },
    }


PER_CUSTOMER = {"trait": "reminder_lead", "default": "1h"}


def booked(**traits: Any) -> Harness:
    h = Harness(compile_doc(reminder(PER_CUSTOMER)))
    h.set_traits(appointment_at=APPOINTMENT, **traits)
    h.track("Booked")
    return h


def timer_at(h: Harness) -> datetime:
    (timer,) = h.timers.values()
    return timer.due_at


def test_the_offset_is_read_from_her_trait_with_a_default() -> None:
    assert timer_at(booked(reminder_lead="15m")) == AT - timedelta(minutes=15)
    assert timer_at(booked(reminder_lead="1h30m")) == AT - timedelta(minutes=90)
    assert timer_at(booked()) == AT - timedelta(hours=1)  # a newcomer: the default
    for unusable in ("soon", 15, "", "0m", "400d", {"lead": "15m"}):
        assert timer_at(booked(reminder_lead=unusable)) == AT - timedelta(hours=1), unusable


def test_an_after_offset_from_a_trait_moves_it_later() -> None:
    document = reminder("1h")
    wait = document["steps"]["wait"]["wait"]
    del wait["before"]
    wait["after"] = {"trait": "follow_up", "default": "2h"}
    h = Harness(compile_doc(document))
    h.set_traits(appointment_at=APPOINTMENT, follow_up="30m")
    h.track("Booked")
    assert timer_at(h) == AT + timedelta(minutes=30)


def test_a_changed_lead_moves_the_waiting_reminder() -> None:
    h = booked(reminder_lead="15m")
    h.set_traits(reminder_lead="45m")
    assert timer_at(h) == AT - timedelta(minutes=45)
    h.advance(timedelta(days=3))
    assert h.sent == ["reminder"]
    # A lead that puts the instant in the past: missed.
    late = booked(reminder_lead="15m")
    late.now = AT - timedelta(minutes=30)
    late.set_traits(reminder_lead="1h")
    assert late.only().end_reason == "exit step: too late"


def test_the_typed_step_keeps_the_default_and_the_trait() -> None:
    journey = parse_journey(reminder(PER_CUSTOMER, {"lead": {"trait": "reminder_lead"}}))
    wait = journey.steps["wait"]
    assert isinstance(wait, WaitUntilDateStep)
    assert wait.offset == -timedelta(hours=1)
    assert wait.offset_trait == OffsetTrait(trait="reminder_lead", before=True)
    message = journey.steps["remind"]
    assert isinstance(message, MessageStep)
    assert (message.data, message.data_traits) == ({}, {"lead": "reminder_lead"})


def test_message_data_snapshots_her_traits_when_the_step_runs() -> None:
    data = {
        "appointment_at": {"trait": "appointment_at"},
        "city": {"trait": "location.city"},
        "missing": {"trait": "nothing_here"},
        "fixed": 1,
        "literal": {"trait": "x", "also": "kept as it is"},
    }
    h = Harness(compile_doc(reminder("1h", data)))
    h.set_traits(appointment_at=APPOINTMENT, location={"city": "Lyon"})
    h.track("Booked")
    h.set_traits(location={"city": "Paris"})  # what she has when the step runs counts
    h.advance(timedelta(days=3))
    (sent,) = h.outbox.values()
    assert sent.data == {
        "appointment_at": APPOINTMENT,
        "city": "Paris",
        "missing": None,
        "fixed": 1,
        "literal": {"trait": "x", "also": "kept as it is"},
    }


@pytest.mark.parametrize(
    ("before", "data", "path", "says"),
    [
        ({"trait": "lead"}, {}, "$.steps.wait.wait.before", "missing field 'default'"),
        ({"trait": "lead", "default": "soon"}, {}, "$.steps.wait.wait.before.default", "duration"),
        ({"trait": "a..b", "default": "1h"}, {}, "$.steps.wait.wait.before.trait", "trait name"),
        (3, {}, "$.steps.wait.wait.before", "{trait: NAME, default: DURATION}"),
        ("1h", {"at": {"trait": 3}}, "$.steps.remind.message.data.at.trait", "trait name"),
    ],
)
def test_bad_per_customer_values_are_named(
    before: Any, data: dict[str, Any], path: str, says: str
) -> None:
    with pytest.raises(InvalidJourney) as caught:
        parse_journey(reminder(before, data))
    messages = [str(e) for e in caught.value.errors]
    assert any(m.startswith(path) and says in m for m in messages), messages


def test_a_date_trigger_takes_a_fixed_offset_only() -> None:
    document = reminder("1h")
    document["triggers"] = [{"date": "appointment_at", "before": PER_CUSTOMER}]
    with pytest.raises(InvalidJourney) as caught:
        parse_journey(document)
    assert any(str(e).startswith("$.triggers[0].before") for e in caught.value.errors)
