"""Incremental event aggregates: windows, late events, keys, values, bounds, storage."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.core.conditions import aggregates as aggregates_module
from rapport.core.conditions.aggregates import (
    SLOTS_PER_WINDOW,
    AggregateSpec,
    AggregateState,
    Aggregator,
)
from rapport.core.conditions.compile import aggregate_spec
from rapport.core.conditions.instants import to_micros
from rapport.core.model import Event

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = 3_600_000_000


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def aggregator(kind: str = "count", window: str | None = "1h", **more: Any) -> Aggregator:
    node: dict[str, Any] = {"event": "Product Viewed", "aggregate": kind, **more}
    if kind != "count":
        node.setdefault("of", "properties.price")
    if window is not None:
        node["window"] = window
    return Aggregator(aggregate_spec(node))


def event(name: str = "Product Viewed", at: datetime = T0, **properties: Any) -> Event:
    return Event(
        workspace_id="ws",
        message_id=f"m-{at.isoformat()}-{sorted(properties.items())}",
        type="track",
        timestamp=at,
        received_at=at,
        source="test",
        event=name,
        properties=properties,
    )


def value(agg: Aggregator, state: AggregateState, now: datetime, key: str = "") -> Any:
    return agg.read(state, now).values.get(key)


def test_count_over_a_sliding_window() -> None:
    agg = aggregator()
    state = agg.empty()
    for n in (0, 10, 20):
        state = agg.add(state, minutes(n), None, None, minutes(n))
    assert value(agg, state, minutes(20)) == 3
    assert agg.next_expiry(state) == minutes(60)
    assert value(agg, state, minutes(60) - timedelta(microseconds=1)) == 3
    assert value(agg, state, minutes(60)) == 2  # an event exactly one window old is out
    state = agg.expire(state, minutes(75))
    assert value(agg, state, minutes(75)) == 1
    assert agg.next_expiry(state) == minutes(80)
    state = agg.expire(state, minutes(80))
    assert state.keys == {}
    assert agg.next_expiry(state) is None
    assert agg.read(state, minutes(80)).values == {}


def test_late_events_inside_the_window_count_and_older_ones_do_not() -> None:
    agg = aggregator()
    now = minutes(90)
    state = agg.add(agg.empty(), minutes(80), None, None, now)
    state = agg.add(state, minutes(31), None, None, now)  # late, still inside
    state = agg.add(state, minutes(30), None, None, now)  # exactly one window old: out
    state = agg.add(state, minutes(5), None, None, now)  # long gone
    assert value(agg, state, now) == 2
    assert agg.next_expiry(state) == minutes(91)


def test_events_stamped_in_the_future_count_now() -> None:
    agg = aggregator()
    state = agg.add(agg.empty(), minutes(5), None, None, minutes(0))
    assert value(agg, state, minutes(0)) == 1
    assert agg.next_expiry(state) == minutes(65)


def test_expire_returns_the_same_state_when_nothing_is_due() -> None:
    agg = aggregator()
    state = agg.add(agg.empty(), T0, None, None, T0)
    assert agg.expire(state, minutes(59)) is state


def test_all_time_aggregates_never_expire_and_keep_one_slot() -> None:
    agg = aggregator("sum", window=None)
    state = agg.empty()
    for n in range(500):
        state = agg.add(state, minutes(n * 7), n, None, minutes(n * 7))
    assert value(agg, state, minutes(10**6)) == sum(range(500))
    assert agg.next_expiry(state) is None
    assert len(state.keys[""]) == 1  # one slot


def test_memory_per_key_is_bounded_by_the_resolution() -> None:
    agg = aggregator()
    state = agg.empty()
    step = timedelta(milliseconds=250)  # four events per one-second slot
    now = T0
    for _ in range(20_000):
        now += step
        state = agg.add(state, now, None, None, now)
    assert len(state.keys[""]) <= SLOTS_PER_WINDOW + 1  # slots
    exact = 4 * SLOTS_PER_WINDOW  # events newer than one hour
    # The oldest live slot may still hold up to three events just past the hour.
    assert exact <= value(agg, state, now) <= exact + 3


def test_events_in_one_slot_age_out_with_the_newest_of_them() -> None:
    """The documented precision trade-off: one-second slots for a one-hour window."""
    agg = aggregator()
    first, second = T0 + timedelta(milliseconds=100), T0 + timedelta(milliseconds=900)
    state = agg.add(agg.empty(), first, None, None, second)
    state = agg.add(state, second, None, None, second)
    assert agg.next_expiry(state) == second + timedelta(hours=1)
    assert value(agg, state, first + timedelta(hours=1)) == 2  # kept, never dropped early
    assert value(agg, state, second + timedelta(hours=1)) is None


def test_keys_group_events_and_compare_as_text() -> None:
    agg = aggregator(key="properties.product_id")
    state = agg.empty()
    for product in (42, "42", 42.0, "jacket", None, {"id": 1}):
        state = agg.observe(state, event(product_id=product), T0)
    assert agg.read(state, T0).values == {"42": 3, "jacket": 1}


def test_observe_filters_by_name_and_where() -> None:
    agg = aggregator(
        "sum",
        where=[
            {"field": "properties.category", "op": "in", "value": ["coats", "jackets"]},
            {"field": "context.page.path", "op": "contains", "value": "/shop"},
        ],
    )
    shop = {"page": {"path": "/shop/coats"}}
    cases = [
        (event(price=10, category="coats"), True),
        (event(price=20, category="shoes"), False),
        (event("Order Completed", price=30, category="coats"), False),
        (event(price=40, category="jackets"), True),
    ]
    state = agg.empty()
    for case, _ in cases:
        state = agg.observe(state, msgspec.structs.replace(case, context=shop), T0)
    state = agg.observe(state, event(price=50, category="coats"), T0)  # no page path
    assert value(agg, state, T0) == 50
    assert [agg.matches(msgspec.structs.replace(c, context=shop)) for c, _ in cases] == [
        expected for _, expected in cases
    ]


def test_sum_min_max_take_numbers_only() -> None:
    for kind, expected in (("sum", 4.5), ("min", -1), ("max", 5.5)):
        agg = aggregator(kind)
        state = agg.empty()
        for price in (5.5, True, "7", None, -1, [1]):
            state = agg.add(state, T0, price, None, T0)
        assert value(agg, state, T0) == expected, kind


def test_sum_is_an_integer_until_a_float_arrives() -> None:
    agg = aggregator("sum")
    state = agg.add(agg.empty(), T0, 2**60, None, T0)
    state = agg.add(state, T0, 1, None, T0)
    total = value(agg, state, T0)
    assert total == 2**60 + 1 and type(total) is int
    state = agg.add(state, T0, 0.5, None, T0)
    assert value(agg, state, T0) == math.fsum([2**60, 1, 0.5])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.1, 0.2, 0.3, 1e16, -1e16, 1.0, 3e-16, -2.5, 7, 1e280, -1e280]),
            st.integers(min_value=0, max_value=5),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_sums_are_correctly_rounded_whatever_the_order(events: list[tuple[float, int]]) -> None:
    """Many values per slot (six instants), then some age out: always math.fsum of the rest."""
    spec = AggregateSpec(
        event="E", aggregate="sum", of="properties.v", window_us=4, resolution_us=1
    )
    agg = Aggregator(spec)
    state = agg.empty()
    for number, at in events:
        state = agg.add_micros(state, at, number, None, 0)
    for now in range(10):
        state = agg.expire_micros(state, now)
        live = [number for number, at in events if at > now - 4]
        assert agg.read_micros(state, now).values.get("", 0) == (math.fsum(live) if live else 0)


def test_first_and_last_follow_event_time_then_arrival() -> None:
    for kind, expected in (("first", "early"), ("last", "late")):
        agg = aggregator(kind)
        state = agg.empty()
        for price, at in (("middle", 10), ("late", 20), ("early", 1), ("tie-early", 1), (None, 30)):
            state = agg.add(state, minutes(at), price, None, minutes(30))
        assert value(agg, state, minutes(30)) == expected, kind


def test_distinct_count_ages_out_by_last_sighting() -> None:
    agg = aggregator("distinct_count", of="properties.product_id")
    state = agg.empty()
    for product, at in (("a", 0), ("b", 10), ("a", 30), (1, 40), ("1", 45), (None, 50)):
        state = agg.add(state, minutes(at), product, None, minutes(at))
    assert value(agg, state, minutes(50)) == 3  # a, b, 1
    assert agg.next_expiry(state) == minutes(70)  # b; a was seen again at 30
    assert value(agg, state, minutes(70)) == 2
    assert value(agg, state, minutes(90)) == 1


def test_distinct_count_saturates_at_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aggregates_module, "MAX_DISTINCT_VALUES", 3)
    agg = aggregator("distinct_count", of="properties.product_id")
    state = agg.empty()
    for n in range(6):
        state = agg.add(state, minutes(n), f"p{n}", None, minutes(n))
    assert sorted(state.keys[""]) == ["p3", "p4", "p5"]  # the most recently seen
    assert value(agg, state, minutes(5)) == 3
    assert value(agg, state, minutes(63) + timedelta(seconds=1)) == 2


def test_only_the_most_recently_active_keys_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aggregates_module, "MAX_KEYS", 2)
    agg = aggregator(key="properties.product_id")
    state = agg.empty()
    now = minutes(30)
    for product, at in (("a", 1), ("b", 5), ("c", 3), ("d", 0)):
        state = agg.add(state, minutes(at), None, product, now)
    assert agg.read(state, now).values == {"b": 1, "c": 1}  # d is older than both
    assert agg.next_expiry(state) == minutes(63)


def test_state_round_trips_through_storage() -> None:
    agg = aggregator("sum", key="properties.product_id")
    state = agg.empty()
    for n, product in enumerate(("a", "b", "a")):
        state = agg.add(state, minutes(n), n + 0.5, product, minutes(n))
    for encoded in (agg.encode(state), msgspec.json.encode(state)):
        stored = agg.decode(encoded)
        assert stored == state
        assert agg.read(stored, minutes(3)) == agg.read(state, minutes(3))


def test_spec_ids_identify_what_is_aggregated() -> None:
    base = {"event": "Product Viewed", "window": "1h", "key": "properties.product_id"}
    same = aggregate_spec({**base, "window": "60m"})
    assert aggregate_spec(base).id == same.id
    assert aggregate_spec(base).id.startswith("agg_")
    others = [
        {**base, "window": "2h"},
        {**base, "key": "properties.sku"},
        {**base, "event": "Product Added"},
        {**base, "where": [{"field": "properties.size", "op": "equals", "value": "M"}]},
        {**base, "aggregate": "sum", "of": "properties.price"},
    ]
    assert len({aggregate_spec(node).id for node in others} | {same.id}) == len(others) + 1


def test_naive_times_are_refused() -> None:
    agg = aggregator()
    with pytest.raises(ValueError, match="timezone-aware"):
        agg.add(agg.empty(), datetime(2026, 1, 1), None, None, T0)
    assert aggregate_spec({"event": "x", "window": "1h"}).window_us == HOUR


def test_a_text_filter_takes_only_that_text() -> None:
    agg = aggregator(where=[{"field": "properties.category", "op": "equals", "value": "42"}])
    taken = [
        agg.matches(event(category=category))
        for category in ("42", 42, 42.0, "42 ", None, ["42"], {"42": 1})
    ]
    assert taken == [True, False, False, False, False, False, False]
    assert not agg.matches(event())  # no category at all


def test_filters_on_every_part_of_an_event() -> None:
    agg = aggregator(
        where=[
            {"field": "properties.category", "op": "equals", "value": "coats"},
            {"field": "context.locale", "op": "equals", "value": "fr"},
            {"field": "traits.plan", "op": "in", "value": ["gold"]},
        ]
    )
    coats = event(category="coats")
    assert not agg.matches(coats)
    coats = msgspec.structs.replace(coats, context={"locale": "fr"})
    assert not agg.matches(coats)
    assert agg.matches(msgspec.structs.replace(coats, traits={"plan": "gold"}))


def test_events_a_grain_apart_or_less_share_a_slot_only_within_one_stretch() -> None:
    agg = aggregator(window="1h")  # one-second slots
    assert agg.grain == 1_000_000
    state = agg.empty()
    second = T0.replace(microsecond=0)
    for at in (
        second + timedelta(microseconds=100),
        second + timedelta(microseconds=900_000),  # same second: same slot
        second + timedelta(microseconds=1_000_100),  # next second, less than a grain after
        second + timedelta(seconds=3),  # more than a grain after
        second + timedelta(seconds=2, microseconds=5),  # late, between two slots
        second + timedelta(microseconds=500),  # late, into the first slot
    ):
        state = agg.observe(state, event(at=at), second + timedelta(seconds=3))
    assert [(slot.at, slot.count) for slot in state.keys[""]] == [
        (to_micros(second) + 900_000, 3),
        (to_micros(second) + 1_000_100, 1),
        (to_micros(second) + 2_000_005, 1),
        (to_micros(second) + 3_000_000, 1),
    ]
