"""The engagement score: a weighted mix of active time, visit days and core actions, 0-100.

Over a sliding window (30 days by default), three components, each in [0, 1]:

- **active time** ``a = min(units * unit, target) / target``: ``units`` is the
  number of distinct ``unit``-long periods (5 minutes by default, aligned on
  the Unix epoch, UTC) holding at least one *activity* event in the window;
  ``target`` (2 hours by default) is the active time that counts as fully
  engaged;
- **visit days** ``d = min(days, target) / target``: ``days`` is the number of
  distinct UTC calendar days holding at least one activity event in the
  window (target 8 by default);
- **core actions** ``c = done / len(core_actions)``: how many of the listed
  core action events were done at least once in the window.

``score = floor(100 * (w_a*a + w_d*d + w_c*c) / (w_a + w_d + w_c) + 1/2)``, an
integer in [0, 100] (weights are non-negative, at least one positive; each
defaults to 1). *Activity* events are ``page`` and ``screen`` calls (unless
``activity.pages`` is false) and track events (all of them, or only those
named in ``activity.events``).

Incremental and exact: the state keeps, per period, day and core action, the
time of its newest event, and an entry counts while that time is less than
one window old -- which is exactly "the period holds an event in the window".
Only the newest ``ceil(target / unit)`` periods and ``target`` days are kept:
live entries are always the newest ones (periods and days are disjoint
stretches of time), so ``min(live, target)`` is the same whether the older
ones are kept or not. The state is therefore small (at most 1000 periods,
366 days and 50 actions) and the score equals a recomputation over the
events in the window, as for aggregates (events already out of the window
when they arrive are ignored; the clock never runs backwards).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from rapport.core.conditions.instants import UNIT_MICROS, parse_duration
from rapport.core.model import Event

DAY_US: Final = UNIT_MICROS["d"]

DEFAULT_WINDOW: Final = "30d"
DEFAULT_UNIT: Final = "5m"
DEFAULT_ACTIVE_TARGET: Final = "2h"
DEFAULT_DAYS_TARGET: Final = 8
COMPONENTS: Final = ("active_time", "visit_days", "core_actions")

MAX_UNITS: Final = 1000
"""Most periods an active-time target may need (``ceil(target / unit)``)."""
MAX_DAYS_TARGET: Final = 366
MAX_CORE_ACTIONS: Final = 50
MAX_ACTIVITY_EVENTS: Final = 100

PAGE_TYPES: Final = frozenset(("page", "screen"))


class EngagementSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The parameters of one engagement score, parsed and with defaults filled in."""

    window_us: int
    unit_us: int
    active_target_us: int
    days_target: int
    core_actions: tuple[str, ...]
    activity_events: tuple[str, ...] | None
    """Track events that count as activity; ``None``: every track event."""
    pages: bool
    weights: tuple[float, float, float]
    """Of active time, visit days and core actions, in that order."""

    @property
    def id(self) -> str:
        """The state id: scores with the same parameters share one state per profile."""
        canonical = msgspec.json.encode(self, order="sorted")
        return "ct_eng_" + hashlib.sha256(canonical).hexdigest()[:20]

    @property
    def units_kept(self) -> int:
        return -(-self.active_target_us // self.unit_us)


def engagement_spec(compute: Mapping[str, Any]) -> EngagementSpec:
    """The spec of a validated ``engagement_score`` definition (see ``validate``)."""
    activity = compute.get("activity", {})
    active_time = compute.get("active_time", {})
    raw_weights = compute.get("weights", {})
    weights = (
        float(raw_weights.get("active_time", 1)),
        float(raw_weights.get("visit_days", 1)),
        float(raw_weights.get("core_actions", 1)),
    )
    # What weighs nothing is not tracked at all (and does not change the state id).
    tracks_activity = weights[0] > 0 or weights[1] > 0
    events = activity.get("events") if tracks_activity else []
    core_actions = compute.get("core_actions", {}).get("events", []) if weights[2] > 0 else []
    return EngagementSpec(
        window_us=parse_duration(compute.get("window", DEFAULT_WINDOW)),
        unit_us=parse_duration(active_time.get("unit", DEFAULT_UNIT)),
        active_target_us=parse_duration(active_time.get("target", DEFAULT_ACTIVE_TARGET)),
        days_target=compute.get("visit_days", {}).get("target", DEFAULT_DAYS_TARGET),
        core_actions=tuple(dict.fromkeys(core_actions)),
        activity_events=None if events is None else tuple(sorted(set(events))),
        pages=tracks_activity and activity.get("pages", True),
        weights=weights,
    )


class EngagementState(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One profile's engagement state. Treated as immutable; times in microseconds."""

    units: dict[int, int] = {}
    """Period index (``time // unit``) -> time of its newest activity event."""
    days: dict[int, int] = {}
    """UTC day index -> time of its newest activity event."""
    actions: dict[str, int] = {}
    """Core action -> time of its newest event."""
    next_expiry: int | None = None
    """When the oldest entry ages out; ``None`` when there is none."""


class Engagement:
    """The pure state machine of one ``EngagementSpec``: observe, expire, score."""

    __slots__ = ("_actions", "_activity", "_days_on", "_units_on", "spec")

    def __init__(self, spec: EngagementSpec) -> None:
        self.spec = spec
        active, days, actions = spec.weights
        self._units_on = active > 0
        self._days_on = days > 0
        self._actions = frozenset(spec.core_actions) if actions > 0 else frozenset()
        self._activity = None if spec.activity_events is None else frozenset(spec.activity_events)

    def is_activity(self, event: Event) -> bool:
        if event.type in PAGE_TYPES:
            return self.spec.pages
        if event.type != "track" or event.event is None:
            return False
        return self._activity is None or event.event in self._activity

    def is_core_action(self, event: Event) -> bool:
        return event.type == "track" and event.event in self._actions

    def observe(self, state: EngagementState, event: Event, at: int, now: int) -> EngagementState:
        """``state`` after ``event`` (at ``at``), expired to ``now``."""
        state = self.expire(state, now)
        if at <= now - self.spec.window_us:
            return state
        units, days, actions = state.units, state.days, state.actions
        if self.is_activity(event):
            if self._units_on:
                units = _with_mark(units, at // self.spec.unit_us, at, self.spec.units_kept)
            if self._days_on:
                days = _with_mark(days, at // DAY_US, at, self.spec.days_target)
        if self.is_core_action(event):
            assert event.event is not None
            if actions.get(event.event, at - 1) < at:
                actions = {**actions, event.event: at}
        if units is state.units and days is state.days and actions is state.actions:
            return state
        return self._state(units, days, actions)

    def expire(self, state: EngagementState, now: int) -> EngagementState:
        """``state`` without what aged out by ``now`` (the same object if nothing did)."""
        if state.next_expiry is None or now < state.next_expiry:
            return state
        cutoff = now - self.spec.window_us
        return self._state(
            {k: t for k, t in state.units.items() if t > cutoff},
            {k: t for k, t in state.days.items() if t > cutoff},
            {k: t for k, t in state.actions.items() if t > cutoff},
        )

    def merge(self, a: EngagementState, b: EngagementState, now: int) -> EngagementState:
        """The state of the union of both activity histories, expired to ``now``.

        Per period, day and core action the newest time wins; the periods and
        days kept are the newest ``units_kept`` / ``days_target``, as
        ``observe`` keeps them.
        """
        a, b = self.expire(a, now), self.expire(b, now)
        if b.next_expiry is None:
            return a
        if a.next_expiry is None:
            return b
        units = _newest_marks(a.units, b.units, self.spec.units_kept)
        days = _newest_marks(a.days, b.days, self.spec.days_target)
        actions = dict(a.actions)
        for name, at in b.actions.items():
            if actions.get(name, at - 1) < at:
                actions[name] = at
        return self._state(units, days, actions)

    def _state(
        self, units: dict[int, int], days: dict[int, int], actions: dict[str, int]
    ) -> EngagementState:
        times = [*units.values(), *days.values(), *actions.values()]
        next_expiry = min(times) + self.spec.window_us if times else None
        return EngagementState(units=units, days=days, actions=actions, next_expiry=next_expiry)

    def score(self, state: EngagementState, now: int) -> int:
        """The score at ``now`` (correct whether or not ``state`` was expired)."""
        spec = self.spec
        cutoff = now - spec.window_us
        units = sum(1 for t in state.units.values() if t > cutoff)
        days = sum(1 for t in state.days.values() if t > cutoff)
        done = sum(1 for t in state.actions.values() if t > cutoff)
        return engagement_score(spec, units, days, done)


def engagement_score(spec: EngagementSpec, units: int, days: int, done: int) -> int:
    """The formula of the module docstring, from the three counts over the window."""
    w_active, w_days, w_actions = spec.weights
    active = min(units * spec.unit_us, spec.active_target_us) / spec.active_target_us
    visit = min(days, spec.days_target) / spec.days_target
    actions = done / len(spec.core_actions) if spec.core_actions and w_actions > 0 else 0.0
    total = w_active + w_days + w_actions
    mixed = (w_active * active + w_days * visit + w_actions * actions) / total
    return max(0, min(100, math.floor(100 * mixed + 0.5)))


def _newest_marks(a: dict[int, int], b: dict[int, int], keep: int) -> dict[int, int]:
    """The union of two mark maps (newest time per index), keeping the ``keep`` newest indexes."""
    merged = dict(a)
    for index, at in b.items():
        if merged.get(index, at - 1) < at:
            merged[index] = at
    if len(merged) > keep:
        kept = sorted(merged, reverse=True)[:keep]
        merged = {index: merged[index] for index in sorted(kept)}
    return merged


def _with_mark(marks: dict[int, int], index: int, at: int, keep: int) -> dict[int, int]:
    """``marks`` with an event at ``at`` in period ``index``, keeping the newest ``keep``."""
    current = marks.get(index)
    if current is not None:
        return marks if current >= at else {**marks, index: at}
    if len(marks) >= keep and index < min(marks):
        return marks  # older than every kept period: it would be dropped at once
    updated = {**marks, index: at}
    if len(updated) > keep:
        del updated[min(updated)]
    return updated
