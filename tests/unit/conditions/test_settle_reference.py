"""Property test: ``settle`` gives exactly what the plain rules of ``settle`` give.

The compiled ``settle`` takes shortcuts: a windowed aggregate compared with
a fixed value is read once for its value and its next expiry (and its
``not`` is one closure, not a wrapper), an ``all``/``any`` with a single
part that time can change hands the whole to that part once the other
parts leave it undecided, and one of exactly two such parts has its loop
unrolled. Here the same random conditions as ``test_settle_properties``
are settled by a reference built from the rules written out plainly
(each aggregate read for its value, then again for its expiry; every
``all``/``any`` through the general loop over its parts), and both
answers, value and instant, must be equal at now and at later instants;
so must ``evaluate`` at now.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.core.conditions import EvaluationContext, ProfileContext, compile_condition
from rapport.core.conditions.aggregates import Aggregator
from rapport.core.conditions.comparisons import compile_comparison
from rapport.core.conditions.instants import from_micros, to_micros
from rapport.core.model import Profile, TraitValue
from tests.unit.conditions.test_settle_properties import (
    AGGREGATE_LEAVES,
    CONDITIONS,
    EVENTS,
    MINUTE,
    NOW,
    NOW_US,
    view,
)

Evaluate = Callable[[EvaluationContext], bool]
Settle = Callable[[EvaluationContext, int], "tuple[bool, int | None]"]


def reference(node: dict[str, Any]) -> tuple[Evaluate, Settle | None]:
    """``(evaluate, settle)`` of ``node``, by the rules spelled out (see the module)."""
    if "all" in node or "any" in node:
        deciding = "any" in node
        children = [reference(child) for child in node["all" if "all" in node else "any"]]
        tests = [evaluate for evaluate, _ in children]

        def evaluate_parts(context: EvaluationContext) -> bool:
            values = [test(context) for test in tests]
            return any(values) if deciding else all(values)

        if all(settle is None for _, settle in children):
            return evaluate_parts, None
        timeless = [evaluate for evaluate, settle in children if settle is None]
        timed = [settle for _, settle in children if settle is not None]

        def settle_parts(context: EvaluationContext, now: int) -> tuple[bool, int | None]:
            for test in timeless:
                if bool(test(context)) is deciding:
                    return deciding, None
            latest: int | None = None
            earliest: int | None = None
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

        return evaluate_parts, settle_parts
    if "not" in node:
        inner, inner_settle = reference(node["not"])
        if inner_settle is None:
            return (lambda context: not inner(context)), None
        negated_inner: Settle = inner_settle

        def negated(context: EvaluationContext, now: int) -> tuple[bool, int | None]:
            value, instant = negated_inner(context, now)
            return not value, instant

        return (lambda context: not inner(context)), negated
    leaf = compile_condition(node)
    fixed = compile_comparison(node["op"], node.get("value")).test is not None
    if "event" not in node or "window" not in node or not fixed:
        return leaf.evaluate, leaf.settle
    # A windowed aggregate compared with a fixed value: time only removes events.
    aggregate_id = next(iter(leaf.aggregates))
    kind = node.get("aggregate", "count")
    upward = node["op"] in ("gt", "gte")
    downward = node["op"] in ("lt", "lte")
    stays_false = (upward and kind in ("count", "distinct_count", "max")) or (
        downward and kind == "min"
    )
    stays_true = downward and kind in ("count", "distinct_count") and "key" not in node
    evaluate = leaf.evaluate

    def settle(context: EvaluationContext, now: int) -> tuple[bool, int | None]:
        value = bool(evaluate(context))
        if stays_true if value else stays_false:
            return value, None
        return value, context.aggregate(aggregate_id).next_expiry_us

    return evaluate, settle


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(AGGREGATE_LEAVES, CONDITIONS),
    EVENTS,
    st.one_of(st.none(), st.integers(min_value=-90, max_value=30)),
    st.sampled_from(["gold", "silver", None]),
    st.lists(st.integers(min_value=1, max_value=3 * 60 * MINUTE), max_size=3),
)
def test_settle_agrees_with_the_plain_rules(
    tree: dict[str, Any],
    views: list[tuple[int, str, int]],
    seen_minutes: int | None,
    plan: str | None,
    later: list[int],
) -> None:
    condition = compile_condition(tree)
    aggregators = {i: Aggregator(spec) for i, spec in condition.aggregates.items()}
    states = {i: aggregator.empty() for i, aggregator in aggregators.items()}
    for before_now, product, price in sorted(views, reverse=True):
        event = view(before_now, product, price)
        at = to_micros(event.timestamp)
        for i, aggregator in aggregators.items():
            states[i] = aggregator.observe_micros(states[i], event, at, at)
    traits: dict[str, TraitValue] = {}
    if plan is not None:
        traits["plan"] = TraitValue(value=plan, source="s", observed_at=NOW, received_at=NOW)
    if seen_minutes is not None:
        iso = from_micros(NOW_US + seen_minutes * MINUTE).isoformat()
        traits["seen_at"] = TraitValue(value=iso, source="s", observed_at=NOW, received_at=NOW)
    profile = Profile(id="p", workspace_id="ws", created_at=NOW, updated_at=NOW, traits=traits)
    expected_value, expected = reference(tree)
    plain = ProfileContext(
        profile, NOW, read_aggregate=lambda i: aggregators[i].read_micros(states[i], NOW_US)
    )
    assert condition.evaluate(plain) == expected_value(plain)
    if condition.settle is None:
        assert expected is None
        return
    assert expected is not None
    for instant in (NOW_US, *(NOW_US + d for d in later)):
        context = ProfileContext(
            profile,
            from_micros(instant),
            read_aggregate=lambda i, at=instant: aggregators[i].read_micros(states[i], at),
        )
        assert condition.settle(context, instant) == expected(context, instant)
