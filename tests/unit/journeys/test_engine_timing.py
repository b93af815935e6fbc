"""Local times and date instants the engine waits for, across time zones and clock changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from rapport.core.journeys.model import TimeZoneRule
from rapport.core.journeys.timing import date_instant, local_instant, next_local_time, zone_of

PARIS = ZoneInfo("Europe/Paris")


def test_zone_of_falls_back_to_the_default_then_utc() -> None:
    rule = TimeZoneRule(default="Europe/Paris")
    assert zone_of("America/New_York", rule).key == "America/New_York"
    assert zone_of("Mars/Olympus", rule).key == "Europe/Paris"
    assert zone_of(42, TimeZoneRule(default="Nowhere/Else")).key == "UTC"


def test_a_local_time_in_the_spring_gap_is_the_first_instant_after_it() -> None:
    # 2026-03-29: Paris moves from 02:00 (+01:00) to 03:00 (+02:00), i.e. 01:00 UTC.
    assert local_instant(date(2026, 3, 29), time(2, 30), PARIS) == datetime(
        2026, 3, 29, 1, 0, tzinfo=UTC
    )


def test_a_local_time_that_happens_twice_is_the_first() -> None:
    # 2026-10-25: 02:30 happens at 00:30 UTC (+02:00) and at 01:30 UTC (+01:00).
    assert local_instant(date(2026, 10, 25), time(2, 30), PARIS) == datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC
    )


def test_next_local_time_is_strictly_after_now_on_an_allowed_day() -> None:
    friday_evening = datetime(2026, 3, 6, 18, 0, tzinfo=UTC)  # 19:00 in Paris
    assert next_local_time(friday_evening, time(19, 0), (), PARIS) == datetime(
        2026, 3, 7, 18, 0, tzinfo=UTC
    )
    weekdays = (0, 1, 2, 3, 4)
    assert next_local_time(friday_evening, time(19, 0), weekdays, PARIS) == datetime(
        2026, 3, 9, 18, 0, tzinfo=UTC
    )


def test_date_instants() -> None:
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    common = {"now": now, "zone": PARIS, "offset": timedelta(0)}
    assert date_instant("2026-03-10", at=time(9, 0), yearly=False, **common) == datetime(
        2026, 3, 10, 8, 0, tzinfo=UTC
    )
    assert date_instant("2026-03-10T12:00:00Z", at=None, yearly=False, **common) == datetime(
        2026, 3, 10, 12, 0, tzinfo=UTC
    )
    # 29 February falls on 28 February in other years; the next anniversary is ahead.
    assert date_instant("1992-02-29", at=time(9, 0), yearly=True, **common) == datetime(
        2027, 2, 28, 8, 0, tzinfo=UTC
    )
    assert date_instant(
        "1990-05-12", at=None, yearly=True, now=now, zone=PARIS, offset=-timedelta(days=1)
    ) == datetime(2026, 5, 10, 22, 0, tzinfo=UTC)
    assert date_instant("not a date", at=None, yearly=False, **common) is None
    assert date_instant(None, at=None, yearly=False, **common) is None
    assert date_instant("2026-03-10T12:00:00", at=None, yearly=False, **common) is None
