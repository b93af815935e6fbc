"""Property tests for the shortcuts of streaming evaluation: each gives what the long way gives.

* ``EventDispatch.candidates`` never leaves out an aggregate an event matches;
* the ``Settled`` an evaluation hands to ``next_membership_change`` gives
  the same timer as settling every segment again;
* a trait compared with a list of texts gives what ``comparisons.membership`` gives.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.core.conditions import Aggregator, SnapshotContext, compile_condition
from rapport.core.conditions.aggregates import AggregateSpec
from rapport.core.conditions.comparisons import compile_comparison
from rapport.core.conditions.dispatch import EventDispatch
from rapport.core.model import Event
from rapport.core.profiles import new_profile
from rapport.core.segment_timers import next_membership_change
from rapport.core.segments import (
    SegmentCatalog,
    SegmentDefinition,
    Settled,
    update_memberships,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_ABSENT = object()
"""No value at all (the trait is not set)."""
TEXTS = ("shoes", "bags", "x]", ",0,[],false,null,0,null,0,null]", "")
VALUES: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(TEXTS), st.integers(-3, 3), st.sampled_from([None, True, 2.5, 1e300])
)


def view(at: datetime, properties: dict[str, Any], name: str = "V") -> Event:
    return Event(
        workspace_id="ws",
        message_id=f"m-{at.isoformat()}-{sorted(properties.items(), key=str)}",
        type="track",
        event=name,
        timestamp=at,
        received_at=at,
        source="write_key:test",
        anonymous_id="a",
        properties=properties,
    )


def spec(
    kind: str, where: list[dict[str, Any]], keyed: bool, window: str | None = "1h"
) -> AggregateSpec:
    return AggregateSpec(
        event="V",
        aggregate=kind,  # type: ignore[arg-type]
        where=where,
        of=None if kind == "count" else "properties.v",
        window_us=None if window is None else 3_600_000_000,
        key="properties.k" if keyed else None,
    )


FILTERS = st.lists(
    st.fixed_dictionaries(
        {
            "field": st.sampled_from(["properties.c", "properties.k"]),
            "op": st.sampled_from(["equals", "not_equals", "in"]),
            "value": st.sampled_from(TEXTS),
        }
    ).map(lambda f: {**f, "value": [f["value"]]} if f["op"] == "in" else f),
    max_size=2,
)


@settings(max_examples=200, deadline=None)
@given(
    wheres=st.lists(FILTERS, min_size=1, max_size=6),
    properties=st.dictionaries(st.sampled_from(["c", "k", "v"]), VALUES),
    name=st.sampled_from(["V", "W"]),
)
def test_dispatch_never_leaves_out_a_matching_aggregate(
    wheres: list[list[dict[str, Any]]], properties: dict[str, Any], name: str
) -> None:
    counting = [
        (f"agg{i}", Aggregator(spec("count", where, False))) for i, where in enumerate(wheres)
    ]
    event = view(NOW, properties, name)
    candidates = {aggregate_id for aggregate_id, _ in EventDispatch(counting).candidates(event)}
    matching = {aggregate_id for aggregate_id, a in counting if a.matches(event)}
    assert matching <= candidates


CONDITIONS: tuple[dict[str, Any], ...] = (
    {"event": "V", "window": "1h", "key": "properties.k", "op": "gte", "value": 2},
    {"event": "V", "window": "30m", "op": "lt", "value": 3},
    {
        "event": "V",
        "where": [{"field": "properties.c", "op": "equals", "value": "shoes"}],
        "window": "1h",
        "op": "gte",
        "value": 1,
    },
    {
        "all": [
            {"trait": "plan", "op": "equals", "value": "gold"},
            {
                "event": "V",
                "aggregate": "max",
                "of": "properties.v",
                "window": "1h",
                "op": "gt",
                "value": 1,
            },
        ]
    },
    {
        "not": {
            "event": "V",
            "aggregate": "sum",
            "of": "properties.v",
            "window": "1h",
            "op": "gte",
            "value": 2,
        }
    },
    {"any": [{"in_segment": "s0"}, {"event": "V", "window": "10m", "op": "gte", "value": 2}]},
    {"trait": "seen_at", "op": "within", "value": {"last": "1h"}},
)


def catalog() -> SegmentCatalog:
    return SegmentCatalog(
        SegmentDefinition(
            workspace_id="ws",
            id=f"s{i}",
            name=f"s{i}",
            kind="dynamic",
            condition=condition,
            version=1,
            status="active",
            created_at=NOW,
            updated_at=NOW,
        )
        for i, condition in enumerate(CONDITIONS)
    )


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(1, 1500), st.sampled_from(TEXTS), VALUES, st.booleans()),
        min_size=1,
        max_size=15,
    )
)
def test_settled_hints_give_the_timer_settling_again_gives(
    steps: list[tuple[int, str, Any, bool]],
) -> None:
    cat = catalog()
    profile = new_profile("p1", "ws", NOW)
    now = NOW
    for seconds, text, value, shoes in steps:
        now += timedelta(seconds=seconds)
        properties = {"k": text, "v": value, "c": "shoes" if shoes else text}
        settled: Settled = {}
        profile, _ = update_memberships(cat, profile, profile, view(now, properties), now, settled)
        with_hints = next_membership_change(cat, profile, now, None, settled)
        assert with_hints == next_membership_change(cat, profile, now)


@settings(max_examples=200, deadline=None)
@given(
    options=st.lists(st.sampled_from(TEXTS), max_size=3),
    value=st.one_of(VALUES, st.lists(st.sampled_from(TEXTS), max_size=2), st.just(_ABSENT)),
    negated=st.booleans(),
)
def test_a_trait_among_texts_is_what_the_comparison_says(
    options: list[str], value: Any, negated: bool
) -> None:
    # "plan in [gold, silver]" is compiled without ``comparisons.membership``.
    node: dict[str, Any] = {"trait": "plan", "op": "in", "value": options}
    expected = compile_comparison("in", options).test
    assert expected is not None
    traits = {} if value is _ABSENT else {"plan": value}
    context = SnapshotContext(now=NOW, traits=traits)
    holds = expected(None if value is _ABSENT else value)
    tree = {"not": node} if negated else node
    assert compile_condition(tree).evaluate(context) is (holds is not negated)
