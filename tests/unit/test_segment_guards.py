"""Segments a profile's traits rule out are left out of evaluation and of timers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from rapport.core.conditions import compile_condition
from rapport.core.model import Event, Membership, Profile, TraitValue
from rapport.core.segment_guards import Guards
from rapport.core.segment_timers import next_membership_change
from rapport.core.segments import (
    MembershipChange,
    SegmentCatalog,
    SegmentDefinition,
    update_memberships,
)
from tests.unit.segment_helpers import active_segment

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
VIEWED = {"event": "Product Viewed", "window": "1h", "op": "gte", "value": 1}


def city(name: str) -> dict[str, Any]:
    return {"trait": "city", "op": "equals", "value": name}


@pytest.mark.parametrize(
    ("tree", "required"),
    [
        (city("Lyon"), {"city": {"Lyon"}}),
        ({"trait": "city", "op": "in", "value": ["Lyon", "Oslo"]}, {"city": {"Lyon", "Oslo"}}),
        # Every part of an all is required, however deep.
        (
            {
                "all": [
                    VIEWED,
                    {"all": [city("Lyon"), {"trait": "plan", "op": "in", "value": ["a"]}]},
                ]
            },
            {"city": {"Lyon"}, "plan": {"a"}},
        ),
        # Two requirements on one trait: both must hold.
        (
            {"all": [{"trait": "city", "op": "in", "value": ["Lyon", "Oslo"]}, city("Oslo")]},
            {"city": {"Oslo"}},
        ),
        # Nothing is required of a part that another part can stand in for, or that is negated.
        ({"any": [city("Lyon"), VIEWED]}, {}),
        ({"not": city("Lyon")}, {}),
        # Only texts: a number or a mixed list says nothing of the trait's type.
        ({"trait": "age", "op": "equals", "value": 30}, {}),
        ({"trait": "city", "op": "in", "value": ["Lyon", 3]}, {}),
        ({"trait": "address.city", "op": "equals", "value": "Lyon"}, {}),
        ({"trait": "city", "op": "not_equals", "value": "Lyon"}, {}),
    ],
)
def test_what_a_condition_requires_of_traits(tree: Any, required: dict[str, set[str]]) -> None:
    assert compile_condition(tree).requirements == {k: frozenset(v) for k, v in required.items()}


def traits(**values: Any) -> dict[str, TraitValue]:
    return {
        name: TraitValue(value=value, source="s", observed_at=NOW, received_at=NOW)
        for name, value in values.items()
    }


def test_one_lookup_rules_out_the_other_cities_but_never_a_membership() -> None:
    guards = Guards(
        [
            {"city": frozenset({"Lyon"})},
            {"city": frozenset({"Oslo"})},
            {"city": frozenset({"Lyon", "Oslo"})},
            {},
            {"plan": frozenset({"gold"})},  # the only segment on plan: not worth a lookup
        ],
        ["lyon", "oslo", "either", "any", "gold"],
    )
    position = {"lyon": 0, "oslo": 1, "either": 2}
    every = {0, 1, 2, 3, 4}
    assert guards.ruled_out(every, traits(city="Lyon"), {}, position) == {1}
    assert guards.ruled_out(every, traits(city="Austin"), {}, position) == {0, 1, 2}
    assert guards.ruled_out(every, traits(city=["Lyon"]), {}, position) == {0, 1, 2}
    assert guards.ruled_out(every, {}, {}, position) == {0, 1, 2}
    assert guards.ruled_out({0, 3}, {}, {}, position) == {0}, "only among those asked about"
    member = {"lyon": Membership(version=1, entered_at=NOW)}
    assert guards.ruled_out(every, traits(city="Oslo"), member, position) == set()
    assert guards.exclusion(traits(city="Lyon")) == ({1}, {"oslo"})
    assert guards.exclusion(traits(city="Austin")) == ({0, 1, 2}, {"lyon", "oslo", "either"})
    assert not Guards([{}, {"plan": frozenset({"gold"})}], ["any", "gold"])
    with pytest.raises(ValueError, match="one id per segment"):
        Guards([{}], [])


def definition(segment_id: str, condition: Any) -> SegmentDefinition:
    return active_segment(segment_id, condition, NOW)


def test_a_customer_who_moves_leaves_the_segments_of_her_old_city() -> None:
    catalog = SegmentCatalog(
        [definition(c.lower(), {"all": [VIEWED, city(c)]}) for c in ("Lyon", "Oslo", "Lima")]
    )
    view = Event(
        workspace_id="ws",
        message_id="v",
        type="track",
        event="Product Viewed",
        timestamp=NOW,
        received_at=NOW,
        source="test",
    )
    profile = Profile(
        id="p", workspace_id="ws", created_at=NOW, updated_at=NOW, traits=traits(city="Lyon")
    )
    profile, changes = update_memberships(catalog, profile, profile, view, NOW)
    assert changes == [MembershipChange("lyon", 1, True)]
    assert next_membership_change(catalog, profile, NOW) is not None, "she leaves in an hour"
    moved = Profile(
        id="p",
        workspace_id="ws",
        created_at=NOW,
        updated_at=NOW,
        traits=traits(city="Oslo"),
        segments=profile.segments,
        aggregates=profile.aggregates,
    )
    identify = Event(
        workspace_id="ws",
        message_id="i",
        type="identify",
        timestamp=NOW,
        received_at=NOW,
        source="test",
    )
    moved, changes = update_memberships(catalog, profile, moved, identify, NOW)
    assert changes == [MembershipChange("lyon", 1, False), MembershipChange("oslo", 1, True)]
