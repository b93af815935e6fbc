"""Time-driven membership in the core: when a timer is due and what it changes.

``next_membership_change`` answers "when may time alone change one of this
profile's memberships"; ``refresh_memberships`` is what a timer does then.
The runtime around them (stored rows, the relay) is in test_processor.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from rapport.core.model import Event, Membership, Profile, TraitValue
from rapport.core.segment_timers import MAX_LOOKAHEAD, next_membership_change
from rapport.core.segments import (
    MembershipChange,
    SegmentCatalog,
    SegmentDefinition,
    refresh_memberships,
    update_memberships,
)
from tests.unit.segment_helpers import active_segment

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
HOUR = timedelta(hours=1)
S2 = {
    "event": "Product Viewed",
    "window": "1h",
    "key": "properties.product_id",
    "op": "gte",
    "value": 3,
}
LAPSED = {"trait": "last_order_at", "op": "before", "value": {"ago": "30d"}}


def definition(segment_id: str, condition: Any, version: int = 1) -> SegmentDefinition:
    return active_segment(segment_id, condition, T0, version=version)


def catalog(*definitions: SegmentDefinition) -> SegmentCatalog:
    return SegmentCatalog(definitions)


def msgspec_replace(profile: Profile, **fields: Any) -> Profile:
    return msgspec.structs.replace(profile, **fields)


def blank(**fields: Any) -> Profile:
    return Profile(id="prof_1", workspace_id="ws", created_at=T0, updated_at=T0, **fields)


def view(at: datetime, product: str = "jacket") -> Event:
    return Event(
        workspace_id="ws",
        message_id=f"view@{at.isoformat()}",
        type="track",
        event="Product Viewed",
        timestamp=at,
        received_at=at,
        source="test",
        properties={"product_id": product},
    )


def viewed(cat: SegmentCatalog, *views: Event) -> Profile:
    """A profile after each view, processed at its own time."""
    profile = blank()
    for event in views:
        profile, _ = update_memberships(cat, profile, profile, event, event.timestamp)
    return profile


def test_the_catalog_knows_which_segments_time_can_change() -> None:
    cat = catalog(
        definition("gold", {"trait": "plan", "op": "equals", "value": "gold"}),
        definition("s2", S2),
        definition("lapsed", LAPSED),
        definition("ever-viewed", {"event": "Product Viewed", "op": "gte", "value": 1}),
    )
    ids = [cat.segments[p].definition.id for p in cat.time_dependent]
    assert sorted(ids) == ["lapsed", "s2"]


def test_a_member_leaves_exactly_when_the_first_of_three_views_is_an_hour_old() -> None:
    cat = catalog(definition("s2", S2))
    first = T0
    # Shoes viewed before: their expiry comes first, but changes nothing.
    views = [view(T0 - timedelta(minutes=5), "shoes"), view(first)]
    views += [view(first + timedelta(minutes=20)), view(first + timedelta(minutes=50))]
    profile = viewed(cat, *views)
    assert set(profile.segments) == {"s2"}
    now = first + timedelta(minutes=50)
    assert next_membership_change(cat, profile, now) == first + HOUR

    still, changes = refresh_memberships(cat, profile, first + HOUR - US)
    assert changes == [] and still is profile
    left, changes = refresh_memberships(cat, profile, first + HOUR)
    assert changes == [MembershipChange("s2", 1, False)]
    assert left.segments == {}
    assert left.aggregates == profile.aggregates, "a timer feeds no aggregate"
    assert next_membership_change(cat, left, first + HOUR) is None


def test_views_that_can_only_age_out_need_no_timer() -> None:
    cat = catalog(definition("s2", S2))
    profile = viewed(cat, view(T0), view(T0 + timedelta(minutes=10)))
    assert profile.segments == {}
    assert next_membership_change(cat, profile, T0 + timedelta(minutes=10)) is None


def test_time_makes_people_enter_too() -> None:
    cat = catalog(definition("lapsed", LAPSED))
    ordered = T0 - timedelta(days=2)
    trait = TraitValue(value=ordered.isoformat(), source="test", observed_at=T0, received_at=T0)
    profile = blank(traits={"last_order_at": trait})
    due = next_membership_change(cat, profile, T0)
    assert due == ordered + timedelta(days=30)
    assert refresh_memberships(cat, profile, due - US)[1] == []
    entered, changes = refresh_memberships(cat, profile, due)
    assert changes == [MembershipChange("lapsed", 1, True)]
    assert entered.segments == {"lapsed": Membership(version=1, entered_at=due)}
    assert next_membership_change(cat, entered, due) is None


def test_a_long_stay_is_followed_in_steps_and_still_ends_exactly() -> None:
    cat = catalog(definition("s2", S2))
    views = [view(T0 + n * timedelta(minutes=2)) for n in range(MAX_LOOKAHEAD + 6)]
    profile = viewed(cat, *views)
    now = views[-1].timestamp
    exit_at = views[-3].timestamp + HOUR  # then only two views are left in the hour
    due = next_membership_change(cat, profile, now)
    assert due is not None and now < due < exit_at
    # Each timer re-evaluates (still a member) and looks further.
    fired = 0
    while profile.segments:
        assert due is not None
        profile, _ = refresh_memberships(cat, profile, due)
        fired += 1
        now, due = due, next_membership_change(cat, profile, due)
    assert now == exit_at
    assert fired == 2


def test_readers_follow_and_gone_or_outdated_segments_are_settled() -> None:
    s2 = definition("s2", S2)
    reader = definition("s2-vip", {"all": [{"in_segment": "s2"}, {"trait": "vip", "op": "exists"}]})
    cat = catalog(s2, reader)
    vip = TraitValue(value=True, source="test", observed_at=T0, received_at=T0)
    profile = msgspec_replace(
        viewed(cat, view(T0), view(T0 + US * 2_000_000), view(T0 + US * 4_000_000)),
        traits={"vip": vip},
    )
    profile, _ = refresh_memberships(cat, profile, T0 + US * 4_000_000)
    assert set(profile.segments) == {"s2"}, "s2-vip is not time-dependent: not evaluated"
    profile = msgspec_replace(
        profile, segments={**profile.segments, "s2-vip": Membership(version=1, entered_at=T0)}
    )
    # A newer version of the reader, a member of a deleted segment, time passing.
    newer = catalog(s2, definition("s2-vip", reader.condition, version=2))
    gone = msgspec_replace(
        profile, segments={**profile.segments, "old": Membership(version=3, entered_at=T0)}
    )
    left, changes = refresh_memberships(newer, gone, T0 + HOUR)
    assert changes == [
        MembershipChange("old", 3, False),
        MembershipChange("s2", 1, False),
        MembershipChange("s2-vip", 1, False),
    ]
    assert left.segments == {}


def test_asked_again_after_an_event_only_what_changed_is_looked_at() -> None:
    lapsed = definition("lapsed", LAPSED)
    cat = catalog(definition("s2", S2), lapsed)
    first = T0
    member = viewed(cat, view(first), view(first + timedelta(minutes=1)), view(first + US * 9e7))
    now = first + timedelta(minutes=2)
    due = next_membership_change(cat, member, now)
    assert due == first + HOUR
    timed = msgspec_replace(member, segment_timer_at=due)

    # A fourth view pushes the exit back; the timer stays early (a harmless
    # early look), and a full computation without ``since`` finds the new exit.
    fourth = view(first + timedelta(minutes=3))
    later, _ = update_memberships(cat, timed, timed, fourth, fourth.timestamp)
    assert next_membership_change(cat, later, fourth.timestamp, since=timed) == due
    assert (
        next_membership_change(cat, later, fourth.timestamp) == first + timedelta(minutes=1) + HOUR
    )

    # A change of a segment's inputs that makes it change sooner is found.
    ordered = now - timedelta(days=30) + timedelta(minutes=5)
    trait = TraitValue(value=ordered.isoformat(), source="test", observed_at=now, received_at=now)
    sooner = msgspec_replace(timed, traits={"last_order_at": trait})
    assert next_membership_change(cat, sooner, now, since=timed) == now + timedelta(minutes=5)

    # Nothing the time-dependent segments read changed: the answer stands as it was.
    other = TraitValue(value="x", source="test", observed_at=now, received_at=now)
    unrelated = msgspec_replace(timed, traits={"nickname": other})
    assert next_membership_change(cat, unrelated, now, since=timed) == due
    # A timer already due is not an answer any more: everything is looked at.
    assert next_membership_change(cat, unrelated, due, since=timed) == due + timedelta(minutes=1)


def test_a_state_dropped_as_another_is_added_is_a_changed_input() -> None:
    # As many states as before, but not the same ones: the segment whose state
    # went is looked at again, and its lapse (sooner than the old answer) found.
    cart_or_lapsed = {
        "any": [{"event": "Added To Cart", "window": "1h", "op": "gte", "value": 1}, LAPSED]
    }
    cat = catalog(definition("s2", S2), definition("cart-or-lapsed", cart_or_lapsed))
    now = T0 + timedelta(days=1)
    cart = Event(
        workspace_id="ws",
        message_id="cart",
        type="track",
        event="Added To Cart",
        timestamp=now - timedelta(minutes=10),
        received_at=now,
        source="test",
    )
    carted, _ = update_memberships(cat, blank(), blank(), cart, now)
    looked = viewed(cat, view(now))
    assert len(carted.aggregates) == len(looked.aggregates) == 1
    assert carted.aggregates.keys() != looked.aggregates.keys()
    ordered = now - timedelta(days=30) + timedelta(minutes=5)
    trait = TraitValue(value=ordered.isoformat(), source="test", observed_at=now, received_at=now)
    traits = {"last_order_at": trait}
    profile = msgspec_replace(looked, traits=traits)
    since = msgspec_replace(
        carted, traits=traits, segments=profile.segments, segment_timer_at=now + HOUR
    )
    assert next_membership_change(cat, profile, now) == now + timedelta(minutes=5)
    assert next_membership_change(cat, profile, now, since=since) == now + timedelta(minutes=5)
