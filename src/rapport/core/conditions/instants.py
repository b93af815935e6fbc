"""Durations, instants and the relative times that conditions compare against.

Inside conditions and aggregates a point in time is an ``int`` of microseconds
since the Unix epoch (UTC): exact (a ``datetime`` has microsecond resolution),
cheap to compare, and compact when an aggregate state is serialised.

A time comparison against a relative moment ("in the last 30 days") is true
over an interval of *now*. Every such interval is half-open, ``[start, end)``:
the boundary instant belongs to the period that starts there. That is what
lets a timer set for the reported boundary see the new value when it fires.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)

UNIT_MICROS: dict[str, int] = {
    "w": 7 * 86_400_000_000,
    "d": 86_400_000_000,
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
}

# Patterns are shared with the JSON Schema. They end in ``$(?!\n)`` because in
# Python's ``re`` (which jsonschema uses) a bare ``$`` also matches before a
# final newline; the lookahead makes both engines agree that "1h\n" is wrong.
DURATION_PATTERN = r"^(?:[1-9][0-9]{0,5}[wdhms])+$(?!\n)"
# Calendar-exact, so that the published JSON Schema refuses what the validator
# refuses (no 30 February, 29 February only in leap years, no year 0).
TIMESTAMP_PATTERN = (
    r"^(?!0000)(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    r"|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$(?!\n)"
)
_DURATION = re.compile(DURATION_PATTERN)
_DURATION_PART = re.compile(r"([0-9]+)([wdhms])")
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)

Interval = tuple[int | None, int | None]
"""``[start, end)`` in microseconds; ``None`` means unbounded on that side."""

ALWAYS: Interval = (None, None)


def to_micros(when: datetime) -> int:
    """``when`` as microseconds since the epoch; naive datetimes are refused."""
    if when.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return (when - EPOCH) // _ONE_MICROSECOND


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def is_duration(text: str) -> bool:
    return _DURATION.search(text) is not None


def parse_duration(text: str) -> int:
    """``"90m"``, ``"1h30m"``, ``"30d"``, ``"2w"`` as microseconds (always > 0)."""
    if not is_duration(text):
        raise ValueError(f"not a duration: {text!r} (use e.g. '30s', '15m', '2h', '30d', '1w')")
    return sum(int(number) * UNIT_MICROS[unit] for number, unit in _DURATION_PART.findall(text))


def parse_timestamp(text: str) -> int:
    """An RFC 3339 timestamp with its offset (``2026-01-31T09:00:00Z``) in microseconds."""
    if _TIMESTAMP.search(text) is None:
        raise ValueError(f"not a timestamp: {text!r} (use e.g. '2026-01-31T09:00:00Z')")
    return to_micros(datetime.fromisoformat(text))


def instant_of(value: Any) -> int | None:
    """A trait or property value as an instant, or ``None`` if it is not a time.

    Accepts aware or naive (taken as UTC) datetimes and ISO-8601 strings
    (``2026-01-31``, ``2026-01-31T09:00:00+01:00``...). Numbers are not
    guessed at: seconds or milliseconds since the epoch are indistinguishable.
    """
    if type(value) is str:
        return _parse_iso(value)
    if isinstance(value, datetime):
        return to_micros(value if value.tzinfo is not None else value.replace(tzinfo=UTC))
    return None


@lru_cache(maxsize=4096)
def _parse_iso(text: str) -> int | None:
    # Trait values are re-read at every evaluation; parsing the same few
    # strings again and again would dominate the cost of a time comparison.
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return to_micros(parsed)


IntervalOf = Callable[[int], Interval | None]
"""Maps a compared instant ``t`` to the interval of *now* in which the comparison holds."""


def moment_test(op: str, moment: Any) -> tuple[IntervalOf, bool]:
    """``before``/``after`` a moment: the interval function and whether it depends on now.

    ``before`` means at or before (``t <= moment``), ``after`` strictly after
    (``t > moment``), so that for a relative moment the boundary belongs to
    the later period.
    """
    if isinstance(moment, str):
        fixed = parse_timestamp(moment)
        if op == "before":
            return (lambda t: ALWAYS if t <= fixed else None), False
        return (lambda t: ALWAYS if t > fixed else None), False
    if "ago" in moment:
        offset = parse_duration(moment["ago"])  # moment = now - offset
    else:
        offset = -parse_duration(moment["from_now"])  # moment = now + |offset|
    if op == "before":  # t <= now - offset  <=>  now >= t + offset
        return (lambda t: (t + offset, None)), True
    return (lambda t: (None, t + offset)), True  # t > now - offset  <=>  now < t + offset


def span_test(span: dict[str, str]) -> IntervalOf:
    """``within`` the last or next duration: ``now - d < t <= now`` / ``now < t <= now + d``."""
    if "last" in span:
        length = parse_duration(span["last"])
        return lambda t: (t, t + length)
    length = parse_duration(span["next"])
    return lambda t: (t - length, t)


def holds(interval: Interval, now: int) -> bool:
    start, end = interval
    return (start is None or start <= now) and (end is None or now < end)


def next_boundary(interval: Interval, now: int) -> int | None:
    """The first instant after ``now`` at which being inside ``interval`` changes."""
    start, end = interval
    if start is not None and now < start:
        return start
    if end is not None and now < end:
        return end
    return None
