"""Slots: what an aggregate remembers about the events of one key in one stretch of time.

Each aggregate kind keeps only what it needs in a slot of its own shape,
stored as a JSON array of its fields:

- ``count``: ``CountSlot`` ``[at, count]``;
- ``sum``: ``SumSlot`` ``[at, ints, floats, has_float]``;
- ``min`` and ``max``: ``ExtremeSlot`` ``[at, extreme]``;
- ``first``: ``FirstSlot`` ``[at, first_at, first]``;
- ``last``: ``LastSlot`` ``[at, last]``.

``at`` is the time of the slot's newest event. A slot holds the events of
one ``grain``-wide stretch of time (``aggregates.Aggregator.grain``), so
which stretch, ``at // grain``, need not be stored: every event in it has
that quotient, and the newest is one of them (all-time aggregates keep one
slot per key, no grain). For ``last`` the newest
event is the one whose value is kept (the latest, the last to arrive among
ties), so ``at`` is also the time of ``last``.

Each kind is a ``SlotKind``: how to start a slot with one event, take one
more event into a slot, combine two slots of the same stretch (two profiles
merging) and reduce the live slots into a value. ``LegacySlot`` is the one
shape every kind stored before, still read (``SlotKind.from_legacy``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from rapport.core.conditions.fields import key_text

SUM_LIMIT = 2**960
"""Numbers of this magnitude or more are left out of sums: far below the float
range, so no realistic number of events can overflow the exact partial sums."""

SKIP = object()
"""Returned by an acceptor for a value the aggregate does not take."""


class Slot(msgspec.Struct, array_like=True, gc=False):
    """The events of one key that fall into one ``grain``-wide stretch of time.

    Slots are many small objects made and dropped for every event, holding
    only values: they stay out of the garbage collector (``gc=False``).
    """

    at: int
    """Time of the newest event in the slot: the slot ages out at ``at + window``."""


class CountSlot(Slot, array_like=True, gc=False):
    count: int


class SumSlot(Slot, array_like=True, gc=False):
    ints: int
    """The sum of the integer values."""
    floats: tuple[float, ...]
    """Exact partial sums (Shewchuk) of every value as a float.

    A tuple (a JSON array all the same): an empty tuple is one shared object
    where an empty list would be a new one to allocate and collect."""
    has_float: bool


class ExtremeSlot(Slot, array_like=True, gc=False):
    extreme: Any
    """The smallest (``min``) or largest (``max``) value."""


class FirstSlot(Slot, array_like=True, gc=False):
    first_at: int
    first: Any


class LastSlot(Slot, array_like=True, gc=False):
    last: Any
    """The value of the event at ``at`` (the last to arrive of those at ``at``)."""


class LegacySlot(msgspec.Struct, array_like=True, gc=False):
    """The one slot shape of every kind stored before per-kind slots (11 fields)."""

    index: int
    at: int
    count: int = 1
    ints: int = 0
    floats: tuple[float, ...] = ()
    has_float: bool = False
    extreme: Any = None
    first_at: int = 0
    first: Any = None
    last_at: int = 0
    last: Any = None


def _any_value(value: Any) -> Any:
    return None


def _number(value: Any) -> Any:
    kind = type(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return value
    return SKIP


def _summand(value: Any) -> Any:
    number = _number(value)
    return number if number is SKIP or abs(number) < SUM_LIMIT else SKIP


def _present(value: Any) -> Any:
    return SKIP if value is None else value


def _distinct(value: Any) -> Any:
    text = key_text(value)
    return SKIP if text is None else text


ACCEPTORS: dict[str, Callable[[Any], Any]] = {
    "count": _any_value,
    "sum": _summand,
    "min": _number,
    "max": _number,
    "first": _present,
    "last": _present,
    "distinct_count": _distinct,
}


def _exact_add(partials: tuple[float, ...], x: float) -> tuple[float, ...]:
    """Shewchuk's exact summation: non-overlapping partials whose sum is exact."""
    out: list[float] = []
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        high = x + y
        low = y - (high - x)
        if low:
            out.append(low)
        x = high
    out.append(x)
    return tuple(out)


class SlotKind:
    """The slots of one aggregate kind: their shape and the four operations on them."""

    __slots__ = ("combine", "from_legacy", "merge", "new", "reduce", "slot")

    def __init__(
        self,
        slot: type[Slot],
        new: Callable[[int, Any], Slot],
        merge: Callable[[Any, int, Any], Slot],
        combine: Callable[[Any, Any], Slot],
        reduce: Callable[[Sequence[Any]], Any],
        from_legacy: Callable[[LegacySlot], Slot],
    ) -> None:
        self.slot = slot
        self.new = new
        """A slot holding one event at ``at`` of (accepted) value ``value``."""
        self.merge = merge
        """``slot`` with one more event at ``at`` of the same stretch of time."""
        self.combine = combine
        """One slot holding the events of ``a`` and ``b`` (same stretch; two profiles merging).

        Exactly what one slot fed every event of both would hold, but for ties:
        a ``first``/``last`` at the same instant in both keeps ``a``'s."""
        self.reduce = reduce
        """The value over the live slots (at least one), oldest first."""
        self.from_legacy = from_legacy


# -- count --------------------------------------------------------------------


def _count_new(at: int, value: Any) -> CountSlot:
    return CountSlot(at, 1)


def _count_merge(slot: CountSlot, at: int, value: Any) -> CountSlot:
    return CountSlot(at if at > slot.at else slot.at, slot.count + 1)


