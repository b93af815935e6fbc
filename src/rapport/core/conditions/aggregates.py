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
events, holding the time of its newest event and what the aggregate's kind
needs of its events (a count, exact partial sums, the extreme value, the
first or the last value: ``slots.KINDS``). Which stretch of time a slot
covers is not stored: it is that newest time divided by the resolution. A
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

Storage
-------
A state is stored as JSON, ``[next_expiry, {key: series}]`` (``AggregateState``),
written by any msgspec encoder (``Aggregator.encode``) and read by
``Aggregator.decode``, which decodes straight into the kind's slots (a
``count`` slot is ``[at, count]``). States stored before slots had a shape
per kind (``{"keys": ..., "next_expiry": ...}``, one 11-field slot shape for
every kind) are still read, and stored anew in today's form once an event
changes them.

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
from rapport.core.conditions.slots import (
    ACCEPTORS,
    KINDS,
    SKIP,
    CountSlot,
    ExtremeSlot,
    FirstSlot,
    LastSlot,
    LegacySlot,
    Slot,
    SlotKind,
    SumSlot,
)
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


Series = Any
"""One key's events: a tuple of slots (``slots.Slot``) ordered by time, oldest
first; for ``distinct_count``, a dict of each value to the time it was last seen."""


class AggregateState(msgspec.Struct, array_like=True, gc=False):
    """One profile's state for one aggregate. Treated as immutable.

    Stored as the JSON array ``[next_expiry, {key: series}]``, a series being
    an array of slots of the aggregate's kind (``slots.KINDS``) or, for
    ``distinct_count``, an object of values to times: written with any
    msgspec encoder, read with ``Aggregator.decode``, which knows the kind
    (and also reads the earlier form, ``_LegacyState``).

    States, their series and slots are many small objects made and dropped
    for every event; they hold only values from events, never a reference
    back, so they can stay out of the garbage collector (``gc=False``), as
    the model's structs do.
    """

    next_expiry: int | None = None
    """When the oldest slot ages out (microseconds), exactly; ``None`` if nothing can."""
    keys: dict[str, Series] = {}


class _LegacySeries(msgspec.Struct, array_like=True, gc=False):
    slots: tuple[LegacySlot, ...] = ()
    seen: dict[str, int] = {}


class _LegacyState(msgspec.Struct, kw_only=True, gc=False):
    """How states were stored before per-kind slots: ``{"keys": {key: [slots, seen]},
    "next_expiry": ...}`` with 11-field slots. Read, and written anew once changed."""

    keys: dict[str, _LegacySeries] = {}
    next_expiry: int | None = None


class _CountState(AggregateState, array_like=True, gc=False):
    keys: dict[str, tuple[CountSlot, ...]] = {}


class _SumState(AggregateState, array_like=True, gc=False):
    keys: dict[str, tuple[SumSlot, ...]] = {}


class _ExtremeState(AggregateState, array_like=True, gc=False):
    keys: dict[str, tuple[ExtremeSlot, ...]] = {}


class _FirstState(AggregateState, array_like=True, gc=False):
    keys: dict[str, tuple[FirstSlot, ...]] = {}


class _LastState(AggregateState, array_like=True, gc=False):
    keys: dict[str, tuple[LastSlot, ...]] = {}


class _DistinctState(AggregateState, array_like=True, gc=False):
    keys: dict[str, dict[str, int]] = {}


