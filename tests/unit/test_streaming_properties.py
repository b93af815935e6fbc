"""Property test: streamed memberships always equal an evaluation from scratch.

The streaming path skips a lot to be fast: it feeds an event only to the
aggregates that count it, re-evaluates only the segments reading a state
the event changed (or a trait, consent or membership that changed), leaves
out segments the profile's traits rule out (``segment_guards``), and sets a
timer only where time can change a membership (``settle``, the lookahead,
the instant kept from the previous step). Here random catalogs (windows,
keys, filters, sums that can fall, ``all``/``any``/``not``, guards,
relative times, ``in_segment``) meet random customers: events at random
instants (some arriving late), trait changes, time passing, timers firing
at their exact instant or not yet. Driven the way the processor drives the
core, after every step the recorded memberships must be exactly the
segments that hold at that instant, computed from every event so far with
fresh aggregates. Between timers nothing is re-evaluated, so a missed or
late timer, or a skipped segment whose value changed, shows as a
difference.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rapport.core.conditions import AggregateState, Aggregator, ProfileContext
from rapport.core.conditions.instants import to_micros
from rapport.core.model import Event, Profile, TraitValue
from rapport.core.segment_timers import next_membership_change
from rapport.core.segments import (
    SegmentCatalog,
    SegmentDefinition,
    refresh_memberships,
    update_memberships,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


def views(window: str, at_least: int, **more: Any) -> dict[str, Any]:
    return {"event": "V", "window": window, "op": "gte", "value": at_least, **more}


SHOES = [{"field": "properties.category", "op": "equals", "value": "shoes"}]
BAGS = [{"field": "properties.category", "op": "equals", "value": "bags"}]
LYON = {"trait": "city", "op": "equals", "value": "Lyon"}
GOLD = {"trait": "plan", "op": "equals", "value": "gold"}
POOL: dict[str, Any] = {
    "views-10m": views("10m", 2),
    "same-product": views("1h", 2, key="properties.product"),
    "shoes": views("30m", 1, where=SHOES),
    "no-shoes": {"not": views("30m", 1, where=SHOES)},
    "lyon-views": {"all": [LYON, views("1h", 2)]},
    "lyon-gold-shoes": {"all": [LYON, GOLD, views("30m", 1, where=SHOES)]},
    "lyon-oslo-buyer": {
        "all": [
            {"trait": "city", "op": "in", "value": ["Lyon", "Oslo"]},
            {"event": "O", "window": "2h", "op": "gte", "value": 1},
        ]
    },
    "oslo-no-bags": {
        "all": [
            {"trait": "city", "op": "equals", "value": "Oslo"},
            {"not": views("20m", 1, where=BAGS)},
        ]
    },
    "seen-recently": {"trait": "seen_at", "op": "within", "value": {"last": "30m"}},
    "gold-or-bags-not-buyer": {
        "any": [
            GOLD,
            {
                "all": [
                    views("10m", 1, where=BAGS),
                    {"not": {"event": "O", "window": "1h", "op": "gte", "value": 1}},
                ]
            },
        ]
    },
    "lyon-gold": {"all": [{"in_segment": "lyon-views"}, GOLD]},
    "spent-10": views("1h", 10, aggregate="sum", of="properties.price"),
    "cheap-only": views("30m", 3, aggregate="max", of="properties.price", key="properties.product")
    | {"op": "lt"},
    "few-views": views("10m", 2) | {"op": "lt"},
    "two-categories": views("20m", 2, aggregate="distinct_count", of="properties.category"),
    # A time compared with a relative time: an order can move the change earlier.
    "delivery-soon": {
        "event": "O",
        "aggregate": "last",
        "of": "properties.delivery",
        "window": "2h",
        "op": "within",
        "value": {"next": "30m"},
    },
    "seen-and-viewing": {
        "all": [
            {"trait": "seen_at", "op": "within", "value": {"last": "30m"}},
            views("10m", 1),
        ]
    },
}

ACTION = st.one_of(
    st.tuples(
        st.just("V"),
        st.sampled_from(["p1", "p2", "p3"]),
        st.sampled_from(["shoes", "bags"]),
        st.integers(min_value=-3, max_value=8),
        st.integers(min_value=0, max_value=20),  # minutes late
    ),
    st.tuples(st.just("O"), st.integers(min_value=0, max_value=50)),  # delivery in minutes
    st.tuples(
        st.just("identify"),
        st.sampled_from(["Lyon", "Oslo", "Austin", None]),
        st.sampled_from(["gold", "silver"]),
        st.integers(min_value=0, max_value=40),  # seen that many minutes ago
    ),
)
STEP = st.tuples(
    # Time passing: minutes, or to (just before) the profile's timer.
    st.one_of(
        st.integers(min_value=0, max_value=45).map(lambda m: ("minutes", m)),
        st.sampled_from([("timer", 0), ("timer", -1)]),
    ),
    # What the processing step at that instant processes (several events of one customer).
    st.lists(ACTION, max_size=3),
)


def definition(segment_id: str) -> SegmentDefinition:
    return SegmentDefinition(
        workspace_id="ws",
        id=segment_id,
        name=segment_id,
        kind="dynamic",
        condition=POOL[segment_id],
        version=1,
        status="active",
        created_at=T0,
        updated_at=T0,
    )


def pool_catalog(segment_ids: list[str]) -> SegmentCatalog:
    """The catalog of these segments of ``POOL``, with those they read."""
    ids = set(segment_ids)
    if "lyon-gold" in ids:
        ids.add("lyon-views")
    return SegmentCatalog([definition(i) for i in sorted(ids)])


def trait(value: Any, now: datetime) -> TraitValue:
    return TraitValue(value=value, source="test", observed_at=now, received_at=now)


class Oracle:
    """Every event kept, aggregates rebuilt from scratch for each check."""

    def __init__(self, catalog: SegmentCatalog) -> None:
        self.catalog = catalog
        self.received: list[tuple[Event, int]] = []

    def members(self, profile: Profile, now: datetime) -> set[str]:
        now_us = to_micros(now)
        states: dict[str, AggregateState] = {}
        aggregators = {i: Aggregator(a.spec) for i, a in self.catalog.aggregators.items()}
        for aggregate_id, aggregator in aggregators.items():
            state = aggregator.empty()
            for event, processed_at in self.received:
                at = to_micros(event.timestamp)
                state = aggregator.observe_micros(state, event, at, processed_at)
            states[aggregate_id] = state
        found: set[str] = set()
        context = ProfileContext(
            profile,
            now,
            segments=found,
            read_aggregate=lambda i: aggregators[i].read_micros(states[i], now_us),
        )
        for segment in self.catalog.segments:  # referenced segments first
            if segment.condition.evaluate(context):
                found.add(segment.definition.id)
        return found


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(sorted(POOL)), min_size=2, max_size=8, unique=True),
    st.lists(STEP, min_size=8, max_size=30),
)
def test_streamed_memberships_equal_a_full_evaluation(
    segment_ids: list[str], steps: list[Any]
) -> None:
    catalog = pool_catalog(segment_ids)
    oracle = Oracle(catalog)
    now = T0
    profile = Profile(id="p", workspace_id="ws", created_at=T0, updated_at=T0)
    profile, _ = update_memberships(catalog, None, profile, tick(now, 0), now)
    profile = msgspec.structs.replace(
        profile, segment_timer_at=next_membership_change(catalog, profile, now)
    )
    for number, ((move, amount), actions) in enumerate(steps):
        due = profile.segment_timer_at
        if move == "minutes":
            now += timedelta(minutes=amount)
        elif due is not None and due + amount * US > now:
            now = due + amount * US
        before_step = profile
        refreshed = False
        if due is not None and due <= now:
            # The timer is delivered (or overdue when an event comes first).
            profile, _ = refresh_memberships(catalog, profile, now)
            refreshed = True
        for index, action in enumerate(actions):
            event, profile_after = apply(profile, action, now, number * 10 + index)
            oracle.received.append((event, to_micros(now)))
            profile, _ = update_memberships(catalog, profile, profile_after, event, now)
        since = None if refreshed else before_step
        timer = next_membership_change(catalog, profile, now, since)
        profile = msgspec.structs.replace(profile, segment_timer_at=timer)
        assert set(profile.segments) == oracle.members(profile, now), f"step {number} at {now}"
        assert timer is None or timer > now


def tick(now: datetime, number: int) -> Event:
    return Event(
        workspace_id="ws",
        message_id=f"m{number}",
        type="track",
        event="Tick",
        timestamp=now,
        received_at=now,
        source="test",
    )


def apply(profile: Profile, action: Any, now: datetime, number: int) -> tuple[Event, Profile]:
    """The event of ``action`` and the profile once its traits are applied."""
    kind = action[0]
    common: dict[str, Any] = {
        "workspace_id": "ws",
        "message_id": f"m{number}",
        "received_at": now,
        "source": "test",
    }
    if kind == "V":
        _, product, category, price, late = action
        properties = {"product": product, "category": category, "price": price}
        at = now - timedelta(minutes=late)
        event = Event(type="track", event="V", timestamp=at, properties=properties, **common)
        return event, profile
    if kind == "O":
        delivery = (now + timedelta(minutes=action[1])).isoformat()
        properties = {"delivery": delivery}
        event = Event(type="track", event="O", timestamp=now, properties=properties, **common)
        return event, profile
    _, city, plan, seen = action
    traits = dict(profile.traits)
    if city is None:
        traits.pop("city", None)
    else:
        traits["city"] = trait(city, now)
    traits["plan"] = trait(plan, now)
    traits["seen_at"] = trait((now - timedelta(minutes=seen)).isoformat(), now)
    event = Event(type="identify", timestamp=now, traits={}, **common)
    return event, msgspec.structs.replace(profile, traits=traits)
