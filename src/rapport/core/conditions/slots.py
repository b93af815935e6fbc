"""Slots: what an aggregate remembers about the events of one key in one stretch of time.

Each aggregate kind keeps only what it needs in a slot (a count, exact
partial sums, an extreme, the first and last values) and knows how to take
one more event into a slot and how to combine the live slots into a value.
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


class Slot(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """The events of one key that fall into one resolution-wide stretch of time."""

    index: int
    at: int
    """Time of the newest event in the slot: the slot ages out at ``at + window``."""
    count: int = 1
    ints: int = 0
    floats: tuple[float, ...] = ()
    """Exact partial sums (Shewchuk) of every value as a float.

    A tuple (a JSON array all the same): most slots have none, and an empty
    tuple is one shared object where an empty list would be a new one to
    allocate and collect for every slot decoded."""
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


def new_slot(kind: str, index: int, at: int, value: Any) -> Slot:
    if kind == "sum":
        is_float = type(value) is float
        return Slot(
            index=index,
            at=at,
            ints=0 if is_float else value,
            floats=(float(value),),
            has_float=is_float,
        )
    if kind in ("min", "max"):
        return Slot(index=index, at=at, extreme=value)
    if kind in ("first", "last"):
        return Slot(index=index, at=at, first_at=at, first=value, last_at=at, last=value)
    return Slot(index=index, at=at)


def merge(kind: str, slot: Slot, at: int, value: Any) -> Slot:
    newest = max(slot.at, at)
    count = slot.count + 1
    if kind == "sum":
        is_float = type(value) is float
        return msgspec.structs.replace(
            slot,
            at=newest,
            count=count,
            ints=slot.ints if is_float else slot.ints + value,
            floats=_exact_add(slot.floats, float(value)),
            has_float=slot.has_float or is_float,
        )
    if kind == "min" and value < slot.extreme:
        return msgspec.structs.replace(slot, at=newest, count=count, extreme=value)
    if kind == "max" and value > slot.extreme:
        return msgspec.structs.replace(slot, at=newest, count=count, extreme=value)
    if kind in ("first", "last"):
        first_at, first = (at, value) if at < slot.first_at else (slot.first_at, slot.first)
        last_at, last = (at, value) if at >= slot.last_at else (slot.last_at, slot.last)
        return msgspec.structs.replace(
            slot,
            at=newest,
            count=count,
            first_at=first_at,
            first=first,
            last_at=last_at,
            last=last,
        )
    return msgspec.structs.replace(slot, at=newest, count=count)


def reduce(kind: str, slots: Sequence[Slot]) -> Any:
    if kind == "count":
        return slots[0].count if len(slots) == 1 else sum(slot.count for slot in slots)
    if kind == "sum":
        if any(slot.has_float for slot in slots):
            return math.fsum(part for slot in slots for part in slot.floats)
        return sum(slot.ints for slot in slots)
    if kind == "min":
        return min(slot.extreme for slot in slots)
    if kind == "max":
        return max(slot.extreme for slot in slots)
    if kind == "first":
        return slots[0].first
    return slots[-1].last


def combine(kind: str, a: Slot, b: Slot) -> Slot:
    """One slot holding the events of ``a`` and ``b`` (same index; two profiles merging).

    Exactly what one slot fed every event of both would hold, but for ties:
    a ``first``/``last`` at the same instant in both keeps ``a``'s.
    """
    newest = max(a.at, b.at)
    count = a.count + b.count
    if kind == "sum":
        floats = a.floats
        for part in b.floats:
            floats = _exact_add(floats, part)
        return msgspec.structs.replace(
            a,
            at=newest,
            count=count,
            ints=a.ints + b.ints,
            floats=floats,
            has_float=a.has_float or b.has_float,
        )
    if kind == "min":
        return msgspec.structs.replace(a, at=newest, count=count, extreme=min(a.extreme, b.extreme))
    if kind == "max":
        return msgspec.structs.replace(a, at=newest, count=count, extreme=max(a.extreme, b.extreme))
    if kind in ("first", "last"):
        first_at, first = (
            (b.first_at, b.first) if b.first_at < a.first_at else (a.first_at, a.first)
        )
        last_at, last = (b.last_at, b.last) if b.last_at > a.last_at else (a.last_at, a.last)
        return msgspec.structs.replace(
            a, at=newest, count=count, first_at=first_at, first=first, last_at=last_at, last=last
        )
    return msgspec.structs.replace(a, at=newest, count=count)
