"""When schedules run and date triggers fire: zones, short months, ``until``, past instants."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from rapport.core.journeys.model import DateTrigger, Schedule, TimeZoneRule
from rapport.core.journeys.triggers import date_trigger_instant, next_run

PARIS = "Europe/Paris"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_a_one_off_runs_once() -> None:
    once = Schedule(once=utc(2026, 6, 21, 7))
    assert next_run(once, utc(2026, 6, 1), "UTC") == utc(2026, 6, 21, 7)
    assert next_run(once, utc(2026, 6, 21, 7), "UTC") is None


def test_a_daily_run_keeps_local_time_across_a_clock_change() -> None:
    daily = Schedule(every="day", at=time(8), time_zone=PARIS)
    # 2026-03-29: Paris moves from +01:00 to +02:00; 08:00 stays 08:00.
    assert next_run(daily, utc(2026, 3, 28, 6, 59), "UTC") == utc(2026, 3, 28, 7)
    assert next_run(daily, utc(2026, 3, 28, 7), "UTC") == utc(2026, 3, 29, 6)
    assert next_run(daily, utc(2026, 3, 29, 6), "UTC") == utc(2026, 3, 30, 6)


def test_a_weekly_run_takes_its_days_in_its_zone_or_the_journeys() -> None:
    weekly = Schedule(every="week", days=(0, 3), at=time(12), time_zone=PARIS)
    monday = utc(2026, 5, 4, 10)  # Monday 12:00 in Paris
    assert next_run(weekly, monday - timedelta(seconds=1), "UTC") == monday
    assert next_run(weekly, monday, "UTC") == utc(2026, 5, 7, 10)  # Thursday
    assert next_run(weekly, utc(2026, 5, 7, 10), "UTC") == utc(2026, 5, 11, 10)
    default_zone = Schedule(every="week", days=(0,), at=time(12))
    assert next_run(default_zone, utc(2026, 5, 1), "America/New_York") == utc(2026, 5, 4, 16)


def test_a_monthly_run_falls_on_the_last_day_of_a_shorter_month() -> None:
    monthly = Schedule(every="month", day=31, at=time(9), time_zone="UTC")
    assert next_run(monthly, utc(2026, 1, 31, 9), "UTC") == utc(2026, 2, 28, 9)
    assert next_run(monthly, utc(2026, 2, 28, 9), "UTC") == utc(2026, 3, 31, 9)
    assert next_run(monthly, utc(2026, 4, 1), "UTC") == utc(2026, 4, 30, 9)
    assert next_run(monthly, utc(2026, 12, 31, 9), "UTC") == utc(2027, 1, 31, 9)
    leap = Schedule(every="month", day=30, at=time(9), time_zone="UTC")
    assert next_run(leap, utc(2028, 1, 30, 9), "UTC") == utc(2028, 2, 29, 9)


def test_a_schedule_stops_at_until() -> None:
    daily = Schedule(every="day", at=time(8), time_zone="UTC", until=utc(2026, 5, 5, 8))
    assert next_run(daily, utc(2026, 5, 4, 8), "UTC") == utc(2026, 5, 5, 8)
    assert next_run(daily, utc(2026, 5, 5, 8), "UTC") is None


def test_date_triggers_fire_ahead_only() -> None:
    rule = TimeZoneRule()
    birthday = DateTrigger(trait="birthday", yearly=True, at=time(9))
    now = utc(2026, 5, 12, 7)  # exactly 09:00 in Paris on her birthday
    assert (
        date_trigger_instant(birthday, "1990-05-12", PARIS, rule, now - timedelta(seconds=1)) == now
    )
    assert date_trigger_instant(birthday, "1990-05-12", PARIS, rule, now) == utc(2027, 5, 12, 7)
    assert date_trigger_instant(birthday, "1992-02-29", "UTC", rule, now) == utc(2027, 2, 28, 9)
    reminder = DateTrigger(trait="at", offset=-timedelta(minutes=15))
    table = "2026-05-04T19:30:00+02:00"
    assert date_trigger_instant(reminder, table, None, rule, utc(2026, 5, 4)) == utc(
        2026, 5, 4, 17, 15
    )
    assert date_trigger_instant(reminder, table, None, rule, utc(2026, 5, 4, 17, 15)) is None
    assert date_trigger_instant(reminder, None, None, rule, utc(2026, 5, 4)) is None
    assert date_trigger_instant(reminder, "soon", None, rule, utc(2026, 5, 4)) is None
