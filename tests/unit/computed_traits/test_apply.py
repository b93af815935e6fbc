"""apply_computed_traits: values, provenance, when traits are written, and the states kept."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from rapport.core.computed_traits import (
    COMPUTED_SOURCE,
    ComputedTraitCatalog,
    apply_computed_traits,
    refresh_computed_traits,
)
from rapport.core.computed_traits.catalog import DUE_ID
from rapport.core.model import Event, Membership, Profile, TraitValue
from rapport.core.segments import SegmentCatalog, SegmentDefinition, update_memberships
from tests.unit.computed_traits.helpers import (
    T0,
    WS,
    catalog,
    definition,
    page,
    profile,
    step,
    track,
    values,
)

REVENUE = {"event": "Order Completed", "aggregate": "sum", "of": "properties.revenue"}
ORDERS_90D = {"event": "Order Completed", "window": "90d"}
VIEWS_1H = {"event": "Product Viewed", "window": "1h", "key": "properties.product_id"}


def states(p: Profile) -> list[str]:
    """The ids of the profile's aggregate states (not the map of their expiries)."""
    return sorted(state_id for state_id in p.aggregates if state_id != DUE_ID)


def test_aggregates_keyed_values_and_provenance() -> None:
    built = catalog(lifetime_revenue=REVENUE, orders_90d=ORDERS_90D, views_1h_by_product=VIEWS_1H)
    p = profile()
    p = step(built, p, track(1, "Order Completed", T0, revenue=300), T0)
    p = step(built, p, track(2, "Product Viewed", T0, product_id=42), T0 + timedelta(minutes=1))
    p = step(built, p, track(3, "Product Viewed", T0, product_id="42"), T0 + timedelta(minutes=2))
    late = T0 - timedelta(days=2)
    p = step(built, p, track(4, "Order Completed", late, revenue=250.5), T0 + timedelta(minutes=3))
    assert values(p) == {
        "lifetime_revenue": 550.5,
        "orders_90d": 2,
        "views_1h_by_product": {"42": 2},
    }
    revenue = p.traits["lifetime_revenue"]
    assert revenue.source == COMPUTED_SOURCE
    assert revenue.observed_at == late, "observed when the event that changed it happened"
    assert revenue.received_at == T0 + timedelta(minutes=3)
    assert revenue.message_id == "m4"
    views = p.traits["views_1h_by_product"]
    assert (views.message_id, views.received_at) == ("m3", T0 + timedelta(minutes=2))


def test_a_trait_is_written_only_when_its_value_changes() -> None:
    last_plan = {"event": "Subscribed", "aggregate": "last", "of": "properties.plan"}
    built = catalog(last_plan=last_plan)
    p = step(built, profile(), track(1, "Subscribed", T0, plan="gold"), T0)
    first = p.traits["last_plan"]
    again = step(
        built, p, track(2, "Subscribed", T0 + timedelta(1), plan="gold"), T0 + timedelta(1)
    )
    assert again.traits["last_plan"] is first
    other = step(built, again, track(3, "Other", T0 + timedelta(2)), T0 + timedelta(2))
    assert other.traits is again.traits, "an event no computed trait counts changes no trait"
    # A last value of null is no value: nothing to write for a profile without one.
    nothing = step(built, profile(), track(4, "Subscribed", T0, plan=None), T0)
    assert "last_plan" not in nothing.traits


def test_where_filters_and_events_already_out_of_the_window() -> None:
    big = {**ORDERS_90D, "where": [{"field": "properties.revenue", "op": "gte", "value": 100}]}
    built = catalog(big_orders_90d=big)
    p = step(built, profile(), track(1, "Order Completed", T0, revenue=20), T0)
    assert values(p) == {"big_orders_90d": 0}, "the event was counted-for: the trait exists"
    p = step(built, p, track(2, "Order Completed", T0, revenue=120), T0)
    old = T0 - timedelta(days=91)
    p = step(built, p, track(3, "Order Completed", old, revenue=500), T0)
    assert values(p) == {"big_orders_90d": 1}


def test_internal_events_change_nothing() -> None:
    built = catalog(orders_90d=ORDERS_90D)
    p = profile()
    event = track(1, "Order Completed", T0, source="rapport:segments")
    assert apply_computed_traits(built, p, event, T0) is p
    timer = track(2, "Order Completed", T0, source="rapport:timers")
    assert apply_computed_traits(built, p, timer, T0) is p


def test_a_value_sent_under_a_computed_name_is_replaced() -> None:
    built = catalog(lifetime_revenue=REVENUE)
    p = step(built, profile(), track(1, "Order Completed", T0, revenue=10), T0)
    later = T0 + timedelta(hours=1)
    forged = Event(
        workspace_id=WS,
        message_id="m2",
        type="identify",
        user_id="u",
        traits={"lifetime_revenue": 1_000_000, "plan": "gold"},
        timestamp=later,
        received_at=later,
        source="write_key:k",
    )
    p = step(built, p, forged, later)
    assert values(p) == {"lifetime_revenue": 10, "plan": "gold"}
    assert p.traits["lifetime_revenue"].source == COMPUTED_SOURCE
    assert p.traits["lifetime_revenue"].message_id == "m2"


