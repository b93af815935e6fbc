"""Which run a schedule's delivered timer makes (``journey_schedules.run_to_make``).

Runs missed while the runtime was down make one run, the latest, and only
while it is at most the trigger's ``catch_up`` old (one hour by default).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from rapport.core.journeys.model import Schedule, ScheduleTrigger
from rapport.runtime.journey_schedules import DEFAULT_CATCH_UP, run_to_make

NOON = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)  # a Monday
DAILY = Schedule(every="day", at=time(12, 0), time_zone="UTC")


def daily(catch_up: timedelta | None = None, schedule: Schedule = DAILY) -> ScheduleTrigger:
    return ScheduleTrigger(schedule=schedule, segment="all", catch_up=catch_up)


def test_a_run_on_time_is_made() -> None:
    assert run_to_make(daily(), NOON, NOON, "UTC") == NOON
    assert run_to_make(daily(), NOON, NOON + timedelta(seconds=3), "UTC") == NOON


def test_a_run_seen_before_its_time_by_a_lagging_clock_is_still_made() -> None:
    assert run_to_make(daily(), NOON, NOON - timedelta(seconds=2), "UTC") == NOON


def test_missed_runs_make_one_run_the_latest() -> None:
    back = NOON + timedelta(days=3, minutes=30)
    assert run_to_make(daily(), NOON, back, "UTC") == NOON + timedelta(days=3)


def test_a_run_older_than_the_window_is_skipped() -> None:
    assert timedelta(hours=1) == DEFAULT_CATCH_UP
    late = NOON + timedelta(hours=1, seconds=1)
    assert run_to_make(daily(), NOON, late, "UTC") is None
    assert run_to_make(daily(), NOON, NOON + timedelta(hours=1), "UTC") == NOON
    # Three days down: the latest missed run is three hours old, too old by default...
    back = NOON + timedelta(days=3, hours=3)
    assert run_to_make(daily(), NOON, back, "UTC") is None
    # ...but not for a trigger that allows two days.
    patient = daily(catch_up=timedelta(days=2))
    assert run_to_make(patient, NOON, back, "UTC") == NOON + timedelta(days=3)


def test_a_window_never_reaches_before_the_stored_run() -> None:
    patient = daily(catch_up=timedelta(days=30))
    assert run_to_make(patient, NOON, NOON + timedelta(hours=5), "UTC") == NOON


def test_a_one_off_run_follows_the_same_window() -> None:
    once = daily(schedule=Schedule(once=NOON))
    assert run_to_make(once, NOON, NOON + timedelta(minutes=20), "UTC") == NOON
    assert run_to_make(once, NOON, NOON + timedelta(hours=2), "UTC") is None
    assert (
        run_to_make(
            daily(timedelta(hours=3), Schedule(once=NOON)), NOON, NOON + timedelta(hours=2), "UTC"
        )
        == NOON
    )


def test_a_schedule_ended_meanwhile_makes_its_last_run() -> None:
    ending = Schedule(every="day", at=time(12, 0), time_zone="UTC", until=NOON + timedelta(days=1))
    back = NOON + timedelta(days=5)
    assert run_to_make(daily(timedelta(days=7), ending), NOON, back, "UTC") == NOON + timedelta(
        days=1
    )
