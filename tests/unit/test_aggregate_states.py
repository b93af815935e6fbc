"""A profile's aggregate states while segments are evaluated: what is decoded and stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from rapport.core.aggregate_states import AggregateStates
from rapport.core.conditions import AggregateState
from rapport.core.conditions.instants import to_micros
from rapport.core.model import Event, Profile
from rapport.core.segments import (
    SegmentCatalog,
    SegmentDefinition,
    next_membership_change,
    update_memberships,
)

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
    ((aggregate_id, _),) = cat.aggregators.items()
    state = msgspec.json.decode(after.aggregates[aggregate_id], type=AggregateState)
    assert [slot.at for slot in state.keys[""].slots] == [to_micros(latest)]
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
