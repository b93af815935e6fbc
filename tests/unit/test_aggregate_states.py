"""A profile's aggregate states while segments are evaluated: what is decoded and stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from rapport.core.aggregate_states import AggregateStates, merge_aggregate_states
from rapport.core.conditions.instants import to_micros
from rapport.core.model import Event, Profile
from rapport.core.segment_timers import next_membership_change
from rapport.core.segments import (
    SegmentCatalog,
    SegmentDefinition,
    update_memberships,
)
from tests.unit.conditions.legacy import legacy_aggregates

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
VIEWED_TWICE = {"event": "Product Viewed", "window": "1h", "op": "gte", "value": 2}
VIEWED_SHOES = {
    "event": "Product Viewed",
    "window": "1h",
    "where": [{"field": "properties.category", "op": "equals", "value": "shoes"}],
    "op": "gte",
    "value": 1,
}


def catalog(**conditions: Any) -> SegmentCatalog:
    return SegmentCatalog(
        SegmentDefinition(
            workspace_id="ws",
            id=segment_id,
            name=segment_id,
            kind="dynamic",
            condition=condition,
            version=1,
            status="active",
            created_at=NOW,
            updated_at=NOW,
        )
        for segment_id, condition in conditions.items()
    )


def view(number: int, category: str = "bags") -> Event:
    return Event(
        workspace_id="ws",
        message_id=f"v{number}",
        type="track",
        event="Product Viewed",
        timestamp=NOW - timedelta(minutes=number),
        received_at=NOW,
        source="test",
        properties={"category": category},
    )


def blank() -> Profile:
    return Profile(id="p", workspace_id="ws", created_at=NOW, updated_at=NOW)


def test_an_event_an_aggregate_does_not_count_leaves_its_stored_state_alone() -> None:
    cat = catalog(shoes=VIEWED_SHOES)
    profile = blank()
    profile, changes = update_memberships(cat, profile, profile, view(30, "shoes"), NOW)
    assert [(c.segment_id, c.entered) for c in changes] == [("shoes", True)]
    # Later, a view of bags: the shoes state is not decoded, fed, expired nor encoded.
    later = NOW + timedelta(minutes=20)
    bags = msgspec.structs.replace(view(0, "bags"), timestamp=later, received_at=later)
    after, changes = update_memberships(cat, profile, profile, bags, later)
    assert changes == [] and after is profile
    # What aged out is dropped by the next event the aggregate counts.
    latest = NOW + timedelta(minutes=45)
    shoes = msgspec.structs.replace(view(0, "shoes"), timestamp=latest, received_at=latest)
    after, changes = update_memberships(cat, profile, profile, shoes, latest)
    ((aggregate_id, aggregator),) = cat.aggregators.items()
    state = aggregator.decode(after.aggregates[aggregate_id])
    assert [slot.at for slot in state.keys[""]] == [to_micros(latest)]
    assert changes == [] and set(after.segments) == {"shoes"}
    assert next_membership_change(cat, after, latest) == latest + timedelta(hours=1)


def test_unchanged_states_are_stored_as_they_were() -> None:
    cat = catalog(twice=VIEWED_TWICE)
    profile = blank()
    profile, _ = update_memberships(cat, profile, profile, view(1), NOW)
    states = AggregateStates(cat.aggregators, profile.aggregates, to_micros(NOW))
    ((aggregate_id, _),) = cat.aggregators.items()
    states.read(aggregate_id)
    assert states.encoded() is profile.aggregates
    # A state no segment reads any more is dropped; computed traits' states stay.
    stale = {**profile.aggregates, "agg_gone": msgspec.Raw(b"{}"), "ct_x": msgspec.Raw(b"{}")}
    kept = AggregateStates(cat.aggregators, stale, to_micros(NOW)).encoded()
    assert set(kept) == {aggregate_id, "ct_x"}


def test_states_stored_before_per_kind_slots_are_read_and_stored_anew_once_fed() -> None:
    cat = catalog(twice=VIEWED_TWICE, shoes=VIEWED_SHOES)
    today = blank()
    for number, category in ((50, "bags"), (40, "shoes"), (35, "bags")):
        today, _ = update_memberships(cat, today, today, view(number, category), NOW)
    assert set(today.segments) == {"twice", "shoes"}
    stored = legacy_aggregates(today.aggregates, cat.aggregators)
    assert all(bytes(raw).startswith(b'{"keys"') for raw in stored.values())
    old = msgspec.structs.replace(today, aggregates=stored)
    # Read as they were: nothing changes, nothing is rewritten.
    assert AggregateStates(cat.aggregators, stored, to_micros(NOW)).encoded() is stored
    later = NOW + timedelta(minutes=15)
    assert next_membership_change(cat, old, NOW) == next_membership_change(cat, today, NOW)
    # A view of bags feeds one of the two states: that one is stored in today's form.
    bags = msgspec.structs.replace(view(0), timestamp=later, received_at=later)
    after_old, changes_old = update_memberships(cat, old, old, bags, later)
    after_today, changes_today = update_memberships(cat, today, today, bags, later)
    assert changes_old == changes_today
    assert after_old.segments.keys() == after_today.segments.keys()
    fed = [i for i in after_old.aggregates if after_old.aggregates[i] != stored[i]]
    assert len(fed) == 1 and after_old.aggregates[fed[0]] == after_today.aggregates[fed[0]]
    for aggregate_id, aggregator in cat.aggregators.items():
        assert aggregator.read_micros(
            aggregator.decode(after_old.aggregates[aggregate_id]), to_micros(later)
        ) == aggregator.read_micros(
            aggregator.decode(after_today.aggregates[aggregate_id]), to_micros(later)
        )


def test_profiles_merge_whichever_form_their_states_were_stored_in() -> None:
    cat = catalog(twice=VIEWED_TWICE, shoes=VIEWED_SHOES)
    one, other = blank(), msgspec.structs.replace(blank(), id="q")
    for number, category in ((50, "bags"), (40, "shoes")):
        one, _ = update_memberships(cat, one, one, view(number, category), NOW)
    for number, category in ((45, "shoes"), (30, "bags")):
        other, _ = update_memberships(cat, other, other, view(number, category), NOW)

    def old(p: Profile) -> Profile:
        return msgspec.structs.replace(
            p, aggregates=legacy_aggregates(p.aggregates, cat.aggregators)
        )

    now = to_micros(NOW)
    expected = merge_aggregate_states(cat.aggregators, one, other, now).aggregates
    for winner, loser in ((old(one), other), (one, old(other)), (old(one), old(other))):
        assert merge_aggregate_states(cat.aggregators, winner, loser, now).aggregates == expected
    counts = {
        aggregator.spec.where != []: aggregator.read_micros(
            aggregator.decode(expected[aggregate_id]), now
        ).values
        for aggregate_id, aggregator in cat.aggregators.items()
    }
    assert counts == {False: {"": 4}, True: {"": 2}}


def test_feeding_candidates_observes_each_one_the_event_matches() -> None:
    cat = catalog(twice=VIEWED_TWICE, shoes=VIEWED_SHOES)
    profile, _ = update_memberships(cat, blank(), blank(), view(5, "shoes"), NOW)
    candidates = list(cat.aggregators.items())
    for event in (view(1, "shoes"), view(2, "bags")):
        fed = AggregateStates(cat.aggregators, profile.aggregates, to_micros(NOW))
        fed.feed(candidates, event, to_micros(event.timestamp))
        # The same, one aggregate at a time through the pure Aggregator calls.
        expected: dict[str, Any] = {}
        for aggregate_id, aggregator in candidates:
            if aggregator.matches(event):
                before = aggregator.decode(profile.aggregates[aggregate_id])
                after = aggregator.add_event_micros(
                    before, event, to_micros(event.timestamp), to_micros(NOW)
                )
                expected[aggregate_id] = after
        assert set(fed.changed) == set(expected)
        assert len(fed.changed) == (2 if event.properties["category"] == "shoes" else 1)
        encoded = fed.encoded()
        for aggregate_id, aggregator in candidates:
            state = expected.get(aggregate_id)
            if state is None:
                assert encoded[aggregate_id] is profile.aggregates[aggregate_id]
            else:
                assert bytes(encoded[aggregate_id]) == aggregator.encode(state)
                assert fed.read(aggregate_id) == aggregator.read_micros(state, to_micros(NOW))