def test_time_alone_changes_windowed_traits_at_the_next_event_or_a_refresh() -> None:
    built = catalog(orders_90d=ORDERS_90D, lifetime_revenue=REVENUE)
    p = step(built, profile(), track(1, "Order Completed", T0, revenue=5), T0)
    day10 = T0 + timedelta(days=10)
    p = step(built, p, track(2, "Order Completed", day10, revenue=5), day10)
    assert values(p) == {"orders_90d": 2, "lifetime_revenue": 10}
    assert built.next_change(p, T0 + timedelta(days=10)) == T0 + timedelta(days=90)

    # An unrelated event after the first order aged out brings orders_90d down.
    at = T0 + timedelta(days=95)
    seen = step(built, p, page(3, at), at)
    assert values(seen) == {"orders_90d": 1, "lifetime_revenue": 10}
    assert seen.traits["orders_90d"].observed_at == at
    assert seen.traits["lifetime_revenue"] is p.traits["lifetime_revenue"]

    # A timer at next_change does the same without an event.
    just_before = T0 + timedelta(days=90) - timedelta(microseconds=1)
    assert refresh_computed_traits(built, p, just_before) is p
    refreshed = refresh_computed_traits(built, p, T0 + timedelta(days=90))
    assert values(refreshed)["orders_90d"] == 1
    assert refreshed.traits["orders_90d"].observed_at == T0 + timedelta(days=90)
    assert refreshed.traits["orders_90d"].message_id is None
    assert built.next_change(refreshed, T0 + timedelta(days=90)) == T0 + timedelta(days=100)
    # next_change answers for a profile not refreshed yet too.
    assert built.next_change(p, T0 + timedelta(days=91)) == T0 + timedelta(days=100)
    gone = refresh_computed_traits(built, refreshed, T0 + timedelta(days=100))
    assert values(gone)["orders_90d"] == 0
    assert built.next_change(gone, T0 + timedelta(days=100)) is None


def test_definitions_computing_the_same_thing_share_one_state() -> None:
    built = catalog(orders=ORDERS_90D, orders_again=dict(ORDERS_90D))
    p = step(built, profile(), track(1, "Order Completed", T0), T0)
    assert values(p) == {"orders": 1, "orders_again": 1}
    assert len(states(p)) == 1


def test_segment_and_computed_states_live_side_by_side() -> None:
    built = catalog(orders_90d=ORDERS_90D)
    segment = SegmentDefinition(
        workspace_id=WS,
        id="buyers",
        name="buyers",
        kind="dynamic",
        condition={"event": "Order Completed", "window": "90d", "op": "gte", "value": 2},
        version=1,
        status="active",
        created_at=T0,
        updated_at=T0,
    )
    segments = SegmentCatalog([segment])
    p = profile()
    for n in range(1, 3):
        before = p
        at = T0 + timedelta(minutes=n)
        p = step(built, p, track(n, "Order Completed", at), at)
        p, _ = update_memberships(segments, before, p, track(n, "Order Completed", at), at)
    assert p.segments == {"buyers": Membership(version=1, entered_at=T0 + timedelta(minutes=2))}
    assert values(p) == {"orders_90d": 2}
    ids = sorted(states(p))
    assert [i.split("_")[0] for i in ids] == ["agg", "ct"], "one state each, in its namespace"

    # Neither side drops the other's state, even when it has no definition left.
    no_segments = SegmentCatalog([])
    after, _ = update_memberships(no_segments, p, p, track(9, "Order Completed", T0), T0)
    assert any(i.startswith("ct_") for i in after.aggregates)
    no_traits = ComputedTraitCatalog([])
    later = step(no_traits, p, track(10, "Order Completed", T0), T0)
    assert [i.split("_")[0] for i in sorted(later.aggregates)] == ["agg"]
    assert values(later) == {"orders_90d": 2}, "a deleted definition's last value stays"


def test_a_changed_definition_starts_a_new_state_and_drops_the_old() -> None:
    p = step(catalog(orders=ORDERS_90D), profile(), track(1, "Order Completed", T0), T0)
    (old_state,) = states(p)
    weekly = catalog(orders={**ORDERS_90D, "window": "7d"})
    p = step(weekly, p, track(2, "Order Completed", T0), T0)
    assert values(p) == {"orders": 1}, "no backfill: counted from the new definition on"
    assert states(p) != [old_state] and len(states(p)) == 1


def test_nothing_to_do_returns_the_same_profile() -> None:
    empty = ComputedTraitCatalog([])
    p = profile()
    event = track(1, "Order Completed", T0)
    assert apply_computed_traits(empty, p, event, T0) is p
    built = catalog(orders_90d=ORDERS_90D)
    assert apply_computed_traits(built, p, track(2, "Other", T0), T0) is p


def test_invalid_stored_definitions_are_left_out() -> None:
    built = ComputedTraitCatalog(
        [
            definition("bad", {"event": "X", "window": "1 hour"}),
            definition("worse", {"event": "X"}, kind="nope"),
            definition("good", {"event": "X"}),
        ]
    )
    assert sorted(built.invalid) == ["bad", "worse"]
    assert "$.window" in built.invalid["bad"]
    assert list(built.by_trait) == ["good"]


def test_deleted_definitions_are_not_compiled() -> None:
    gone = msgspec.structs.replace(definition("orders", ORDERS_90D), status="deleted")
    assert not ComputedTraitCatalog([gone])


def test_stored_client_trait_of_a_new_computed_name_is_taken_over() -> None:
    p = profile()
    p = msgspec.structs.replace(
        p,
        traits={
            "orders_90d": TraitValue(
                value="lots", source="write_key:k", observed_at=T0, received_at=T0
            )
        },
    )
    built = catalog(orders_90d=ORDERS_90D)
    p = step(built, p, track(1, "Order Completed", T0), T0)
    assert p.traits["orders_90d"].value == 1
    assert p.traits["orders_90d"].source == COMPUTED_SOURCE
