"""The usual time: the local time of day a customer is usually active, learned from her events.

``usual_time`` answers "when does she come back?" so a journey can wait for
it (``wait_until_time`` with ``trait``): the value is ``"HH:MM"``, the start
of the ``bucket``-long stretch of the day (an hour by default) holding most
of her activity events over the sliding ``window`` (30 days by default), in
the time zone the event itself reports (``context.timezone``, which the
Segment and RudderStack SDKs fill in; else ``time_zone``, UTC by default).
Ties go to the stretch with the most recent event: habits change.

Activity events are ``page`` and ``screen`` calls (unless ``pages`` is
false) and the track events listed in ``events`` (all of them when it is
absent). The state keeps the newest ``MAX_SAMPLES`` events' times and local
buckets; an event counts while it is less than one window old. Before any
activity (or once it all aged out) the trait has no value, and a wait reading
it takes its own default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from rapport.core.conditions.instants import parse_duration
from rapport.core.model import Event

DEFAULT_WINDOW: Final = "30d"
DEFAULT_BUCKET: Final = "1h"
MAX_SAMPLES: Final = 200
"""Most recent activity events kept (the oldest beyond are dropped first)."""
MAX_EVENTS: Final = 100
MINUTE_US: Final = 60_000_000
DAY_MINUTES: Final = 24 * 60
PAGE_TYPES: Final = frozenset(("page", "screen"))


class UsualTimeSpec(msgspec.Struct, frozen=True, kw_only=True):
    window_us: int
    bucket_minutes: int
    events: tuple[str, ...] | None
    """Track events that count; None: every track event."""
    pages: bool
    time_zone: str

    @property
    def id(self) -> str:
        """The state id: the same spec shares one state whatever the trait is called."""
        digest = hashlib.sha256(msgspec.json.encode(self)).hexdigest()[:16]
        return f"ct_usual_{digest}"


def usual_time_spec(compute: Mapping[str, Any]) -> UsualTimeSpec:
    """The spec of a validated ``compute`` object (``validate.validate_compute``)."""
    events = compute.get("events")
    return UsualTimeSpec(
        window_us=parse_duration(compute.get("window", DEFAULT_WINDOW)),
        bucket_minutes=parse_duration(compute.get("bucket", DEFAULT_BUCKET)) // MINUTE_US,
        events=None if events is None else tuple(sorted(set(events))),
        pages=compute.get("pages", True),
        time_zone=compute.get("time_zone", "UTC"),
    )


class UsualTimeState(msgspec.Struct, kw_only=True, omit_defaults=True, array_like=True):
    """``samples``: ``[time in µs, local minute of the day]`` pairs, oldest first."""

    samples: list[tuple[int, int]] = []
    next_expiry: int | None = None


def _zone(name: Any, fallback: ZoneInfo) -> ZoneInfo:
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return fallback


class UsualTime:
    """The pure state machine of one ``UsualTimeSpec``."""

    def __init__(self, spec: UsualTimeSpec) -> None:
        self.spec = spec
        self._events = None if spec.events is None else frozenset(spec.events)
        self._zone = _zone(spec.time_zone, ZoneInfo("UTC"))

    def counts(self, event: Event) -> bool:
        if event.type in PAGE_TYPES:
            return self.spec.pages
        if event.type != "track" or event.event is None:
            return False
        return self._events is None or event.event in self._events

    def observe(self, state: UsualTimeState, event: Event, at: int, now: int) -> UsualTimeState:
        state = self.expire(state, now)
        if at <= now - self.spec.window_us or not self.counts(event):
            return state
        zone = _zone(event.context.get("timezone"), self._zone)
        local = datetime.fromtimestamp(at / 1_000_000, tz=UTC).astimezone(zone)
        sample = (at, local.hour * 60 + local.minute)
        samples = sorted([*state.samples, sample])[-MAX_SAMPLES:]
        return self._state(samples)

    def expire(self, state: UsualTimeState, now: int) -> UsualTimeState:
        if state.next_expiry is None or now < state.next_expiry:
            return state
        cutoff = now - self.spec.window_us
        return self._state([s for s in state.samples if s[0] > cutoff])

    def merge(self, a: UsualTimeState, b: UsualTimeState, now: int) -> UsualTimeState:
        a, b = self.expire(a, now), self.expire(b, now)
        if not b.samples:
            return a
        if not a.samples:
            return b
        return self._state(sorted({*a.samples, *b.samples})[-MAX_SAMPLES:])

    def _state(self, samples: list[tuple[int, int]]) -> UsualTimeState:
        if not samples:
            return UsualTimeState()
        return UsualTimeState(samples=samples, next_expiry=samples[0][0] + self.spec.window_us)

    def value(self, state: UsualTimeState, now: int) -> str | None:
        """``"HH:MM"``: the start of the busiest stretch of the day; None without activity."""
        cutoff = now - self.spec.window_us
        size = self.spec.bucket_minutes
        tally: dict[int, tuple[int, int]] = {}  # bucket -> (count, newest time)
        for at, minute in state.samples:
            if at <= cutoff:
                continue
            bucket = minute // size
            count, newest = tally.get(bucket, (0, at))
            tally[bucket] = (count + 1, max(newest, at))
        if not tally:
            return None
        best = max(tally, key=lambda b: (tally[b][0], tally[b][1], -b))
        start = best * size
        return f"{start // 60:02d}:{start % 60:02d}"
