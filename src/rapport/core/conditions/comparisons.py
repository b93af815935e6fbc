"""Comparison operators, compiled once into small closures over one value.

The same operators serve trait comparisons, event property filters
(``where``) and aggregate thresholds. Values compare as JSON values: a
boolean is never a number (``true`` does not equal ``1``), integers and
floats compare numerically (``3`` equals ``3.0``), strings compare exactly
(case-sensitive), and a missing value is the same as ``null``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rapport.core.conditions.instants import IntervalOf, instant_of, moment_test, span_test

EQUALITY_OPS = ("equals", "not_equals")
MEMBERSHIP_OPS = ("in", "not_in")
ORDER_OPS = ("gt", "gte", "lt", "lte")
TIME_OPS = ("before", "after", "within")
OPERATORS: tuple[str, ...] = (
    *EQUALITY_OPS,
    *MEMBERSHIP_OPS,
    "contains",
    *ORDER_OPS,
    "exists",
    *TIME_OPS,
)

Predicate = Callable[[Any], bool]

_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


@dataclass(frozen=True, slots=True)
class Comparison:
    """A compiled ``op``/``value`` pair.

    Exactly one of the two is set: ``test`` for comparisons that do not
    depend on the current time, ``interval_of`` for those against a relative
    time, mapping the compared value's instant to the interval of *now* in
    which the comparison holds.
    """

    test: Predicate | None = None
    interval_of: IntervalOf | None = None


def compile_comparison(op: str, value: Any) -> Comparison:
    """The comparison for an already validated ``op`` and ``value``."""
    if op == "equals":
        return Comparison(test=equality(value))
    if op == "not_equals":
        same = equality(value)
        return Comparison(test=lambda v: not same(v))
    if op == "in":
        return Comparison(test=membership(value))
    if op == "not_in":
        member = membership(value)
        return Comparison(test=lambda v: not member(v))
    if op == "contains":
        return Comparison(test=_contains(value))
    if op in _ORDER:
        compare = _ORDER[op]
        bound = value
        return Comparison(test=lambda v: (type(v) is int or type(v) is float) and compare(v, bound))
    if op == "exists":
        return Comparison(test=lambda v: v is not None)
    if op in ("before", "after"):
        interval_of, relative = moment_test(op, value)
        if relative:
            return Comparison(interval_of=interval_of)

        def fixed(v: Any) -> bool:
            t = instant_of(v)
            return t is not None and interval_of(t) is not None

        return Comparison(test=fixed)
    if op == "within":
        return Comparison(interval_of=span_test(value))
    raise ValueError(f"unknown operator {op!r}")


def json_equal(a: Any, b: Any) -> bool:
    """Equality of two JSON values, where booleans are not numbers."""
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return a is b
    if ta is list and tb is list:
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if ta is dict and tb is dict:
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if ta is tb:
        return bool(a == b)
    return (ta is int or ta is float) and (tb is int or tb is float) and a == b


def equality(expected: Any) -> Predicate:
    """``v equals expected``, specialised by the type of ``expected`` for speed."""
    kind = type(expected)
    if kind is str:
        return lambda v: bool(v == expected)
    if expected is None or kind is bool:
        return lambda v: v is expected
    if kind is int or kind is float:
        return lambda v: (type(v) is int or type(v) is float) and v == expected
    return lambda v: json_equal(v, expected)


def membership(options: list[Any]) -> Predicate:
    """``v in options``: hashable scalars by set lookup, the rest by ``json_equal``."""
    strings = frozenset(o for o in options if type(o) is str)
    numbers = frozenset(o for o in options if type(o) is int or type(o) is float)
    flags = tuple(o for o in options if o is None or type(o) is bool)
    nested = tuple(o for o in options if type(o) is list or type(o) is dict)

    def member(v: Any) -> bool:
        kind = type(v)
        if kind is str:
            return v in strings
        if kind is int or kind is float:
            return v in numbers
        if v is None or kind is bool:
            return any(v is flag for flag in flags)
        return any(json_equal(v, option) for option in nested)

    return member


def _contains(needle: Any) -> Predicate:
    """A string contains a substring; a list contains an element."""
    if type(needle) is str:
        # A string equals only strings, so the built-in list search is exact here.
        def contains_text(v: Any) -> bool:
            kind = type(v)
            return (kind is str or kind is list) and needle in v

        return contains_text

    def contains(v: Any) -> bool:
        return type(v) is list and any(json_equal(element, needle) for element in v)

    return contains