def _count_combine(a: CountSlot, b: CountSlot) -> CountSlot:
    return CountSlot(max(a.at, b.at), a.count + b.count)


def _count_reduce(slots: Sequence[CountSlot]) -> int:
    # A plain loop: sum() over a generator costs more for the few slots of most keys.
    total = 0
    for slot in slots:
        total += slot.count
    return total


# -- sum ----------------------------------------------------------------------


def _sum_new(at: int, value: Any) -> SumSlot:
    is_float = type(value) is float
    return SumSlot(at, 0 if is_float else value, (float(value),), is_float)


def _sum_merge(slot: SumSlot, at: int, value: Any) -> SumSlot:
    is_float = type(value) is float
    return SumSlot(
        at if at > slot.at else slot.at,
        slot.ints if is_float else slot.ints + value,
        _exact_add(slot.floats, float(value)),
        slot.has_float or is_float,
    )


def _sum_combine(a: SumSlot, b: SumSlot) -> SumSlot:
    floats = a.floats
    for part in b.floats:
        floats = _exact_add(floats, part)
    return SumSlot(max(a.at, b.at), a.ints + b.ints, floats, a.has_float or b.has_float)


def _sum_reduce(slots: Sequence[SumSlot]) -> Any:
    if any(slot.has_float for slot in slots):
        return math.fsum(part for slot in slots for part in slot.floats)
    return sum(slot.ints for slot in slots)


# -- min, max -----------------------------------------------------------------


def _extreme_new(at: int, value: Any) -> ExtremeSlot:
    return ExtremeSlot(at, value)


def _min_merge(slot: ExtremeSlot, at: int, value: Any) -> ExtremeSlot:
    newest = at if at > slot.at else slot.at
    return ExtremeSlot(newest, value if value < slot.extreme else slot.extreme)


def _max_merge(slot: ExtremeSlot, at: int, value: Any) -> ExtremeSlot:
    newest = at if at > slot.at else slot.at
    return ExtremeSlot(newest, value if value > slot.extreme else slot.extreme)


def _min_combine(a: ExtremeSlot, b: ExtremeSlot) -> ExtremeSlot:
    return ExtremeSlot(max(a.at, b.at), min(a.extreme, b.extreme))


def _max_combine(a: ExtremeSlot, b: ExtremeSlot) -> ExtremeSlot:
    return ExtremeSlot(max(a.at, b.at), max(a.extreme, b.extreme))


def _min_reduce(slots: Sequence[ExtremeSlot]) -> Any:
    return min(slot.extreme for slot in slots)


def _max_reduce(slots: Sequence[ExtremeSlot]) -> Any:
    return max(slot.extreme for slot in slots)


def _extreme_from_legacy(old: LegacySlot) -> ExtremeSlot:
    return ExtremeSlot(old.at, old.extreme)


# -- first, last --------------------------------------------------------------


def _first_new(at: int, value: Any) -> FirstSlot:
    return FirstSlot(at, at, value)


def _first_merge(slot: FirstSlot, at: int, value: Any) -> FirstSlot:
    newest = at if at > slot.at else slot.at
    if at < slot.first_at:
        return FirstSlot(newest, at, value)
    return FirstSlot(newest, slot.first_at, slot.first)


def _first_combine(a: FirstSlot, b: FirstSlot) -> FirstSlot:
    earlier = b if b.first_at < a.first_at else a
    return FirstSlot(max(a.at, b.at), earlier.first_at, earlier.first)


def _first_reduce(slots: Sequence[FirstSlot]) -> Any:
    return slots[0].first


def _last_new(at: int, value: Any) -> LastSlot:
    return LastSlot(at, value)


def _last_merge(slot: LastSlot, at: int, value: Any) -> LastSlot:
    # Among events at the same instant, the last to arrive is the last.
    return LastSlot(at, value) if at >= slot.at else slot


def _last_combine(a: LastSlot, b: LastSlot) -> LastSlot:
    return b if b.at > a.at else a


def _last_reduce(slots: Sequence[LastSlot]) -> Any:
    return slots[-1].last


KINDS: dict[str, SlotKind] = {
    "count": SlotKind(
        CountSlot,
        _count_new,
        _count_merge,
        _count_combine,
        _count_reduce,
        lambda old: CountSlot(old.at, old.count),
    ),
    "sum": SlotKind(
        SumSlot,
        _sum_new,
        _sum_merge,
        _sum_combine,
        _sum_reduce,
        lambda old: SumSlot(old.at, old.ints, old.floats, old.has_float),
    ),
    "min": SlotKind(
        ExtremeSlot, _extreme_new, _min_merge, _min_combine, _min_reduce, _extreme_from_legacy
    ),
    "max": SlotKind(
        ExtremeSlot, _extreme_new, _max_merge, _max_combine, _max_reduce, _extreme_from_legacy
    ),
    "first": SlotKind(
        FirstSlot,
        _first_new,
        _first_merge,
        _first_combine,
        _first_reduce,
        lambda old: FirstSlot(old.at, old.first_at, old.first),
    ),
    "last": SlotKind(
        LastSlot,
        _last_new,
        _last_merge,
        _last_combine,
        _last_reduce,
        # ``last_at`` was always ``at``: the newest event is the one kept.
        lambda old: LastSlot(old.at, old.last),
    ),
}
"""The slot kinds by aggregate kind (``distinct_count`` keeps no slots)."""
