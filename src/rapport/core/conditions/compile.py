"""Compilation of a validated condition tree into plain Python closures.

Nothing from the definition is ever evaluated as code: every node becomes a
closure built from a fixed set of operators. A compiled condition also tells
what it depends on, so the runtime re-evaluates it only when one of those
things changes, and when time alone could next change its value, so a timer
can re-evaluate it at that instant (a window aging out, a date passing).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rapport.core.conditions.aggregates import AggregateSpec, empty_value
from rapport.core.conditions.comparisons import Comparison, compile_comparison
from rapport.core.conditions.context import EvaluationContext
from rapport.core.conditions.fields import walk
from rapport.core.conditions.instants import (
    from_micros,
    holds,
    instant_of,
    next_boundary,
    parse_duration,
    to_micros,
)
from rapport.core.conditions.validate import InvalidCondition, validate_condition

_ORDER: Mapping[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
"""Order comparisons with a number, as ``comparisons.compile_comparison`` makes them."""

Evaluate = Callable[[EvaluationContext], bool]
NextChange = Callable[[EvaluationContext, int], "int | None"]
"""``(context, now in microseconds)`` -> the first later instant at which time alone may
change the value, or ``None`` if it cannot."""
Settle = Callable[[EvaluationContext, int], "tuple[bool, int | None]"]
"""``(context, now in microseconds)`` -> the value at now, and the first later instant at
which time alone may change *that value*, or ``None`` if it cannot (see ``settle``)."""
_Node = tuple[Evaluate, "NextChange | None", "Settle | None"]
"""A compiled node: its test, its ``next_change`` and its ``settle`` (``None``: time
cannot change its value)."""

_NON_INCREASING = frozenset(("count", "distinct_count", "max"))
"""Aggregates whose value per key time alone can only lower (what ages out leaves)."""
_COUNTS = frozenset(("count", "distinct_count"))
"""Aggregates that read 0, a number, over no events (``max`` reads ``null``)."""


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    definition: Any
    evaluate: Evaluate
    """``evaluate(context) -> bool``: the condition's value for one profile at ``context.now``."""
    traits: frozenset[str]
    """Top-level trait names read (``address`` for ``address.city``)."""
    events: frozenset[str]
    """Names of the events whose arrival can change an aggregate it reads."""
    segments: frozenset[str]
    consents: frozenset[str]
    aggregates: Mapping[str, AggregateSpec]
    """The aggregates it reads, by id: the runtime keeps one state per profile for each."""
    time_dependent: bool
    """Whether time passing alone can change the value (windows, relative times)."""
    requirements: Mapping[str, frozenset[str]]
    """Top-level trait -> the texts it must equal for the condition to hold at all.

    From the trait comparisons ``equals`` a text or ``in`` a list of texts
    that the whole condition requires (the condition itself, or a part of
    its ``all``, of an ``all`` in it...): "gold plan in Lyon" requires
    ``{"city": {"Lyon"}}``. A profile whose trait is anything else (another
    text, no value, not a text) cannot match, whatever its events and
    whatever time it is: the runtime need not evaluate it (``SegmentCatalog``).
    """
    next_change_micros: NextChange | None
    settle: Settle | None
    """``settle(context, now)``: the value at ``now`` (microseconds, ``context.now``) and
    when time alone may next change it; ``None`` when not ``time_dependent``.

    Sharper than ``next_change``, which only knows when an input changes:
    ``settle`` also knows which way time moves a value, so it gives no
    instant where the change cannot alter the value (a count only falls as
    events age out: "viewed 3 times" that is false stays false; a part
    that time cannot change decides an ``all``/``any``: a silver customer's
    views ageing out cannot make her a "gold customer who viewed 3 times").
    Still a lower bound: at the instant given, the value may or may not change.
    """

    def next_change(self, context: EvaluationContext) -> datetime | None:
        """The earliest instant after ``context.now`` at which time alone may change the value.

        A lower bound: time alone cannot change the value before this instant,
        and at it the value may change (an aggregate's oldest event ages out,
        a relative time passes), or may not (another key or another branch
        still decides it), so re-evaluate then and ask again. ``None``: only
        an event or a change of trait, segment or consent can change it.
        """
        if self.next_change_micros is None:
            return None
        instant = self.next_change_micros(context, to_micros(context.now))
        return None if instant is None else from_micros(instant)


