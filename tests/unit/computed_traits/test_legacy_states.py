"""Computed-trait aggregate states stored before per-kind slots keep counting right."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from rapport.core.computed_traits.catalog import AggregateComputation
from rapport.core.conditions import Aggregator
from tests.unit.computed_traits.helpers import T0, catalog, profile, step, track, values
from tests.unit.conditions.legacy import legacy_aggregates

REVENUE = {"event": "Order Completed", "aggregate": "sum", "of": "properties.revenue"}
ORDERS_90D = {"event": "Order Completed", "window": "90d"}
BIGGEST_7D = {
    "event": "Order Completed",
    "aggregate": "max",
    "of": "properties.revenue",
    "window": "7d",
}
LAST_ITEM = {"event": "Order Completed", "aggregate": "last", "of": "properties.item"}


def test_states_stored_before_are_read_and_stored_anew_once_fed() -> None:
    built = catalog(
        lifetime_revenue=REVENUE, orders_90d=ORDERS_90D, biggest_7d=BIGGEST_7D, last=LAST_ITEM
    )
    aggregators: dict[str, Aggregator] = {
        state_id: computation.aggregator
        for state_id, computation in built.by_state.items()
        if isinstance(computation, AggregateComputation)
    }
    assert len(aggregators) == 4
    p = profile()
    for n, (days, revenue, item) in enumerate(((0, 300, "coat"), (2, 20.5, "hat"), (3, 7, None))):
        at = T0 + timedelta(days=days)
        order = track(n, "Order Completed", at, revenue=revenue, item=item)
        p = step(built, p, order, at)
    old = msgspec.structs.replace(p, aggregates=legacy_aggregates(p.aggregates, aggregators))
    assert all(bytes(old.aggregates[i]).startswith(b'{"keys"') for i in aggregators)
    assert built.next_change(old, T0 + timedelta(days=3)) == built.next_change(
        p, T0 + timedelta(days=3)
    )

    later = T0 + timedelta(days=8)
    order = track(9, "Order Completed", later, revenue=1, item="sock")
    today, before = step(built, p, order, later), step(built, old, order, later)
    assert (
        values(before)
        == values(today)
        == {
            "lifetime_revenue": 328.5,
            "orders_90d": 4,
            "biggest_7d": 20.5,
            "last": "sock",
        }
    )
    assert before.aggregates == today.aggregates  # fed, so stored in today's form
