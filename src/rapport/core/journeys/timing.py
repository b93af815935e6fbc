"""Instants a journey waits for: local times of day and date traits, in the customer's zone.

Pure arithmetic on aware datetimes with ``zoneinfo``. The rules (docs:
"Wait" and "Date"): a local time that does not exist that day (clocks
moving forward) is the first instant after the gap; one that happens twice
(clocks moving back), the first time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rapport.core.journeys.model import TimeZoneRule


def zone_of(trait_value: Any, rule: TimeZoneRule) -> ZoneInfo:
    """The customer's zone: the trait's IANA name, else the rule's default (else UTC)."""
    for name in (trait_value, rule.default):
        if isinstance(name, str) and name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """``day`` at ``at`` in ``zone`` as a UTC instant, resolving gaps and folds as documented."""
    wall = datetime.combine(day, at.replace(tzinfo=None), tzinfo=zone)  # fold=0: the first
    instant = wall.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return instant
    # In a gap: the transition lies between the two readings of the wall time.
    low = wall.replace(fold=1).astimezone(UTC)
    high = instant
    if low > high:
        low, high = high, low
    after = high.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == after:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0) if high.microsecond else high


def next_local_time(now: datetime, at: time, days: tuple[int, ...], zone: ZoneInfo) -> datetime:
    """The first instant strictly after ``now`` that is ``at`` in ``zone`` on one of ``days``."""
    today = now.astimezone(zone).date()
    for ahead in range(0, 9):
        day = today + timedelta(days=ahead)
        if days and day.weekday() not in days:
            continue
        candidate = local_instant(day, at, zone)
        if candidate > now:
            return candidate
    raise AssertionError("a week always holds an allowed day")  # pragma: no cover


def parse_time_text(value: Any) -> time | None:
    """``"HH:MM"`` text as a time of day, or None."""
    if not isinstance(value, str) or len(value) != 5 or value[2] != ":":
        return None
    try:
        return time(int(value[:2]), int(value[3:]))
    except ValueError:
        return None


def date_instant(
    value: Any,
    *,
    now: datetime,
    zone: ZoneInfo,
    at: time | None,
    yearly: bool,
    offset: timedelta,
) -> datetime | None:
    """The instant a date trait gives (docs: "Date"), or None if the value holds no date."""
    if not isinstance(value, str):
        return None
    day, moment = _read_date(value)
    if day is None:
        return None

    def instant_on(d: date) -> datetime:
        if moment is not None and at is None:
            return datetime.combine(d, moment.timetz()).astimezone(UTC)
        return local_instant(d, at or time(0), zone)

    if moment is not None and at is not None:
        day = moment.astimezone(zone).date()
    if not yearly:
        return instant_on(day) + offset
    for year in range(now.astimezone(zone).year - 1, now.astimezone(zone).year + 3):
        candidate = instant_on(_anniversary(day, year)) + offset
        if candidate > now:
            return candidate
    return None  # pragma: no cover - a later year always comes


def _read_date(text: str) -> tuple[date | None, datetime | None]:
    if len(text) == 10:
        try:
            return date.fromisoformat(text), None
        except ValueError:
            return None, None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None, None
    if moment.tzinfo is None:
        return None, None
    return moment.date(), moment


def _anniversary(day: date, year: int) -> date:
    if day.month == 2 and day.day == 29:
        try:
            return date(year, 2, 29)
        except ValueError:
            return date(year, 2, 28)
    return day.replace(year=year)