def compile_condition(tree: Any) -> CompiledCondition:
    """Validate and compile ``tree``; raises ``InvalidCondition`` listing every error."""
    errors = validate_condition(tree)
    if errors:
        raise InvalidCondition(errors)
    compiler = _Compiler()
    evaluate, next_change, settle = compiler.node(tree)
    return CompiledCondition(
        definition=tree,
        evaluate=evaluate,
        traits=frozenset(compiler.traits),
        events=frozenset(compiler.events),
        segments=frozenset(compiler.segments),
        consents=frozenset(compiler.consents),
        aggregates=dict(compiler.aggregates),
        time_dependent=next_change is not None,
        requirements=_requirements(tree),
        next_change_micros=next_change,
        settle=settle,
    )


def _requirements(node: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """``CompiledCondition.requirements`` of a validated node."""
    if "all" in node:
        required: dict[str, frozenset[str]] = {}
        for child in node["all"]:
            for name, texts in _requirements(child).items():
                required[name] = required[name] & texts if name in required else texts
        return required
    trait: Any = node.get("trait")
    if trait is None or "." in trait:
        return {}
    value: Any = node.get("value")
    if node["op"] == "equals" and type(value) is str:
        return {trait: frozenset((value,))}
    if node["op"] == "in" and all(type(option) is str for option in value):
        # Only a text can be among texts (comparisons.membership).
        return {trait: frozenset(value)}
    return {}


def aggregate_spec(node: Mapping[str, Any]) -> AggregateSpec:
    """The aggregate an event node reads (shared by every node aggregating the same thing)."""
    window = node.get("window")
    return AggregateSpec(
        event=node["event"],
        aggregate=node.get("aggregate", "count"),
        where=copy.deepcopy(node.get("where", [])),  # the spec must not change with the tree
        of=node.get("of"),
        window_us=parse_duration(window) if window is not None else None,
        key=node.get("key"),
    )


class _Compiler:
    def __init__(self) -> None:
        self.traits: set[str] = set()
        self.events: set[str] = set()
        self.segments: set[str] = set()
        self.consents: set[str] = set()
        self.aggregates: dict[str, AggregateSpec] = {}

    def node(self, node: dict[str, Any]) -> _Node:
        # Children run cheapest first: they are pure predicates, so the order
        # changes no result, only how often ``all``/``any`` stops before
        # reading an aggregate.
        if "all" in node:
            return _all([self.node(child) for child in sorted(node["all"], key=_cost)])
        if "any" in node:
            return _any([self.node(child) for child in sorted(node["any"], key=_cost)])
        if "not" in node:
            if "event" in node["not"]:
                # "Did not order in 90 days": one closure each, not a wrapper around the event's.
                return self.event(node["not"], negated=True)
            inner, next_change, inner_settle = self.node(node["not"])
            return (lambda context: not inner(context)), next_change, _negated(inner_settle)
        if "trait" in node:
            return self.trait(node)
        if "event" in node:
            return self.event(node)
        if "in_segment" in node:
            segment_id: str = node["in_segment"]
            self.segments.add(segment_id)
            return (lambda context: context.in_segment(segment_id)), None, None
        category: str = node["consent"]
        self.consents.add(category)
        if node["granted"]:
            return (lambda context: context.consent(category) is True), None, None
        return (lambda context: context.consent(category) is False), None, None

    def trait(self, node: dict[str, Any]) -> _Node:
        head, *rest = node["trait"].split(".")
        self.traits.add(head)
        parts = tuple(rest)
        comparison = compile_comparison(node["op"], node.get("value"))
        if comparison.test is not None:
            test = comparison.test
            if parts:
                return (lambda context: test(walk(context.trait(head), parts))), None, None
            expected = node.get("value")
            if node["op"] == "equals" and type(expected) is str:
                # The most common comparison, without the extra call.
                return (lambda context: bool(context.trait(head) == expected)), None, None
            listed: list[Any] = node["value"] if node["op"] == "in" else []
            if listed and all(type(option) is str for option in listed):
                # "Plan in [gold, platinum]": only a text can be among texts
                # (``comparisons.membership``), without the extra call.
                options = frozenset(listed)

                def among(context: EvaluationContext) -> bool:
                    value = context.trait(head)
                    return type(value) is str and value in options

                return among, None, None
            return (lambda context: test(context.trait(head))), None, None

        def read(context: EvaluationContext) -> Any:
            return walk(context.trait(head), parts) if parts else context.trait(head)

        return _timed(read, comparison)

    def event(self, node: dict[str, Any], *, negated: bool = False) -> _Node:
        """An event node, or (``negated``) the ``not`` of one."""
        spec = aggregate_spec(node)
        aggregate_id = spec.id
        self.aggregates[aggregate_id] = spec
        self.events.add(spec.event)
        comparison = compile_comparison(node["op"], node.get("value"))
        empty = empty_value(spec.aggregate)
        keyed = spec.key is not None
        windowed = spec.window_us is not None

        if comparison.test is not None:
            test = comparison.test
            # Whether a key holds / the value holds: the node's value unless negated.
            found = not negated
            if keyed:

                def evaluate(context: EvaluationContext) -> bool:
                    for v in context.aggregate(aggregate_id).values.values():
                        if test(v):  # (a loop: see _all)
                            return found
                    return not found

            elif negated:

                def evaluate(context: EvaluationContext) -> bool:
                    return not test(context.aggregate(aggregate_id).values.get("", empty))

            else:

                def evaluate(context: EvaluationContext) -> bool:
                    return test(context.aggregate(aggregate_id).values.get("", empty))

            if not windowed:
                return evaluate, None, None
            return (
                evaluate,
                lambda context, now: context.aggregate(aggregate_id).next_expiry_us,
                _aggregate_settle(
                    test, aggregate_id, spec, node["op"], node.get("value"), negated=negated
                ),
            )
        if negated:
            inner, inner_next, inner_settle = self.event(node)
            return (lambda context: not inner(context)), inner_next, _negated(inner_settle)

        interval_of = comparison.interval_of
        assert interval_of is not None
        # An aggregate over no events has no time to compare (``null`` or a
        # number), so keyed or not, only the keys present can hold.

        def values(context: EvaluationContext) -> Iterable[Any]:
            return context.aggregate(aggregate_id).values.values()

        def evaluate_timed(context: EvaluationContext) -> bool:
            now = to_micros(context.now)
            for value in values(context):
                instant = instant_of(value)
                if instant is not None:
                    interval = interval_of(instant)
                    if interval is not None and holds(interval, now):
                        return True
            return False

        def next_change(context: EvaluationContext, now: int) -> int | None:
            earliest = context.aggregate(aggregate_id).next_expiry_us if windowed else None
            for value in values(context):
                instant = instant_of(value)
                interval = None if instant is None else interval_of(instant)
                if interval is not None:
                    earliest = _earlier(earliest, next_boundary(interval, now))
            return earliest

        def settle(context: EvaluationContext, now: int) -> tuple[bool, int | None]:
            # Times compared with a relative time move both ways: no shortcut.
            return evaluate_timed(context), next_change(context, now)

        return evaluate_timed, next_change, settle


def _cost(node: Mapping[str, Any]) -> int:
    """A rough relative cost of evaluating ``node``, to order the children of ``all``/``any``.

    Reading a trait, a consent or a membership is a dict lookup; a relative
    time parses an instant; an aggregate may have to be reduced over every key.
    """
    if "all" in node:
        return sum(_cost(child) for child in node["all"])
    if "any" in node:
        return sum(_cost(child) for child in node["any"])
    if "not" in node:
        return _cost(node["not"])
    if "event" in node:
        return 10
    if "trait" in node:
        return 1 if compile_comparison(node["op"], node.get("value")).test is None else 0
    return 0


def _aggregate_settle(
    test: Callable[[Any], bool],
    aggregate_id: str,
    spec: AggregateSpec,
    op: str,
    bound: Any,
    *,
    negated: bool = False,
) -> Settle:
    """``settle`` of a windowed aggregate compared with a fixed value (``test``), or of its
    ``not`` (``negated``).

    Time only removes events from a window, so it moves some aggregates one
    way: a count (or distinct count, or maximum) per key can only fall, a
    minimum only rise, and a key with no event left disappears (a count
    without ``key`` reads 0 then; ``min``/``max`` read ``null``, which no
    order comparison accepts). So "at least 3" that is false now stays
    false (for every key), "at most 3" without ``key`` that is true stays
    true, and the next expiry is when the value may change otherwise.

    The value is the node's ``evaluate`` over one reading of the aggregate,
    which also gives the next expiry: read once, not once for each. Answers
    time cannot change are made once (``decided_*``). ``bound``: the node's
    ``value``, what an order comparison compares with.
    """
    upward = op in ("gt", "gte")
    downward = op in ("lt", "lte")
    kind = spec.aggregate
    stays_false = (upward and kind in _NON_INCREASING) or (downward and kind == "min")
    stays_true = downward and kind in _COUNTS and spec.key is None
    # The node's value when the comparison holds (for some key) and when it does not,
    # and that answer for good when time cannot change it.
    holds_value = not negated
    fails_value = negated
    decided_holds = (holds_value, None) if stays_true else None
    decided_fails = (fails_value, None) if stays_false else None

    if spec.key is not None:

        def settle_keyed(context: EvaluationContext, now: int) -> tuple[bool, int | None]:
            reading = context.aggregate(aggregate_id)
            for v in reading.values.values():
                if test(v):
                    # Never for good: another key may hold later, this one may not.
                    return holds_value, reading.next_expiry_us
            return decided_fails or (fails_value, reading.next_expiry_us)

        return settle_keyed

    empty = empty_value(kind)
    compare = _ORDER.get(op)
    if compare is not None and decided_holds is None:
        # "At least 8 views", the most common shape: the comparison inlined (the
        # same test as ``comparisons.compile_comparison``'s); holding is never
        # for good here (``decided_holds`` is only for "at most" counts).

        def settle_order(context: EvaluationContext, now: int) -> tuple[bool, int | None]:
            reading = context.aggregate(aggregate_id)
            v = reading.values.get("", empty)
            if (type(v) is int or type(v) is float) and compare(v, bound):
                return holds_value, reading.next_expiry_us
            return decided_fails or (fails_value, reading.next_expiry_us)

        return settle_order

    def settle(context: EvaluationContext, now: int) -> tuple[bool, int | None]:
        reading = context.aggregate(aggregate_id)
        if test(reading.values.get("", empty)):
            return decided_holds or (holds_value, reading.next_expiry_us)
        return decided_fails or (fails_value, reading.next_expiry_us)

    return settle


def _negated(settle: Settle | None) -> Settle | None:
    if settle is None:
        return None

    def negated(context: EvaluationContext, now: int) -> tuple[bool, int | None]:
        value, instant = settle(context, now)
        return not value, instant

    return negated


def _timed(
    read: Callable[[EvaluationContext], Any], comparison: Comparison
) -> tuple[Evaluate, NextChange, Settle]:
    """A comparison of one value against a relative time."""
    interval_of = comparison.interval_of
    assert interval_of is not None

    def evaluate(context: EvaluationContext) -> bool:
        instant = instant_of(read(context))
        if instant is None:
            return False
        interval = interval_of(instant)
        return interval is not None and holds(interval, to_micros(context.now))

    def next_change(context: EvaluationContext, now: int) -> int | None:
        instant = instant_of(read(context))
        interval = None if instant is None else interval_of(instant)
        return None if interval is None else next_boundary(interval, now)

    def settle(context: EvaluationContext, now: int) -> tuple[bool, int | None]:
        instant = instant_of(read(context))
        interval = None if instant is None else interval_of(instant)
        if interval is None:
            return False, None
        return holds(interval, now), next_boundary(interval, now)

    return evaluate, next_change, settle


def _earlier(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _merged_next_change(parts: list[NextChange]) -> NextChange | None:
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]

    def next_change(context: EvaluationContext, now: int) -> int | None:
        earliest: int | None = None
        for part in parts:
            earliest = _earlier(earliest, part(context, now))
        return earliest

    return next_change


def _all(children: list[_Node]) -> _Node:
    tests = tuple(evaluate for evaluate, _, _ in children)
    next_change = _merged_next_change([n for _, n, _ in children if n is not None])
    settle = _settle_all(children, deciding=False)
    if len(tests) == 1:
        return tests[0], next_change, settle
    if len(tests) == 2:
        first, second = tests
        return (lambda context: first(context) and second(context)), next_change, settle

    def evaluate(context: EvaluationContext) -> bool:
        # A plain loop: all() over a generator costs more than the tests themselves.
        for test in tests:  # noqa: SIM110
            if not test(context):
                return False
        return True

    return evaluate, next_change, settle


def _any(children: list[_Node]) -> _Node:
    tests = tuple(evaluate for evaluate, _, _ in children)
    next_change = _merged_next_change([n for _, n, _ in children if n is not None])
    settle = _settle_all(children, deciding=True)
    if len(tests) == 1:
        return tests[0], next_change, settle
    if len(tests) == 2:
        first, second = tests
        return (lambda context: first(context) or second(context)), next_change, settle

    def evaluate(context: EvaluationContext) -> bool:
        for test in tests:  # noqa: SIM110 (see _all)
            if test(context):
                return True
        return False

    return evaluate, next_change, settle


def _settle_all(children: list[_Node], *, deciding: bool) -> Settle | None:
    """``settle`` of an ``all`` (``deciding`` False) or an ``any`` (``deciding`` True).

    A part whose value is ``deciding`` (false in an ``all``, true in an
    ``any``) and that time cannot change decides the whole for good: no
    instant. Otherwise, while the whole has the deciding value, it keeps it
    until *every* part having that value changes (the latest of their
    instants); with the other value, until *any* part changes (the earliest).
    Parts that time cannot change are tested first (``_cost`` already puts
    them first: they read no aggregate).
    """
    if all(settle is None for _, _, settle in children):
        return None
    timeless = tuple(evaluate for evaluate, _, settle in children if settle is None)
    timed = tuple(settle for _, _, settle in children if settle is not None)
    decided = (deciding, None)
    """The answer once a part that time cannot change has the deciding value."""
    if len(timed) == 1:
        # One part that time can change ("viewed 3 times" and "lives in Lyon"): when
        # the others leave the whole to it, the whole is that part, value and
        # instant (every ``settle`` gives a ``bool``: see the loop below).
        only = timed[0]
        if not timeless:
            return only
        if len(timeless) == 1:
            (condition,) = timeless

            def settle_after_one(context: EvaluationContext, now: int) -> tuple[bool, int | None]:
                if bool(condition(context)) is deciding:
                    return decided
                return only(context, now)

            return settle_after_one

        def settle_one(context: EvaluationContext, now: int) -> tuple[bool, int | None]:
            for test in timeless:
                if bool(test(context)) is deciding:
                    return decided
            return only(context, now)

        return settle_one
    if len(timed) == 2 and not timeless:
        # "Did not order in 90 days and viewed 8 times today": the loop below, unrolled.
        first, second = timed

        def settle_two(context: EvaluationContext, now: int) -> tuple[bool, int | None]:
            value, instant = first(context, now)
            if value is deciding:
                if instant is None:
                    return decided
                other, later = second(context, now)
                if other is deciding:
                    if later is None:
                        return decided
                    return deciding, later if later > instant else instant
                return deciding, instant
            other, later = second(context, now)
            if other is deciding:
                return deciding, later
            if instant is None or (later is not None and later < instant):
                return not deciding, later
            return not deciding, instant

        return settle_two

    def settle(context: EvaluationContext, now: int) -> tuple[bool, int | None]:
        for test in timeless:
            if bool(test(context)) is deciding:
                return decided
        latest: int | None = None
        """The latest instant of the parts having the deciding value, if any has it."""
        earliest: int | None = None
        """The earliest instant of the others."""
        for part in timed:
            value, instant = part(context, now)
            if value is deciding:
                if instant is None:
                    return deciding, None
                if latest is None or instant > latest:
                    latest = instant
            elif instant is not None and (earliest is None or instant < earliest):
                earliest = instant
        if latest is not None:
            return deciding, latest
        return not deciding, earliest

    return settle
