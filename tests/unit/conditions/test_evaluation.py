"""Compiled conditions: every operator and node type, dependencies and next changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rapport.core.conditions import (
    AggregateReading,
    ProfileContext,
    SnapshotContext,
    compile_condition,
)
from rapport.core.conditions.aggregates import Aggregator
from rapport.core.conditions.instants import to_micros
from rapport.core.model import ConsentValue, Profile, TraitValue

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def holds(node: dict[str, Any], now: datetime = NOW, **context: Any) -> bool:
    return compile_condition(node).evaluate(SnapshotContext(now=now, **context))


def trait_holds(op: str, expected: Any, actual: Any, **more: Any) -> bool:
    node = {"trait": "t", "op": op, **more}
    if op != "exists":
        node["value"] = expected
    traits = {} if actual is _ABSENT else {"t": actual}
    return holds(node, traits=traits)


_ABSENT = object()

CASES: list[tuple[str, Any, Any, bool]] = [
    # op, compared value, trait value, expected
    ("equals", "gold", "gold", True),
    ("equals", "gold", "Gold", False),
    ("equals", "gold", _ABSENT, False),
    ("equals", 3, 3.0, True),
    ("equals", 1, True, False),
    ("equals", True, 1, False),
    ("equals", True, True, True),
    ("equals", None, _ABSENT, True),
    ("equals", None, None, True),
    ("equals", None, 0, False),
    ("equals", "3", 3, False),
    ("equals", [1, "a"], [1, "a"], True),
    ("equals", [1], [True], False),
    ("equals", {"a": 1}, {"a": 1.0}, True),
    ("not_equals", "gold", "silver", True),
    ("not_equals", "gold", "gold", False),
    ("not_equals", "gold", _ABSENT, True),
    ("in", ["gold", "silver", 3, True, None], "silver", True),
    ("in", ["gold", 3], 3.0, True),
    ("in", ["gold", 1], True, False),
    ("in", [True], True, True),
    ("in", [None], _ABSENT, True),
    ("in", [[1, 2]], [1, 2], True),
    ("in", ["gold"], "bronze", False),
    ("in", [], "gold", False),
    ("not_in", ["gold"], "bronze", True),
    ("not_in", ["gold"], "gold", False),
    ("contains", "@example.com", "dana@example.com", True),
    ("contains", "@example.org", "dana@example.com", False),
    ("contains", "vip", ["new", "vip"], True),
    ("contains", 3, [1, 3.0], True),
    ("contains", 1, [True], False),
    ("contains", 3, "a3", False),
    ("contains", "a", _ABSENT, False),
    ("gt", 10, 11, True),
    ("gt", 10, 10, False),
    ("gte", 10, 10, True),
    ("gte", 10, 9.99, False),
    ("lt", 10, 9.5, True),
    ("lt", 10, 10, False),
    ("lte", 10, 10, True),
    ("lte", 10, 11, False),
    ("gt", 0, True, False),
    ("gt", 0, "5", False),
    ("lt", 10, _ABSENT, False),
    ("exists", None, "x", True),
    ("exists", None, 0, True),
    ("exists", None, False, True),
    ("exists", None, None, False),
    ("exists", None, _ABSENT, False),
    ("before", "2026-03-01T00:00:00Z", "2026-02-28T23:59:59Z", True),
    ("before", "2026-03-01T00:00:00Z", "2026-03-01T00:00:00Z", True),
    ("before", "2026-03-01T00:00:00Z", "2026-03-01T01:00:00+02:00", True),
    ("before", "2026-03-01T00:00:00Z", "2026-03-01", True),
    ("before", "2026-03-01T00:00:00Z", "2026-03-02", False),
    ("before", "2026-03-01T00:00:00Z", "not a date", False),
    ("before", "2026-03-01T00:00:00Z", 1_700_000_000, False),
    ("after", "2026-03-01T00:00:00Z", "2026-03-01T00:00:00Z", False),
    ("after", "2026-03-01T00:00:00Z", "2026-03-01T00:00:00.000001Z", True),
    ("after", "2026-03-01T00:00:00Z", datetime(2026, 3, 2, tzinfo=UTC), True),
]


@pytest.mark.parametrize(("op", "expected", "actual", "result"), CASES)
def test_operators(op: str, expected: Any, actual: Any, result: bool) -> None:
    assert trait_holds(op, expected, actual) is result


def test_every_operator_is_covered() -> None:
    from rapport.core.conditions.comparisons import OPERATORS

    assert {case[0] for case in CASES} | {"within"} == set(OPERATORS)


def test_nested_trait_paths() -> None:
    node = {"trait": "address.city", "op": "equals", "value": "Lyon"}
    assert holds(node, traits={"address": {"city": "Lyon"}})
    assert not holds(node, traits={"address": "Lyon"})
    assert not holds(node, traits={})
    assert compile_condition(node).traits == {"address"}


def day(n: float) -> str:
    return (NOW + timedelta(days=n)).isoformat()


RELATIVE: list[tuple[str, Any, float, bool, float | None]] = [
    # op, value, trait time (days from now), holds now, next change (days from now)
    ("within", {"last": "30d"}, -10, True, 20),
    ("within", {"last": "30d"}, -30, False, None),
    ("within", {"last": "30d"}, -31, False, None),
    ("within", {"last": "30d"}, 0, True, 30),
    ("within", {"last": "30d"}, 2, False, 2),  # in the future: enters when it arrives
    ("within", {"next": "2h"}, 1 / 24, True, 1 / 24),
    ("within", {"next": "2h"}, 3 / 24, False, 1 / 24),
    ("within", {"next": "2h"}, 0, False, None),
    ("before", {"ago": "30d"}, -40, True, None),
    ("before", {"ago": "30d"}, -30, True, None),
    ("before", {"ago": "30d"}, -10, False, 20),
    ("after", {"ago": "30d"}, -10, True, 20),
    ("after", {"ago": "30d"}, -30, False, None),
    ("before", {"from_now": "1w"}, 3, True, None),
    ("before", {"from_now": "1w"}, 10, False, 3),
    ("after", {"from_now": "1w"}, 10, True, 3),
    ("after", {"from_now": "1w"}, 7, False, None),
]


@pytest.mark.parametrize(("op", "value", "offset", "result", "change"), RELATIVE)
def test_relative_times(
    op: str, value: Any, offset: float, result: bool, change: float | None
) -> None:
    condition = compile_condition({"trait": "t", "op": op, "value": value})
    context = SnapshotContext(now=NOW, traits={"t": day(offset)})
    assert condition.evaluate(context) is result
    expected = None if change is None else NOW + timedelta(days=change)
    assert condition.next_change(context) == expected
    assert condition.time_dependent
    if expected is not None:  # at the reported instant the value has changed
        later = SnapshotContext(now=expected, traits={"t": day(offset)})
        assert condition.evaluate(later) is not result


def test_time_comparisons_on_values_that_are_not_times() -> None:
    condition = compile_condition({"trait": "t", "op": "within", "value": {"last": "1d"}})
    for value in (None, 17, "soon", ["2026-03-01"]):
        context = SnapshotContext(now=NOW, traits={"t": value})
        assert not condition.evaluate(context)
        assert condition.next_change(context) is None


def test_absolute_times_do_not_depend_on_now() -> None:
    condition = compile_condition({"trait": "t", "op": "before", "value": "2026-01-01T00:00:00Z"})
    assert not condition.time_dependent
    assert condition.next_change(SnapshotContext(now=NOW, traits={"t": day(-100)})) is None


GOLD = {"trait": "plan", "op": "equals", "value": "gold"}
ADULT = {"trait": "age", "op": "gte", "value": 18}
FRENCH = {"trait": "country", "op": "equals", "value": "FR"}


@pytest.mark.parametrize(
    ("node", "traits", "result"),
    [
        ({"all": [GOLD, ADULT]}, {"plan": "gold", "age": 30}, True),
        ({"all": [GOLD, ADULT]}, {"plan": "gold", "age": 3}, False),
        ({"all": [GOLD, ADULT, FRENCH]}, {"plan": "gold", "age": 30, "country": "FR"}, True),
        ({"all": [GOLD, ADULT, FRENCH]}, {"plan": "gold", "age": 30}, False),
        ({"all": [GOLD]}, {"plan": "gold"}, True),
        ({"any": [GOLD, ADULT]}, {"age": 30}, True),
        ({"any": [GOLD, ADULT]}, {"age": 3}, False),
        ({"any": [GOLD, ADULT, FRENCH]}, {"country": "FR"}, True),
        ({"any": [GOLD, ADULT, FRENCH]}, {}, False),
        ({"any": [GOLD]}, {}, False),
        ({"not": GOLD}, {"plan": "silver"}, True),
        ({"not": GOLD}, {"plan": "gold"}, False),
        ({"not": {"any": [GOLD, {"not": ADULT}]}}, {"plan": "silver", "age": 20}, True),
    ],
)
def test_combinators(node: dict[str, Any], traits: dict[str, Any], result: bool) -> None:
    assert holds(node, traits=traits) is result


def test_segment_membership() -> None:
    node = {"in_segment": "vip"}
    assert holds(node, segments={"vip", "new"})
    assert not holds(node, segments={"new"})
    assert compile_condition(node).segments == {"vip"}


@pytest.mark.parametrize(
    ("granted", "state", "result"),
    [
        (True, True, True),
        (True, False, False),
        (True, None, False),
        (False, False, True),
        (False, None, False),
    ],
)
def test_consent(granted: bool, state: bool | None, result: bool) -> None:
    consents = {} if state is None else {"marketing": state}
    assert holds({"consent": "marketing", "granted": granted}, consents=consents) is result


def aggregate_holds(node: dict[str, Any], values: dict[str, Any], now: datetime = NOW) -> bool:
    condition = compile_condition(node)
    ((aggregate_id, _),) = condition.aggregates.items()
    reading = AggregateReading(values=values)
    return condition.evaluate(SnapshotContext(now=now, aggregates={aggregate_id: reading}))


VIEWS = {"event": "Product Viewed", "window": "1h"}


@pytest.mark.parametrize(
    ("node", "values", "result"),
    [
        ({**VIEWS, "op": "gte", "value": 1}, {}, False),
        ({**VIEWS, "op": "lt", "value": 1}, {}, True),  # no events: a count of zero
        ({**VIEWS, "op": "equals", "value": 0}, {}, True),
        ({**VIEWS, "op": "gte", "value": 3}, {"": 3}, True),
        (
            {**VIEWS, "aggregate": "sum", "of": "properties.price", "op": "equals", "value": 0},
            {},
            True,
        ),
        (
            {**VIEWS, "aggregate": "distinct_count", "of": "properties.id", "op": "lt", "value": 1},
            {},
            True,
        ),
        (
            {**VIEWS, "aggregate": "max", "of": "properties.price", "op": "gt", "value": 0},
            {},
            False,
        ),
        ({**VIEWS, "aggregate": "max", "of": "properties.price", "op": "exists"}, {}, False),
        (
            {**VIEWS, "aggregate": "max", "of": "properties.price", "op": "gt", "value": 9},
            {"": 10},
            True,
        ),
        (
            {**VIEWS, "aggregate": "last", "of": "properties.size", "op": "in", "value": ["M"]},
            {"": "M"},
            True,
        ),
        (
            {**VIEWS, "aggregate": "first", "of": "properties.size", "op": "equals", "value": None},
            {},
            True,
        ),
        # keyed: holds when any key's value does
        ({**VIEWS, "key": "properties.id", "op": "gte", "value": 3}, {"a": 1, "b": 3}, True),
        ({**VIEWS, "key": "properties.id", "op": "gte", "value": 3}, {"a": 1, "b": 2}, False),
        ({**VIEWS, "key": "properties.id", "op": "lt", "value": 3}, {}, False),
    ],
)
def test_event_aggregates(node: dict[str, Any], values: dict[str, Any], result: bool) -> None:
    assert aggregate_holds(node, values) is result


def test_aggregate_values_compared_with_relative_times() -> None:
    """ "The last order's delivery date is in the next two days", per key too."""
    node = {
        "event": "Order Completed",
        "aggregate": "last",
        "of": "properties.delivery_date",
        "key": "properties.order_id",
        "window": "30d",
        "op": "within",
        "value": {"next": "2d"},
    }
    condition = compile_condition(node)
    ((aggregate_id, _),) = condition.aggregates.items()
    values = {"o1": day(5), "o2": day(1.5), "o3": "unknown"}
    reading = AggregateReading(values=values, next_expiry_us=to_micros(NOW + timedelta(days=20)))
    context = SnapshotContext(now=NOW, aggregates={aggregate_id: reading})
    assert condition.evaluate(context)
    # o1 enters its two-day span in three days, o2 leaves it in a day and a half: the earlier.
    assert condition.next_change(context) == NOW + timedelta(days=1.5)
    assert not condition.evaluate(
        SnapshotContext(now=NOW, aggregates={aggregate_id: AggregateReading({})})
    )


def test_all_time_aggregates_are_not_time_dependent() -> None:
    condition = compile_condition({"event": "Order Completed", "op": "gte", "value": 1})
    assert not condition.time_dependent
    assert condition.next_change(SnapshotContext(now=NOW)) is None


def test_next_change_of_a_combination_is_the_earliest_of_its_parts() -> None:
    node = {
        "all": [
            {"trait": "signed_up", "op": "within", "value": {"last": "30d"}},
            {"not": {**VIEWS, "op": "gte", "value": 2}},
            {"trait": "plan", "op": "equals", "value": "gold"},
            {"trait": "renewal", "op": "after", "value": {"from_now": "1d"}},
        ]
    }
    condition = compile_condition(node)
    ((aggregate_id, spec),) = condition.aggregates.items()
    aggregator = Aggregator(spec)
    state = aggregator.add(aggregator.empty(), NOW - timedelta(minutes=50), None, None, NOW)
    context = SnapshotContext(
        now=NOW,
        traits={"signed_up": day(-29), "plan": "gold", "renewal": day(3)},
        aggregates={aggregate_id: aggregator.read(state, NOW)},
    )
    assert condition.evaluate(context)
    assert condition.next_change(context) == NOW + timedelta(minutes=10)
    assert condition.traits == {"signed_up", "plan", "renewal"}
    assert condition.events == {"Product Viewed"}


def test_dependencies_of_a_static_condition() -> None:
    condition = compile_condition(
        {"any": [GOLD, {"in_segment": "vip"}, {"consent": "sms", "granted": True}]}
    )
    assert condition.traits == {"plan"}
    assert condition.segments == {"vip"}
    assert condition.consents == {"sms"}
    assert condition.events == frozenset() and not condition.aggregates
    assert not condition.time_dependent
    assert condition.next_change(SnapshotContext(now=NOW)) is None


def test_identical_aggregates_are_shared() -> None:
    condition = compile_condition(
        {
            "any": [
                {**VIEWS, "op": "gte", "value": 3},
                {**VIEWS, "window": "60m", "op": "lt", "value": 1},
            ]
        }
    )
    assert len(condition.aggregates) == 1


def test_profile_context() -> None:
    profile = Profile(
        id="p1",
        workspace_id="ws",
        created_at=NOW,
        updated_at=NOW,
        traits={"plan": TraitValue(value="gold", source="s", observed_at=NOW, received_at=NOW)},
        consent={
            "email": ConsentValue(granted=False, source="s", observed_at=NOW, received_at=NOW)
        },
    )
    condition = compile_condition(
        {
            "all": [
                GOLD,
                {"consent": "email", "granted": False},
                {"not": {"consent": "sms", "granted": False}},
                {"in_segment": "vip"},
                {**VIEWS, "op": "lt", "value": 1},
            ]
        }
    )
    assert condition.evaluate(ProfileContext(profile, NOW, segments={"vip"}))
    assert not condition.evaluate(ProfileContext(profile, NOW))


def test_definitions_are_data_never_code() -> None:
    node = {"trait": "exec('raise SystemExit')", "op": "equals", "value": "x"}
    assert not holds(node, traits={})
    assert holds(node, traits={"exec('raise SystemExit')": "x"})
