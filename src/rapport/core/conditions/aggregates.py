"""Event aggregates over a sliding time window, maintained one event at a time.

An aggregate ("count of ``Product Viewed`` in the last hour, per
``properties.product_id``") keeps a small serialisable state per profile.
Each matching event is added once; time passing only ever removes what aged
out. The value at any instant is read from the state, never by rescanning
the profile's history.

Exactness and bounds
--------------------
Each key keeps one *slot* per ``resolution`` (by default a 3600th of the
window: one second for a one-hour window, 24 seconds for a day) that saw
events, holding the count, exact partial sums, the extreme value and the
first and last values of its events, and the time of its newest event. A
slot ages out, all at once, when that newest event is ``window`` old. So an
event is counted until the newest event sharing its slot ages out: events of
one key that are at least ``resolution`` apart (in different slots) are
exact to the microsecond, and no event is ever dropped early. Memory per key
is bounded by ``SLOTS_PER_WINDOW + 1`` slots, and by one slot for all-time
aggregates (no window).

``distinct_count`` keeps, per key, each distinct value with the time it was
last seen (exact), at most ``MAX_DISTINCT_VALUES`` of them: past that the
value seen longest ago is forgotten, so the count saturates at that cap.
At most ``MAX_KEYS`` keys are kept: the ones with the most recent events.

Rules that make the incremental value equal a full recomputation
----------------------------------------------------------------
- An event counts while ``now - window < event time`` (no upper bound: an
  event stamped slightly in the future counts from when it is processed).
- An event that is already out of the window when it arrives is ignored,
  and expiry is final: the clock is expected never to move backwards.
- ``sum`` is exact: the integer sum when every value is an integer, else
  the correctly rounded sum of the values (``math.fsum``), whatever the
  order of arrival and expiry. ``sum``/``min``/``max`` only take numbers
  (booleans are not numbers); ``first``/``last`` ignore ``null``;
  ``distinct_count`` compares values as text (see ``fields.key_text``).
- ``first``/``last`` are the values of the earliest/latest events by event
  time; between events at the same instant, the one that arrived first is
  ``first`` and the one that arrived last is ``last``.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

import msgspec

from rapport.core.conditions.comparisons import Predicate, compile_comparison
from rapport.core.conditions.fields import event_field, key_text
from rapport.core.conditions.instants import from_micros, to_micros
from rapport.core.conditions.slots import ACCEPTORS, SKIP, Slot, combine, merge, new_slot, reduce
from rapport.core.model import Event

AggregateKind = Literal["count", "sum", "min", "max", "first", "last", "distinct_count"]
AGGREGATES: tuple[AggregateKind, ...] = (
    "count",
    "sum",
    "min",
    "max",
    "first",
    "last",
    "distinct_count",
)

SLOTS_PER_WINDOW = 3600
MAX_KEYS = 1000
MAX_DISTINCT_VALUES = 1000


class AggregateSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What to aggregate: which events, which value, over which window, per which key."""

    event: str
    aggregate: AggregateKind = "count"
    where: list[dict[str, Any]] = []
    """Field filters (``{"field", "op", "value"}``) that all must hold; already validated."""
    of: str | None = None
    window_us: int | None = None
    """Window length in microseconds; ``None`` aggregates over all time."""
    key: str | None = None
    resolution_us: int | None = None
    """Slot width; ``None`` means ``window_us // SLOTS_PER_WINDOW``."""

    @property
    def id(self) -> str:
        """A stable id: specs that aggregate the same thing share one state."""
        canonical = msgspec.json.encode(self, order="sorted")
        return "agg_" + hashlib.sha256(canonical).hexdigest()[:20]


