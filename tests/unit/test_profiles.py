"""Profile rules: traits and consent with provenance, newer-wins, merges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rapport.core.model import ConsentValue, Event, Identifier, Profile, TraitValue
from rapport.core.profiles import (
    apply_event,
    attach_identifiers,
    merge_profiles,
    new_profile,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def make_event(type: str = "identify", minute: int = 0, **fields: Any) -> Event:
    fields.setdefault("message_id", f"m{minute}")
    return Event(
        workspace_id="ws",
        type=type,
        timestamp=at(minute),
        received_at=at(minute + 1),
        source="write_key:k1",
        **fields,
    )


def consent(**prefs: Any) -> dict[str, Any]:
    return {"consent": {"categoryPreferences": prefs}}


def test_identify_traits_carry_provenance() -> None:
    p = apply_event(
        new_profile("p1", "ws", T0),
        make_event(minute=5, traits={"plan": "pro", "name": "Dana"}),
        NOW,
    )
    assert p.traits["plan"] == TraitValue(
        value="pro",
        source="write_key:k1",
        observed_at=at(5),
        received_at=at(6),
        consent_basis=None,
        message_id="m5",
    )
    assert p.traits["name"].value == "Dana"
    assert (p.first_seen, p.last_seen, p.event_count, p.updated_at) == (at(5), at(5), 1, NOW)


def test_context_traits_apply_on_any_event_and_identify_traits_win_over_them() -> None:
    p = new_profile("p1", "ws", T0)
    p = apply_event(p, make_event("track", 1, event="Viewed", context={"traits": {"tier": 1}}), NOW)
    assert p.traits["tier"].value == 1
    p = apply_event(
        p, make_event("identify", 2, traits={"tier": 3}, context={"traits": {"tier": 2}}), NOW
    )
    assert p.traits["tier"].value == 3


def test_group_traits_describe_the_group_not_the_person() -> None:
    p = apply_event(
        new_profile("p1", "ws", T0),
        make_event("group", 1, group_id="acme", traits={"name": "Acme Inc", "employees": 40}),
        NOW,
    )
    assert p.traits == {}
    assert p.event_count == 1


def test_an_older_observation_never_overwrites_a_newer_one() -> None:
    p = new_profile("p1", "ws", T0)
    p = apply_event(p, make_event(minute=10, traits={"plan": "gold"}), NOW)
    late = apply_event(p, make_event(minute=3, traits={"plan": "free", "city": "Lyon"}), NOW)
    assert late.traits["plan"].value == "gold"
    assert late.traits["plan"].message_id == "m10"
    # A trait the profile did not have yet is still learnt from a late event.
    assert late.traits["city"].value == "Lyon"
    # Activity spans the late event too.
    assert (late.first_seen, late.last_seen, late.event_count) == (at(3), at(10), 2)
    # Same observation time: the later-processed event wins.
    same = apply_event(late, make_event(minute=10, message_id="m10b", traits={"plan": "x"}), NOW)
    assert same.traits["plan"].value == "x"


def test_apply_event_leaves_its_input_untouched() -> None:
    p = apply_event(new_profile("p1", "ws", T0), make_event(minute=1, traits={"a": 1}), NOW)
    apply_event(p, make_event(minute=2, traits={"a": 2, "b": 3}, context=consent(email=True)), NOW)
    assert set(p.traits) == {"a"} and p.traits["a"].value == 1
    assert p.consent == {} and p.event_count == 1


def test_consent_is_recorded_with_provenance_and_newer_wins() -> None:
    p = new_profile("p1", "ws", T0)
    p = apply_event(
        p, make_event("track", 10, context=consent(marketing=True, analytics=False)), NOW
    )
    assert p.consent["marketing"] == ConsentValue(
        granted=True,
        source="write_key:k1",
        observed_at=at(10),
        received_at=at(11),
        message_id="m10",
    )
    assert p.consent["analytics"].granted is False
    p = apply_event(p, make_event("track", 5, context=consent(marketing=False)), NOW)
    assert p.consent["marketing"].granted is True  # older withdrawal arrived late
    p = apply_event(p, make_event("track", 20, context=consent(marketing=False)), NOW)
    assert p.consent["marketing"].granted is False


def test_consent_values_that_are_not_booleans_are_ignored() -> None:
    p = apply_event(
        new_profile("p1", "ws", T0),
        make_event("track", 1, context=consent(sms="yes", email=1, push=True)),
        NOW,
    )
    assert set(p.consent) == {"push"}
    bad_shape = make_event("track", 2, context={"consent": "all"})
    assert apply_event(p, bad_shape, NOW).consent == p.consent


def test_consent_basis_of_traits() -> None:
    p = new_profile("p1", "ws", T0)
    # Unknown consent: the basis is unknown, not "nothing granted".
    p = apply_event(p, make_event(minute=1, traits={"a": 1}), NOW)
    assert p.traits["a"].consent_basis is None
    # The event's own preferences are the basis of what it carries.
    p = apply_event(
        p,
        make_event(minute=2, traits={"b": 1}, context=consent(marketing=True, ads=False, a=True)),
        NOW,
    )
    assert p.traits["b"].consent_basis == ["a", "marketing"]
    # Without preferences on the event, the profile's consent is the basis.
    p = apply_event(p, make_event(minute=3, traits={"c": 1}), NOW)
    assert p.traits["c"].consent_basis == ["a", "marketing"]
    p = apply_event(p, make_event("track", 4, context=consent(marketing=False, a=False)), NOW)
    p = apply_event(p, make_event(minute=5, traits={"d": 1}), NOW)
    assert p.traits["d"].consent_basis == []


def test_attach_identifiers_keeps_them_sorted_and_unique() -> None:
    p = new_profile("p1", "ws", T0)
    p = attach_identifiers(p, [Identifier("user_id", "u"), Identifier("email", "d@x.io")], NOW)
    p = attach_identifiers(p, [Identifier("anonymous_id", "a"), Identifier("email", "d@x.io")], NOW)
    assert p.identifiers == [
        Identifier("anonymous_id", "a"),
        Identifier("email", "d@x.io"),
        Identifier("user_id", "u"),
    ]
    assert attach_identifiers(p, [Identifier("user_id", "u")], at(99)) is p


def _trait(value: Any, minute: int) -> TraitValue:
    return TraitValue(
        value=value, source="s", observed_at=at(minute), received_at=at(minute), message_id="m"
    )


def _consent(granted: bool, minute: int) -> ConsentValue:
    return ConsentValue(granted=granted, source="s", observed_at=at(minute), received_at=at(minute))


def test_merge_unions_everything_and_newer_observations_win() -> None:
    winner = Profile(
        id="p-win",
        workspace_id="ws",
        created_at=T0,
        updated_at=T0,
        identifiers=[Identifier("user_id", "u")],
        traits={"plan": _trait("gold", 10), "city": _trait("Lyon", 1), "same": _trait("w", 5)},
        consent={"email": _consent(True, 10), "sms": _consent(False, 1)},
        merged_from=["p-old"],
        first_seen=at(5),
        last_seen=at(10),
        event_count=3,
    )
    loser = Profile(
        id="p-lose",
        workspace_id="ws",
        created_at=at(-100),
        updated_at=T0,
        identifiers=[Identifier("anonymous_id", "a"), Identifier("email", "d@x.io")],
        traits={"plan": _trait("free", 2), "city": _trait("Paris", 7), "same": _trait("l", 5)},
        consent={"email": _consent(False, 2), "sms": _consent(True, 8), "push": _consent(True, 3)},
        merged_from=["p-older"],
        first_seen=at(1),
        last_seen=at(8),
        event_count=4,
    )
    merged = merge_profiles(winner, loser, NOW)
    assert merged.id == "p-win" and merged.created_at == T0
    assert merged.identifiers == [
        Identifier("anonymous_id", "a"),
        Identifier("email", "d@x.io"),
        Identifier("user_id", "u"),
    ]
    assert {k: v.value for k, v in merged.traits.items()} == {
        "plan": "gold",
        "city": "Paris",
        "same": "w",  # tie: the winner keeps its value
    }
    assert {k: v.granted for k, v in merged.consent.items()} == {
        "email": True,
        "sms": True,
        "push": True,
    }
    assert merged.merged_from == ["p-old", "p-lose", "p-older"]
    assert (merged.first_seen, merged.last_seen, merged.event_count) == (at(1), at(10), 7)
    assert merged.updated_at == NOW
    # Inputs are values: untouched.
    assert winner.traits["city"].value == "Lyon" and winner.event_count == 3


def test_merge_with_an_empty_profile_keeps_activity_dates() -> None:
    active = apply_event(new_profile("p1", "ws", T0), make_event(minute=4), NOW)
    empty = new_profile("p2", "ws", T0)
    for merged in (merge_profiles(active, empty, NOW), merge_profiles(empty, active, NOW)):
        assert (merged.first_seen, merged.last_seen, merged.event_count) == (at(4), at(4), 1)


def test_merge_refuses_nonsense() -> None:
    p = new_profile("p1", "ws", T0)
    with pytest.raises(ValueError, match="itself"):
        merge_profiles(p, p, NOW)
    with pytest.raises(ValueError, match="workspaces"):
        merge_profiles(p, new_profile("p2", "other", T0), NOW)
