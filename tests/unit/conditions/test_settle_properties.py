"""Property tests: ``settle`` never misses an instant at which time changes a value.

``CompiledCondition.settle`` prunes what ``next_change`` reports (a count
that only falls, a part that decides an ``all``/``any`` for good), so timers
are set only where a value can change. Pruning one instant too many would
leave a customer in a segment she no longer matches. Random conditions
(every aggregate kind, keyed or not, with order and equality thresholds,
relative trait times, ``all``/``any``/``not``) over random events are
evaluated at every instant where an input changes (each event ageing out of
each window, each relative-time boundary, one microsecond either side) and
at random instants: wherever the value differs from its value now, that
instant is at or after the instant ``settle`` gave. At that instant the
runtime asks again, so the chain of instants visits every change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from rapport.core.conditions import ProfileContext, compile_condition
from rapport.core.conditions.aggregates import Aggregator
from rapport.core.conditions.instants import from_micros, parse_duration, to_micros
from rapport.core.model import Event, Profile, TraitValue

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW_US = to_micros(NOW)
MINUTE = 60_000_000
WINDOWS = ("10m", "1h")
DURATIONS = ("5m", "30m", "1h")
KINDS = ("count", "distinct_count", "max", "min", "sum")
OPS = ("gt", "gte", "lt", "lte", "equals", "not_equals")


def aggregate_leaf(kind: str, window: str, keyed: bool, op: str, value: int) -> dict[str, Any]:
    node: dict[str, Any] = {"event": "V", "window": window, "op": op, "value": value}
    if kind != "count":
        node.update(aggregate=kind, of="properties.price")
    if keyed:
        node["key"] = "properties.product_id"
    return node


AGGREGATE_LEAVES = st.builds(
    aggregate_leaf,
    st.sampled_from(KINDS),
    st.sampled_from(WINDOWS),
    st.booleans(),
    st.sampled_from(OPS),
    st.integers(min_value=0, max_value=4),
)
TRAIT_TIMES = st.builds(
    lambda op, duration: {
        "trait": "seen_at",
        "op": op,
        "value": {"last": duration} if op == "within" else {"ago": duration},
    },
    st.sampled_from(("within", "before", "after")),
    st.sampled_from(DURATIONS),
)
TIMELESS = st.sampled_from(
    [
        {"trait": "plan", "op": "equals", "value": "gold"},
        {"trait": "plan", "op": "exists"},
    ]
)
LEAVES = st.one_of(AGGREGATE_LEAVES, AGGREGATE_LEAVES, TRAIT_TIMES, TIMELESS)
CONDITIONS = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.builds(lambda parts: {"all": parts}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda parts: {"any": parts}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda inner: {"not": inner}, children),
    ),
    max_leaves=5,
)
# (minutes before now, product, price): views over the last 70 minutes.
EVENTS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=70 * 60).map(lambda s: s * 1_000_000),
        st.sampled_from(["p1", "p2"]),
        st.integers(min_value=-2, max_value=5),
    ),
    max_size=10,
)


def view(before_now: int, product: str, price: int) -> Event:
    at = from_micros(NOW_US - before_now)
    return Event(
        workspace_id="ws",
        message_id=f"v{before_now}{product}",
        type="track",
        event="V",
        timestamp=at,
        received_at=at,
        source="test",
        properties={"product_id": product, "price": price},
    )


@settings(max_examples=600, deadline=None)
@given(
    # Aggregates alone often, so that every kind and operator meets events that age out.
    st.one_of(AGGREGATE_LEAVES, CONDITIONS),
    EVENTS,
    st.one_of(st.none(), st.integers(min_value=-90, max_value=30)),
    st.sampled_from(["gold", "silver", None]),
    st.lists(st.integers(min_value=1, max_value=3 * 60 * MINUTE), max_size=4),
)
# A sum can rise as events age out (a negative amount leaves): no shortcut for sums.
@example(
    aggregate_leaf("sum", "1h", False, "gte", 3),
    [(50 * MINUTE, "p1", -2), (10 * MINUTE, "p1", 4)],
    None,
    None,
    [],
)
# A maximum falls as events age out: "below 2" that is false can become true.
@example(
    aggregate_leaf("max", "1h", True, "lt", 2),
    [(50 * MINUTE, "p1", 3), (10 * MINUTE, "p1", 1)],
    None,
    None,
    [],
)
def test_settle_gives_no_instant_after_a_change(
    tree: dict[str, Any],
    views: list[tuple[int, str, int]],
    seen_minutes: int | None,
    plan: str | None,
    random_later: list[int],
) -> None:
    condition = compile_condition(tree)
    # States as the runtime keeps them: every view fed at its own time, in order.
    aggregators = {
        aggregate_id: Aggregator(spec) for aggregate_id, spec in condition.aggregates.items()
    }
    states = {aggregate_id: aggregator.empty() for aggregate_id, aggregator in aggregators.items()}
    for before_now, product, price in sorted(views, reverse=True):
        event = view(before_now, product, price)
        for aggregate_id, aggregator in aggregators.items():
            at = to_micros(event.timestamp)
            states[aggregate_id] = aggregator.observe_micros(states[aggregate_id], event, at, at)
    traits: dict[str, TraitValue] = {}
    if plan is not None:
        traits["plan"] = TraitValue(value=plan, source="s", observed_at=NOW, received_at=NOW)
    seen_at = None if seen_minutes is None else NOW_US + seen_minutes * MINUTE
    if seen_at is not None:
        iso = from_micros(seen_at).isoformat()
        traits["seen_at"] = TraitValue(value=iso, source="s", observed_at=NOW, received_at=NOW)
    profile = Profile(id="p", workspace_id="ws", created_at=NOW, updated_at=NOW, traits=traits)

    def context(instant: int) -> ProfileContext:
        return ProfileContext(
            profile,
            from_micros(instant),
            read_aggregate=lambda aggregate_id: aggregators[aggregate_id].read_micros(
                states[aggregate_id], instant
            ),
        )

    settle = condition.settle
    if not condition.time_dependent:
        assert settle is None
        return
    assert settle is not None
    value, instant = settle(context(NOW_US), NOW_US)
    assert value == condition.evaluate(context(NOW_US))
    assert instant is None or instant > NOW_US

    # Every instant where an input of the value changes, and next to it.
    critical = {NOW_US + later for later in random_later}
    for before_now, _, _ in views:
        for window in WINDOWS:
            critical.add(NOW_US - before_now + parse_duration(window))
    if seen_at is not None:
        for duration in DURATIONS:
            critical.add(seen_at + parse_duration(duration))
            critical.add(seen_at - parse_duration(duration))
    instants = sorted({c + d for c in critical for d in (-1, 0, 1) if c + d > NOW_US})
    for later in instants:
        if instant is not None and later >= instant:
            break
        assert condition.evaluate(context(later)) == value, (
            f"the value changes at +{later - NOW_US}µs, settle said "
            f"{'never' if instant is None else f'+{instant - NOW_US}µs'}"
        )