class KeySeries(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    slots: tuple[Slot, ...] = ()
    """Ordered by time (``index``); unused by ``distinct_count``. A tuple, like
    ``Slot.floats``: one shared object when empty, and never followed by the
    garbage collector once it saw that it holds only slots."""
    seen: dict[str, int] = {}
    """``distinct_count`` only: value -> time it was last seen."""


class AggregateState(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One profile's state for one aggregate. Treated as immutable.

    States, their series and slots are many small objects made and dropped
    for every event; they hold only values from events, never a reference
    back, so they can stay out of the garbage collector (``gc=False``), as
    the model's structs do.
    """

    keys: dict[str, KeySeries] = {}
    next_expiry: int | None = None
    """When the oldest slot ages out (microseconds), exactly; ``None`` if nothing can."""


class AggregateReading(msgspec.Struct, frozen=True, gc=False):
    """An aggregate's value per key at one instant.

    Only keys with events in the window appear; an aggregate without ``key``
    uses the single key ``""``. Made for every aggregate a condition reads,
    and holding only values: kept out of the garbage collector like states.
    """

    values: Mapping[str, Any]
    next_expiry_us: int | None = None
    """The next instant at which a value changes by time alone (an event ages out)."""

    @property
    def next_expiry(self) -> datetime | None:
        return None if self.next_expiry_us is None else from_micros(self.next_expiry_us)


EMPTY_READING = AggregateReading(values={})


def empty_value(kind: str) -> Any:
    """The value of an aggregate over no events."""
    return 0 if kind in ("count", "sum", "distinct_count") else None


class Aggregator:
    """The pure state machine of one ``AggregateSpec``: observe, add, expire, read."""

    __slots__ = ("_accept", "_key", "_matches", "_of", "grain", "keyed", "kind", "spec", "window")

    spec: AggregateSpec
    kind: AggregateKind
    window: int | None
    grain: int | None
    """Slot width in microseconds; ``None`` for all-time aggregates (one slot)."""
    keyed: bool
    _accept: Callable[[Any], Any]
    _matches: tuple[Callable[[Event], bool], ...]
    _of: Callable[[Event], Any] | None
    _key: Callable[[Event], Any] | None

    def __init__(self, spec: AggregateSpec) -> None:
        self.spec = spec
        self.kind = spec.aggregate
        self.window = spec.window_us
        self.keyed = spec.key is not None
        if spec.window_us is None:
            self.grain = None
        else:
            self.grain = spec.resolution_us or max(1, spec.window_us // SLOTS_PER_WINDOW)
        self._accept = ACCEPTORS[spec.aggregate]
        self._matches = _filters(spec.where)
        self._of = event_field(spec.of) if spec.of is not None else None
        self._key = event_field(spec.key) if spec.key is not None else None

    def empty(self) -> AggregateState:
        return AggregateState()

    # -- events -------------------------------------------------------------

    def matches(self, event: Event) -> bool:
        if event.event != self.spec.event:
            return False
        # A plain loop: all() over a generator costs more than most filters.
        for test in self._matches:  # noqa: SIM110
            if not test(event):
                return False
        return True

    def observe(self, state: AggregateState, event: Event, now: datetime) -> AggregateState:
        """``state`` after ``event`` (unchanged if the event does not match)."""
        return self.observe_micros(state, event, to_micros(event.timestamp), to_micros(now))

    def observe_micros(
        self, state: AggregateState, event: Event, at: int, now: int
    ) -> AggregateState:
        """``observe`` with the event's time (``at``) and ``now`` already in microseconds.

        One event feeds many aggregates: the caller converts both times once.
        """
        if not self.matches(event):
            return self.expire_micros(state, now)
        return self.add_event_micros(state, event, at, now)

    def add_event_micros(
        self, state: AggregateState, event: Event, at: int, now: int
    ) -> AggregateState:
        """``observe_micros`` for an event already known to match (``matches``)."""
        value = self._of(event) if self._of is not None else None
        key = key_text(self._key(event)) if self._key is not None else None
        return self.add_micros(state, at, value, key, now)

    def add(
        self, state: AggregateState, at: datetime, value: Any, key: str | None, now: datetime
    ) -> AggregateState:
        return self.add_micros(state, to_micros(at), value, key, to_micros(now))

    def add_micros(
        self, state: AggregateState, at: int, value: Any, key: str | None, now: int
    ) -> AggregateState:
        """``state`` with one matching event at ``at``, expired to ``now``.

        ``key`` is the event's key as text (``None``: the event has no key,
        and a keyed aggregate ignores it); unkeyed aggregates ignore it.
        """
        expiry = state.next_expiry
        if expiry is not None and now >= expiry:
            state = self.expire_micros(state, now)
        window = self.window
        if window is not None and at <= now - window:
            return state
        value = self._accept(value)
        if value is SKIP:
            return state
        if not self.keyed:
            key = ""
        elif key is None:
            return state
        keys = dict(state.keys)
        series = keys.get(key)
        evicted = False
        if series is None and len(keys) >= MAX_KEYS:
            stalest = min(keys, key=lambda k: (_newest(keys[k]), k))
            if _newest(keys[stalest]) > at:
                return state
            del keys[stalest]
            evicted = True
        updated = self._with_event(series, at, value)
        keys[key] = updated
        next_expiry = state.next_expiry
        if window is not None:
            before = _earliest(series) if series is not None else None
            after = _earliest(updated) + window
            if evicted or (
                before is not None and before + window == next_expiry and after > next_expiry
            ):
                next_expiry = self._next_expiry(keys)
            elif next_expiry is None or after < next_expiry:
                next_expiry = after
        return AggregateState(keys=keys, next_expiry=next_expiry)

    def _with_event(self, series: KeySeries | None, at: int, value: Any) -> KeySeries:
        if self.kind == "distinct_count":
            seen = dict(series.seen) if series is not None else {}
            if seen.get(value, at - 1) < at:
                seen[value] = at
            if len(seen) > MAX_DISTINCT_VALUES:
                del seen[min(seen, key=lambda v: (seen[v], v))]
            return KeySeries(seen=seen)
        slots = series.slots if series is not None else ()
        index = 0 if self.grain is None else at // self.grain
        if not slots or slots[-1].index < index:
            # The usual case: the event is the newest of its key.
            return KeySeries(slots=(*slots, new_slot(self.kind, index, at, value)))
        pos = bisect_left(slots, index, key=_slot_index)
        if pos < len(slots) and slots[pos].index == index:
            slot = merge(self.kind, slots[pos], at, value)
            return KeySeries(slots=(*slots[:pos], slot, *slots[pos + 1 :]))
        slot = new_slot(self.kind, index, at, value)
        return KeySeries(slots=(*slots[:pos], slot, *slots[pos:]))

    # -- merging ------------------------------------------------------------

    def merge_micros(self, a: AggregateState, b: AggregateState, now: int) -> AggregateState:
        """The state of the union of the events of ``a`` and ``b``, expired to ``now``.

        When two profiles merge, each kept its own states: the merged person
        viewed the jacket twice as one and once as the other, which is three
        views. Slots of one key and one index are combined (``slots.combine``);
        the caps on keys and distinct values keep the most recent, as
        ``add_micros`` does.
        """
        if not b.keys:
            return self.expire_micros(a, now)
        if not a.keys:
            return self.expire_micros(b, now)
        keys = dict(a.keys)
        for key, theirs in b.keys.items():
            ours = keys.get(key)
            keys[key] = theirs if ours is None else self._merged_series(ours, theirs)
        # Expired once combined, not before: a slot aged out on one side may
        # live on in the same slot of the other (its newest event is newer).
        keys = dict(
            self.expire_micros(
                AggregateState(keys=keys, next_expiry=self._next_expiry(keys)), now
            ).keys
        )
        if len(keys) > MAX_KEYS:
            newest = sorted(keys, key=lambda k: (_newest(keys[k]), k), reverse=True)
            keys = {k: keys[k] for k in newest[:MAX_KEYS]}
        return AggregateState(keys=keys, next_expiry=self._next_expiry(keys))

    def _merged_series(self, ours: KeySeries, theirs: KeySeries) -> KeySeries:
        if self.kind == "distinct_count":
            seen = dict(ours.seen)
            for value, at in theirs.seen.items():
                if seen.get(value, at - 1) < at:
                    seen[value] = at
            if len(seen) > MAX_DISTINCT_VALUES:
                kept = sorted(seen, key=lambda v: (seen[v], v), reverse=True)
                seen = {v: seen[v] for v in kept[:MAX_DISTINCT_VALUES]}
            return KeySeries(seen=seen)
        by_index = {slot.index: slot for slot in ours.slots}
        for slot in theirs.slots:
            mine = by_index.get(slot.index)
            by_index[slot.index] = slot if mine is None else combine(self.kind, mine, slot)
        return KeySeries(slots=tuple(by_index[i] for i in sorted(by_index)))

    # -- time ---------------------------------------------------------------

    def expire(self, state: AggregateState, now: datetime) -> AggregateState:
        return self.expire_micros(state, to_micros(now))

    def expire_micros(self, state: AggregateState, now: int) -> AggregateState:
        """``state`` without what aged out by ``now`` (the same object if nothing did)."""
        if state.next_expiry is None or now < state.next_expiry or self.window is None:
            return state
        cutoff = now - self.window
        keys: dict[str, KeySeries] = {}
        for key, series in state.keys.items():
            if self.kind == "distinct_count":
                seen = {v: t for v, t in series.seen.items() if t > cutoff}
                if seen:
                    keys[key] = KeySeries(seen=seen)
                continue
            pos = bisect_right(series.slots, cutoff, key=_slot_at)
            if pos == 0:
                keys[key] = series
            elif pos < len(series.slots):
                keys[key] = KeySeries(slots=series.slots[pos:])
        return AggregateState(keys=keys, next_expiry=self._next_expiry(keys))

    def _next_expiry(self, keys: Mapping[str, KeySeries]) -> int | None:
        if self.window is None or not keys:
            return None
        return min(_earliest(series) for series in keys.values()) + self.window

    def next_expiry(self, state: AggregateState) -> datetime | None:
        return None if state.next_expiry is None else from_micros(state.next_expiry)

    # -- values -------------------------------------------------------------

    def read(self, state: AggregateState, now: datetime) -> AggregateReading:
        return self.read_micros(state, to_micros(now))

    def read_micros(self, state: AggregateState, now: int) -> AggregateReading:
        """The value per key at ``now``; correct whether or not ``state`` was expired."""
        window = self.window
        cutoff = None if window is None else now - window
        values: dict[str, Any] = {}
        earliest: int | None = None
        distinct = self.kind == "distinct_count"
        for key, series in state.keys.items():
            if distinct:
                live = [t for t in series.seen.values() if cutoff is None or t > cutoff]
                if not live:
                    continue
                values[key] = len(live)
                first_at = min(live)
            else:
                slots = series.slots
                if cutoff is not None and slots[0].at <= cutoff:
                    slots = slots[bisect_right(slots, cutoff, key=_slot_at) :]
                    if not slots:
                        continue
                values[key] = reduce(self.kind, slots)
                first_at = slots[0].at
            if earliest is None or first_at < earliest:
                earliest = first_at
        if window is None or earliest is None:
            return AggregateReading(values=values)
        return AggregateReading(values=values, next_expiry_us=earliest + window)


def _slot_index(slot: Slot) -> int:
    return slot.index


def _slot_at(slot: Slot) -> int:
    return slot.at


def _earliest(series: KeySeries) -> int:
    return series.slots[0].at if series.slots else min(series.seen.values())


def _newest(series: KeySeries) -> int:
    return series.slots[-1].at if series.slots else max(series.seen.values())


def _filters(where: list[dict[str, Any]]) -> tuple[Callable[[Event], bool], ...]:
    def one(condition: dict[str, Any]) -> Callable[[Event], bool]:
        read = event_field(condition["field"])
        test = compile_comparison(condition["op"], condition.get("value")).test
        if test is None:
            raise ValueError("event filters compare against fixed values only")
        checked: Predicate = test
        return lambda event: checked(read(event))

    return tuple(one(condition) for condition in where)
