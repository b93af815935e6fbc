"""The shortcuts of streaming evaluation give the answers of the long way.

* ``Guards`` keeps, per combination of guarding texts, every position they
  rule out, and ``allowed`` subtracts them from a set: checked against a
  brute-force reading of the requirements, lookup after lookup on one
  ``Guards`` (so that a combination seen before is answered from what was
  kept).
* ``next_membership_change`` takes what ``update_memberships`` found
  (``settled``) instead of settling those segments again, and looks the
  guards up only for the others: driven the way the processor drives the
  core (``WorkspaceState.record_settled`` / ``settled_for``), the timer it
  gives is the one it gives without ``settled``, and the one it gives
  without guards (the segments they rule out left out as inputs are
  compared: ``SegmentCatalog.inputs_without``).
* ``update_memberships`` leaves those segments out as it gathers the
  affected ones: the memberships it gives are the ones it gives without
  guards.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rapport.core.model import Event, Membership, Profile, TraitValue
from rapport.core.segment_guards import MAX_GUARDING_TRAITS, Guards
from rapport.core.segment_timers import next_membership_change
from rapport.core.segments import (
    SegmentCatalog,
    SegmentDefinition,
    Settled,
    refresh_memberships,
    update_memberships,
)
from rapport.runtime.working_set import WorkspaceState
from tests.unit.segment_helpers import active_segment
from tests.unit.test_streaming_properties import (
    POOL,
    STEP,
    T0,
    US,
    apply,
    pool_catalog,
    tick,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TRAITS = ("city", "plan", "tier")
TEXTS = ("a", "b", "c")

REQUIREMENTS = st.lists(
    st.dictionaries(
        st.sampled_from(TRAITS),
        st.frozensets(st.sampled_from(TEXTS), min_size=1, max_size=2),
        max_size=2,
    ),
    min_size=1,
    max_size=12,
)
VALUES = st.dictionaries(
    st.sampled_from(TRAITS), st.one_of(st.sampled_from(TEXTS), st.just(["a"]), st.just(3))
)


def expected_out(
    requirements: list[dict[str, frozenset[str]]],
    among: set[int],
    values: dict[str, Any],
    members: set[int],
) -> set[int]:
    """What ``Guards`` rules out, read from the requirements one segment at a time."""
    counts: dict[str, int] = {}
    for needs in requirements:
        for trait in needs:
            counts[trait] = counts.get(trait, 0) + 1
    guarding = sorted((t for t, n in counts.items() if n > 1), key=lambda t: (-counts[t], t))
    guarding = guarding[:MAX_GUARDING_TRAITS]
    out = set()
    for position in among - members:
        needs = requirements[position]
        for trait in guarding:
            value = values.get(trait)
            if trait in needs and not (type(value) is str and value in needs[trait]):
                out.add(position)
    return out


def trait_values(values: dict[str, Any]) -> dict[str, TraitValue]:
    return {
        name: TraitValue(value=value, source="s", observed_at=NOW, received_at=NOW)
        for name, value in values.items()
    }


@settings(max_examples=300, deadline=None)
@given(
    REQUIREMENTS,
    st.lists(
        st.tuples(VALUES, st.sets(st.integers(0, 11)), st.sets(st.integers(0, 11))),
        min_size=1,
        max_size=6,
    ),
)
def test_guards_rule_out_what_the_requirements_say_lookup_after_lookup(
    requirements: list[dict[str, frozenset[str]]],
    lookups: list[tuple[dict[str, Any], set[int], set[int]]],
) -> None:
    position = {f"s{p}": p for p in range(len(requirements))}
    guards = Guards(requirements, list(position))
    # Each combination twice: the second answer comes from what the first kept.
    for values, among, members in lookups + lookups:
        among = {p for p in among if p < len(requirements)}
        member_ids = {f"s{p}": Membership(version=1, entered_at=NOW) for p in members}
        traits = trait_values(values)
        expected = expected_out(requirements, among, values, members)
        assert guards.ruled_out(among, traits, member_ids, position) == expected
        allowed = guards.allowed(among, traits, member_ids, position)
        assert allowed == among - expected
        assert allowed is not among, "a new set: the caller's is left as it was"
        assert guards.allowed(frozenset(among), traits, member_ids, position) == among - expected
        excluded, excluded_ids = guards.exclusion(traits)
        assert excluded == guards.excluded(traits)
        assert excluded_ids == {f"s{p}" for p in excluded}


def test_a_member_ruled_out_by_her_new_city_is_still_allowed() -> None:
    guards = Guards(
        [{"city": frozenset({"Lyon"})}, {"city": frozenset({"Oslo"})}], ["lyon", "oslo"]
    )
    position = {"lyon": 0, "oslo": 1}
    oslo = trait_values({"city": "Oslo"})
    member = {"lyon": Membership(version=1, entered_at=NOW)}
    assert guards.allowed({0, 1}, oslo, {}, position) == {1}
    assert guards.allowed({0, 1}, oslo, member, position) == {0, 1}
    assert guards.allowed({0}, oslo, member, position) == {0}
    assert guards.excluded(oslo) == {0}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(sorted(POOL)), min_size=2, max_size=8, unique=True),
    st.lists(STEP, min_size=8, max_size=30),
)
def test_a_timer_from_what_the_evaluation_settled_is_the_timer_from_scratch(
    segment_ids: list[str], steps: list[Any]
) -> None:
    catalog = pool_catalog(segment_ids)
    # The same segments, every one looked at: what the guards leave out is false for good.
    unguarded = copy.copy(catalog)
    unguarded.guards = Guards([], [])
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
        state = WorkspaceState(workspace_id="ws")
        before_step = profile
        refreshed = False
        if due is not None and due <= now:
            profile, _ = refresh_memberships(catalog, profile, now)
            refreshed = True
        for index, action in enumerate(actions):
            event, profile_after = apply(profile, action, now, number * 10 + index)
            found: Settled = {}
            expected = update_memberships(unguarded, profile, profile_after, event, now)
            profile, changes = update_memberships(
                catalog, profile, profile_after, event, now, found
            )
            assert (profile, changes) == expected, f"step {number}"
            state.record_settled(profile, found)
        since = None if refreshed else before_step
        settled = state.settled_for(profile)
        timer = next_membership_change(catalog, profile, now, since, settled)
        assert timer == next_membership_change(catalog, profile, now, since), f"step {number}"
        assert timer == next_membership_change(unguarded, profile, now, since), f"step {number}"
        if since is None:
            assert timer == next_membership_change(catalog, profile, now)
        profile = msgspec.structs.replace(profile, segment_timer_at=timer)


def test_a_member_of_a_segment_her_traits_rule_out_still_gets_its_timer() -> None:
    # Recorded in "lyon-views" while her city says Oslo (not evaluated since):
    # her views ageing out cannot keep her there, the timer at their expiry
    # re-evaluates the segment, whatever the guards say of Oslo.
    lyon = {"all": [{"trait": "city", "op": "equals", "value": "Lyon"}, VIEWED_TWICE]}
    oslo = {
        "all": [{"trait": "city", "op": "equals", "value": "Oslo"}, VIEWED_TWICE | {"value": 3}]
    }
    catalog = SegmentCatalog(
        [segment("lyon-views", lyon), segment("lyon-again", lyon), segment("oslo-views", oslo)]
    )
    assert catalog.guards, "city rules out segments"
    now = NOW
    first, second = now - timedelta(minutes=50), now - timedelta(minutes=10)
    profile = Profile(id="p", workspace_id="ws", created_at=NOW, updated_at=NOW)
    for at in (first, second):
        profile, _ = update_memberships(catalog, profile, profile, viewed_at(at), at)
    assert set(profile.segments) == set(), "no city yet"
    stale = msgspec.structs.replace(
        profile,
        traits=trait_values({"city": "Oslo"}),
        segments={"lyon-views": Membership(version=1, entered_at=second)},
    )
    since = msgspec.structs.replace(stale, aggregates={}, segment_timer_at=now + timedelta(hours=2))
    expected = first + timedelta(hours=1)
    assert next_membership_change(catalog, stale, now, since) == expected
    unguarded = copy.copy(catalog)
    unguarded.guards = Guards([], [])
    assert next_membership_change(unguarded, stale, now, since) == expected


VIEWED_TWICE = {"event": "Product Viewed", "window": "1h", "op": "gte", "value": 2}


def segment(segment_id: str, condition: Any) -> SegmentDefinition:
    return active_segment(segment_id, condition, NOW)


def viewed_at(at: datetime) -> Event:
    return Event(
        workspace_id="ws",
        message_id=f"v@{at.isoformat()}",
        type="track",
        event="Product Viewed",
        timestamp=at,
        received_at=at,
        source="test",
    )
