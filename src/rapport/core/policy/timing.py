"""Time in the customer's zone: quiet hours and frequency-cap windows.

Zones are IANA names read with ``zoneinfo``, so daylight saving time is
right: quiet hours end at 09:00 local time on the day the clocks change
too, and a calendar day is the customer's day, 23 or 25 hours long.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rapport.core.model import Profile, SentMessage
from rapport.core.policy.document import FrequencyCap, PolicyDocument, QuietHours, parse_window


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def customer_zone(policy: PolicyDocument, profile: Profile | None) -> tzinfo:
    """The zone named by the profile's time-zone trait, else the policy's default."""
    if profile is not None:
        trait = profile.traits.get(policy.timezone.trait)
        if trait is not None and isinstance(trait.value, str) and trait.value:
            found = _zone(trait.value)
            if found is not None:
                return found
    return _zone(policy.timezone.default) or UTC


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def quiet_until(quiet: QuietHours, zone: tzinfo, now: datetime) -> datetime | None:
    """When the quiet hours around ``now`` end (an aware UTC instant); None outside them.

    The window may cross midnight (21:00-09:00). Its end is the next
    ``end`` local time; on a day when ``end`` does not exist (the clocks
    jump over it) it is the first instant after the jump.
    """
    start, end = _clock(quiet.start), _clock(quiet.end)
    local = now.astimezone(zone)
    t = local.time().replace(tzinfo=None)
    inside = (start <= t < end) if start < end else (t >= start or t < end)
    if not inside:
        return None
    day = local.date() if t < end else local.date() + timedelta(days=1)
    return _local_instant(day, end, zone)


def _local_instant(day: date, at: time, zone: tzinfo) -> datetime:
    naive = datetime.combine(day, at)
    early = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if early.astimezone(zone).replace(tzinfo=None) == naive:
        return early
    # ``at`` falls in a gap (spring forward): the wall clock skipped it, so the
    # window ends at the jump. Read with the offset after the jump (fold=1)
    # the naive time lies before it, with the offset before (fold=0) after
    # it; the jump is found between the two to the second.
    low = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high, after = early, early.astimezone(zone).utcoffset()
    low, high = min(low, high), max(low, high)
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(zone).utcoffset() == after:
            high = mid
        else:
            low = mid
    return high.replace(microsecond=0) + (
        timedelta(seconds=1) if high.microsecond else timedelta(0)
    )


def _local_week(day: date) -> date:
    return day - timedelta(days=day.weekday())


def in_window(cap: FrequencyCap, sent_at: datetime, at: datetime, zone: tzinfo) -> bool:
    """Whether a message sent at ``sent_at`` counts against ``cap`` for one going at ``at``.

    Rolling: sent in the window's length before ``at`` (or later: a message
    deferred past ``at`` is already promised). Calendar: the same local day
    (or Monday-to-Sunday week) as ``at``.
    """
    if cap.window == "calendar_day":
        return sent_at.astimezone(zone).date() == at.astimezone(zone).date()
    if cap.window == "calendar_week":
        return _local_week(sent_at.astimezone(zone).date()) == _local_week(
            at.astimezone(zone).date()
        )
    length = parse_window(cap.window)
    if length is None:
        return False
    return sent_at > at - length


def matches(cap: FrequencyCap, channel: str, category: str, topic: str | None) -> bool:
    return (
        (cap.channel is None or cap.channel == channel)
        and (cap.category is None or cap.category == category)
        and (cap.topic is None or cap.topic == topic)
    )


def count_for_cap(
    cap: FrequencyCap, sent: Iterable[SentMessage], at: datetime, zone: tzinfo
) -> int:
    """How many of ``sent`` count against ``cap`` for a message going at ``at``."""
    return sum(
        1
        for s in sent
        if matches(cap, s.channel, s.category, s.topic) and in_window(cap, s.at, at, zone)
    )