_STATES: dict[str, type[AggregateState]] = {
    "count": _CountState,
    "sum": _SumState,
    "min": _ExtremeState,
    "max": _ExtremeState,
    "first": _FirstState,
    "last": _LastState,
    "distinct_count": _DistinctState,
}
"""Each kind's states: the same fields, typed for decoding (``Aggregator.decode``).

An aggregator makes all its states of its kind's class (states of different
classes never compare equal): decoding straight into it saves building a
state from what was decoded."""
_DECODERS = {kind: msgspec.json.Decoder(state).decode for kind, state in _STATES.items()}
_decode_legacy = msgspec.json.Decoder(_LegacyState).decode
_encode = msgspec.json.Encoder().encode


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

    __slots__ = (
        "_accept",
        "_decode",
        "_earliest",
        "_empty",
        "_event",
        "_index",
        "_key",
        "_newest",
        "_of",
        "_slots",
        "_state",
        "_test",
        "distinct",
        "grain",
        "keyed",
        "kind",
        "spec",
        "window",
    )

    spec: AggregateSpec
    kind: AggregateKind
    window: int | None
    grain: int | None
    """Slot width in microseconds; ``None`` for all-time aggregates (one slot)."""
    keyed: bool
    distinct: bool
    """Whether this is a ``distinct_count`` (series of values seen, not slots)."""
    _accept: Callable[[Any], Any] | None
    """``None`` when any value is taken as it is (``count``, which ignores it)."""
    _event: str
    _test: Callable[[Event], bool] | None
    """The ``where`` filters, all as one call; ``None`` without filters."""
    _of: Callable[[Event], Any] | None
    _key: Callable[[Event], Any] | None
    _slots: SlotKind | None
    _state: type[AggregateState]
    _decode: Callable[[Any], AggregateState]
    _empty: AggregateState
    _earliest: Callable[[Series], int]
    _newest: Callable[[Series], int]
    _index: Callable[[Slot], int]
    """The stretch of time a slot covers: ``at // grain`` (``0`` for all time)."""

    def __init__(self, spec: AggregateSpec) -> None:
        self.spec = spec
        self.kind = spec.aggregate
        self.window = spec.window_us
        self.keyed = spec.key is not None
        self.distinct = spec.aggregate == "distinct_count"
        grain: int | None = None
        if spec.window_us is not None:
            grain = spec.resolution_us or max(1, spec.window_us // SLOTS_PER_WINDOW)
        self.grain = grain
        self._index = _all_time if grain is None else _by_grain(grain)
        self._accept = None if spec.aggregate == "count" else ACCEPTORS[spec.aggregate]
        self._event = spec.event
        self._test = _all_of(_filters(spec.where))
        self._of = event_field(spec.of) if spec.of is not None else None
        self._key = event_field(spec.key) if spec.key is not None else None
        self._slots = KINDS.get(spec.aggregate)
        self._state = _STATES[spec.aggregate]
        self._decode = _DECODERS[spec.aggregate]
        self._empty = self._state()
        if self.distinct:
            self._earliest, self._newest = _earliest_seen, _newest_seen
        else:
            self._earliest, self._newest = _earliest_slot, _newest_slot

    def empty(self) -> AggregateState:
        """The state of no events (one shared object: states are never changed in place)."""
        return self._empty

    # -- storage ------------------------------------------------------------

    def decode(self, stored: bytes | msgspec.Raw) -> AggregateState:
        """A state from its stored JSON (``encode``), or from the earlier form."""
        try:
            return self._decode(stored)
        except msgspec.ValidationError:  # an object, not an array: stored before
            return self._from_legacy(_decode_legacy(stored))

    def encode(self, state: AggregateState) -> bytes:
        """The state as stored (any msgspec JSON encoder writes the same)."""
        return _encode(state)

    def _from_legacy(self, old: _LegacyState) -> AggregateState:
        kind = self._slots
        if kind is None:
            keys: dict[str, Series] = {key: series.seen for key, series in old.keys.items()}
        else:
            convert = kind.from_legacy
            keys = {
                key: tuple([convert(slot) for slot in series.slots])
                for key, series in old.keys.items()
            }
        return self._state(old.next_expiry, keys)

    # -- events -------------------------------------------------------------

    def matches(self, event: Event) -> bool:
        if event.event != self._event:
            return False
        test = self._test
        return test is None or test(event)

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
        of = self._of
        value = None if of is None else of(event)
        key = None
        if self._key is not None:
            found = self._key(event)
            # Most keys are texts already: spare them the call.
            key = found if type(found) is str else key_text(found)
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
        accept = self._accept
        if accept is not None:
            value = accept(value)
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
            newest = self._newest
            stalest = min(keys, key=lambda k: (newest(keys[k]), k))
            if newest(keys[stalest]) > at:
                return state
            del keys[stalest]
            evicted = True
        kind = self._slots
        grain = self.grain
        if kind is not None and series and grain is not None:
            # The usual cases of ``_with_event``, without the call: the event is
            # the newest of its key, in a new slot (surely so if it is a grain
            # or more after the newest slot's event) or in the newest one.
            last = series[-1]
            if at - last.at >= grain or last.at // grain < at // grain:
                updated = (*series, kind.new(at, value))
            elif last.at // grain == at // grain:
                updated = (*series[:-1], kind.merge(last, at, value))
            else:
                updated = self._with_event(series, at, value)
        else:
            updated = self._with_event(series, at, value)
        keys[key] = updated
        next_expiry = state.next_expiry
        if window is not None:
            earliest = self._earliest
            after = (updated[0].at if kind is not None else earliest(updated)) + window
            if next_expiry is None or after < next_expiry:
                next_expiry = self._next_expiry(keys) if evicted else after
            elif evicted or (
                # The key's oldest slot took the event: if it was the oldest of
                # all, another may now be.
                after > next_expiry
                and series is not None
                and earliest(series) + window == next_expiry
            ):
                next_expiry = self._next_expiry(keys)
        return self._state(next_expiry, keys)

    def _with_event(self, series: Series | None, at: int, value: Any) -> Series:
        kind = self._slots
        if kind is None:
            seen: dict[str, int] = dict(series) if series is not None else {}
            if seen.get(value, at - 1) < at:
                seen[value] = at
            if len(seen) > MAX_DISTINCT_VALUES:
                del seen[min(seen, key=lambda v: (seen[v], v))]
            return seen
        if not series:
            return (kind.new(at, value),)
        last = series[-1]
        grain = self.grain
        if grain is None:  # all time: one slot
            return (kind.merge(last, at, value),)
        index = at // grain
        last_index = last.at // grain
        if last_index < index:
            # The usual case: the event is the newest of its key.
            return (*series, kind.new(at, value))
        if last_index == index:
            return (*series[:-1], kind.merge(last, at, value))
        pos = bisect_left(series, index, key=self._index)
        if series[pos].at // grain == index:
            return (*series[:pos], kind.merge(series[pos], at, value), *series[pos + 1 :])
        return (*series[:pos], kind.new(at, value), *series[pos:])

    # -- merging ------------------------------------------------------------

    def merge_micros(self, a: AggregateState, b: AggregateState, now: int) -> AggregateState:
        """The state of the union of the events of ``a`` and ``b``, expired to ``now``.

        When two profiles merge, each kept its own states: the merged person
        viewed the jacket twice as one and once as the other, which is three
        views. Slots of one key and one stretch of time are combined
        (``SlotKind.combine``); the caps on keys and distinct values keep the
        most recent, as ``add_micros`` does.
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
        keys = dict(self.expire_micros(self._state(self._next_expiry(keys), keys), now).keys)
        if len(keys) > MAX_KEYS:
            newest = self._newest
            ranked = sorted(keys, key=lambda k: (newest(keys[k]), k), reverse=True)
            keys = {k: keys[k] for k in ranked[:MAX_KEYS]}
        return self._state(self._next_expiry(keys), keys)

    def _merged_series(self, ours: Series, theirs: Series) -> Series:
        kind = self._slots
        if kind is None:
            seen = dict(ours)
            for value, at in theirs.items():
                if seen.get(value, at - 1) < at:
                    seen[value] = at
            if len(seen) > MAX_DISTINCT_VALUES:
                kept = sorted(seen, key=lambda v: (seen[v], v), reverse=True)
                seen = {v: seen[v] for v in kept[:MAX_DISTINCT_VALUES]}
            return seen
        index = self._index
        by_index = {index(slot): slot for slot in ours}
        for slot in theirs:
            i = index(slot)
            mine = by_index.get(i)
            by_index[i] = slot if mine is None else kind.combine(mine, slot)
        return tuple([by_index[i] for i in sorted(by_index)])

    # -- time ---------------------------------------------------------------

    def expire(self, state: AggregateState, now: datetime) -> AggregateState:
        return self.expire_micros(state, to_micros(now))

    def expire_micros(self, state: AggregateState, now: int) -> AggregateState:
        """``state`` without what aged out by ``now`` (the same object if nothing did)."""
        if state.next_expiry is None or now < state.next_expiry or self.window is None:
            return state
        cutoff = now - self.window
        keys: dict[str, Series] = {}
        for key, series in state.keys.items():
            if self.distinct:
                seen = {v: t for v, t in series.items() if t > cutoff}
                if seen:
                    keys[key] = seen
                continue
            if series[0].at > cutoff:
                keys[key] = series
                continue
            pos = bisect_right(series, cutoff, key=_slot_at)
            if pos < len(series):
                keys[key] = series[pos:]
        return self._state(self._next_expiry(keys), keys)

    def _next_expiry(self, keys: Mapping[str, Series]) -> int | None:
        if self.window is None or not keys:
            return None
        earliest = self._earliest
        return min([earliest(series) for series in keys.values()]) + self.window

    def next_expiry(self, state: AggregateState) -> datetime | None:
        return None if state.next_expiry is None else from_micros(state.next_expiry)

    # -- values -------------------------------------------------------------

    def read(self, state: AggregateState, now: datetime) -> AggregateReading:
        return self.read_micros(state, to_micros(now))

    def read_micros(self, state: AggregateState, now: int) -> AggregateReading:
        """The value per key at ``now``; correct whether or not ``state`` was expired."""
        keys = state.keys
        if not keys:
            return EMPTY_READING
        window = self.window
        values: dict[str, Any] = {}
        kind = self._slots
        if window is None:
            if kind is None:
                for key, seen in keys.items():
                    values[key] = len(seen)
            else:
                reduce = kind.reduce
                for key, series in keys.items():
                    values[key] = reduce(series)
            return AggregateReading(values=values)
        cutoff = now - window
        earliest: int | None = None
        if kind is None:
            for key, seen in keys.items():
                live = [t for t in seen.values() if t > cutoff]
                if live:
                    values[key] = len(live)
                    first_at = min(live)
                    if earliest is None or first_at < earliest:
                        earliest = first_at
        else:
            reducer = None if self.kind == "count" else kind.reduce
            for key, series in keys.items():
                first_at = series[0].at
                if first_at <= cutoff:
                    series = series[bisect_right(series, cutoff, key=_slot_at) :]
                    if not series:
                        continue
                    first_at = series[0].at
                if reducer is None:
                    # Counts, the usual kind, added up here: a call per key
                    # costs more than adding the few slots of most keys.
                    total = 0
                    for slot in series:
                        total += slot.count
                    values[key] = total
                else:
                    values[key] = reducer(series)
                if earliest is None or first_at < earliest:
                    earliest = first_at
        if earliest is None:
            return EMPTY_READING
        return AggregateReading(values=values, next_expiry_us=earliest + window)


def _all_time(slot: Slot) -> int:
    return 0


def _by_grain(grain: int) -> Callable[[Slot], int]:
    def index(slot: Slot) -> int:
        return slot.at // grain

    return index


def _slot_at(slot: Slot) -> int:
    return slot.at


def _earliest_slot(series: Series) -> int:
    at: int = series[0].at
    return at


def _newest_slot(series: Series) -> int:
    at: int = series[-1].at
    return at


def _earliest_seen(series: Series) -> int:
    at: int = min(series.values())
    return at


def _newest_seen(series: Series) -> int:
    at: int = max(series.values())
    return at


def _all_of(tests: tuple[Callable[[Event], bool], ...]) -> Callable[[Event], bool] | None:
    if not tests:
        return None
    if len(tests) == 1:
        return tests[0]

    def every(event: Event) -> bool:
        # A plain loop: all() over a generator costs more than most filters.
        for test in tests:  # noqa: SIM110
            if not test(event):
                return False
        return True

    return every


def _filters(where: list[dict[str, Any]]) -> tuple[Callable[[Event], bool], ...]:
    def one(condition: dict[str, Any]) -> Callable[[Event], bool]:
        read = event_field(condition["field"])
        expected = condition.get("value")
        if condition["op"] == "equals" and type(expected) is str:
            # The usual filter (a category, a campaign), with one call fewer:
            # a text equals only the same text (``comparisons.equality``).
            text: str = expected
            return lambda event: read(event) == text
        test = compile_comparison(condition["op"], expected).test
        if test is None:
            raise ValueError("event filters compare against fixed values only")
        checked: Predicate = test
        return lambda event: checked(read(event))

    return tuple(one(condition) for condition in where)
