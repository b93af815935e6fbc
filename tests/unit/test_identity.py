"""Identity resolution: extraction of identifiers and the pure ``resolve`` decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest

from rapport.core.identity import (
    JUNK_VALUES,
    EventClaims,
    IdentityRules,
    Resolution,
    alias_candidates,
    event_claims,
    extract_identifiers,
    normalize_identifier,
    resolve,
    scan_identifiers,
)
from rapport.core.model import Event, Identifier, Profile

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RULES = IdentityRules()


def make_event(type: str = "track", **fields: Any) -> Event:
    fields.setdefault("message_id", "m1")
    return Event(
        workspace_id="ws", type=type, timestamp=T0, received_at=T0, source="write_key:k", **fields
    )


def U(value: str) -> Identifier:
    return Identifier("user_id", value)


def A(value: str) -> Identifier:
    return Identifier("anonymous_id", value)


def E(value: str) -> Identifier:
    return Identifier("email", value)


def profile(pid: str, *identifiers: Identifier, age_days: int = 0) -> Profile:
    created = T0 - timedelta(days=age_days)
    return Profile(
        id=pid,
        workspace_id="ws",
        created_at=created,
        updated_at=created,
        identifiers=sorted(identifiers),
    )


def run_resolve(
    event: Event, *profiles: Profile, rules: IdentityRules = RULES
) -> tuple[Resolution, EventClaims]:
    owners = {i: p.id for p in profiles for i in p.identifiers}
    claims = event_claims(event, rules, owners)
    ids = (f"new_{n}" for n in count(1))
    by_id = {p.id: p for p in profiles}
    return resolve(claims, owners, by_id, rules, T0, lambda: next(ids)), claims


def reasons(resolution: Resolution) -> dict[Identifier, tuple[str, str | None]]:
    return {r.identifier: (r.reason, r.owner) for r in resolution.refused}


# -- extraction ----------------------------------------------------------------


def test_extracts_ids_and_normalised_identifier_traits() -> None:
    event = make_event(
        "identify",
        user_id="u-1",
        anonymous_id="anon-1",
        traits={"email": "  Dana@Example.COM ", "phone": "+1 (555) 010-2030", "plan": "pro"},
    )
    assert extract_identifiers(event, RULES) == [
        U("u-1"),
        A("anon-1"),
        E("dana@example.com"),
        Identifier("phone", "+15550102030"),
    ]


def test_context_traits_count_for_any_event_but_group_traits_do_not() -> None:
    track = make_event("track", anonymous_id="a", context={"traits": {"email": "x@y.io"}})
    assert extract_identifiers(track, RULES) == [A("a"), E("x@y.io")]
    group = make_event("group", user_id="u", group_id="g", traits={"email": "billing@acme.io"})
    assert extract_identifiers(group, RULES) == [U("u")]
    # Top-level traits on a track event are not the person's traits either.
    odd = make_event("track", anonymous_id="a", traits={"email": "x@y.io"})
    assert extract_identifiers(odd, RULES) == [A("a")]


def test_configured_identifier_traits_and_numeric_values() -> None:
    rules = IdentityRules.from_config(
        identifier_traits={"email": "email", "loyalty_id": "loyalty_id"}, caps={}
    )
    event = make_event("identify", user_id="42", traits={"loyalty_id": 1234, "phone": "555"})
    assert extract_identifiers(event, rules) == [U("42"), Identifier("loyalty_id", "1234")]
    event = make_event("identify", traits={"loyalty_id": " L-7 "})
    assert extract_identifiers(event, rules) == [Identifier("loyalty_id", "L-7")]


@pytest.mark.parametrize("junk", sorted(JUNK_VALUES))
def test_junk_values_are_never_identifiers(junk: str) -> None:
    spelled = f"  {junk.upper()} "
    event = make_event(
        "identify", user_id=spelled, anonymous_id=spelled, traits={"loyalty_id": spelled}
    )
    rules = IdentityRules(identifier_traits={"loyalty_id": "loyalty_id"})
    scan = scan_identifiers(event, rules)
    assert scan.identifiers == ()
    assert [r.reason for r in scan.refused] == ["junk"] * 3


@pytest.mark.parametrize(
    ("trait", "raw"),
    [
        ("email", "not-an-email"),
        ("email", "two@at@signs"),
        ("email", "spaces in@x.io"),
        ("phone", "call me"),
        ("phone", "000-000-0000"),
        ("email", True),
        ("email", {"nested": "x@y.io"}),
        ("email", "x" * 600 + "@y.io"),
    ],
)
def test_malformed_values_are_refused_as_invalid(trait: str, raw: Any) -> None:
    scan = scan_identifiers(make_event("identify", anonymous_id="a", traits={trait: raw}), RULES)
    assert scan.identifiers == (A("a"),)
    assert [r.reason for r in scan.refused] == ["invalid"]


def test_null_identifier_traits_are_ignored_not_refused() -> None:
    scan = scan_identifiers(make_event("identify", anonymous_id="a", traits={"email": None}), RULES)
    assert scan.identifiers == (A("a"),)
    assert scan.refused == ()


def test_normalize_identifier_spells_lookups_like_storage() -> None:
    assert normalize_identifier(E(" Dana@X.io"), RULES) == E("dana@x.io")
    assert normalize_identifier(Identifier("phone", "+1 555-0102"), RULES) == Identifier(
        "phone", "+15550102"
    )
    assert normalize_identifier(U(" u-1 "), RULES) == U("u-1")


def test_alias_candidates_name_both_id_kinds() -> None:
    alias = make_event("alias", user_id="u-new", previous_id="old")
    assert alias_candidates(alias, RULES) == [U("old"), A("old")]
    assert alias_candidates(make_event("alias", user_id="u", previous_id="null"), RULES) == []
    assert alias_candidates(make_event("track", anonymous_id="a", previous_id="x"), RULES) == []


def test_rules_refuse_a_user_id_cap_other_than_one() -> None:
    with pytest.raises(ValueError, match="user_id cap"):
        IdentityRules.from_config(identifier_traits={}, caps={"user_id": 2})
    with pytest.raises(ValueError, match="at least 1"):
        IdentityRules(caps={"email": 0})
    with pytest.raises(ValueError, match="lower-case"):
        IdentityRules(junk_values=frozenset({"NULL"}))


# -- resolution ----------------------------------------------------------------


def test_nothing_known_makes_a_new_profile_with_every_identifier() -> None:
    res, _ = run_resolve(
        make_event("identify", user_id="u", anonymous_id="a", traits={"email": "d@x.io"})
    )
    assert res.created and res.profile_id == "new_1"
    assert res.attached == (U("u"), A("a"), E("d@x.io"))
    assert res.merges == () and res.refused == ()


def test_known_identifier_attaches_the_new_ones() -> None:
    p = profile("p1", A("a"))
    res, _ = run_resolve(make_event("identify", anonymous_id="a", traits={"email": "d@x.io"}), p)
    assert (res.profile_id, res.created) == ("p1", False)
    assert res.attached == (E("d@x.io"),)
    assert res.merges == ()


def test_a_new_id_is_only_drawn_when_needed() -> None:
    p = profile("p1", A("a"), U("u"))
    owners = {A("a"): "p1", U("u"): "p1"}
    claims = event_claims(make_event(user_id="u", anonymous_id="a"), RULES, owners)

    def no_new_id() -> str:
        raise AssertionError("a known customer must not get a new profile id")

    res = resolve(claims, owners, {"p1": p}, RULES, T0, no_new_id)
    assert res.profile_id == "p1" and res.attached == () and res.merges == ()


def test_anonymous_profile_merges_into_the_identified_one() -> None:
    anonymous = profile("p-anon", A("a"), age_days=10)  # older
    identified = profile("p-user", U("u"), E("d@x.io"), age_days=1)
    res, _ = run_resolve(
        make_event("identify", user_id="u", anonymous_id="a"), anonymous, identified
    )
    # The user id holder wins even though the anonymous profile is older.
    assert res.profile_id == "p-user"
    assert [(m.winner, m.loser) for m in res.merges] == [("p-user", "p-anon")]
    merge = res.merges[0]
    assert merge.message_id == "m1" and merge.merged_at == T0
    assert "anonymous_id:a" in merge.reason
    assert res.attached == ()


def test_without_user_ids_the_oldest_profile_wins_then_the_smaller_id() -> None:
    older = profile("p-b", A("a"), age_days=5)
    newer = profile("p-a", E("d@x.io"), age_days=1)
    res, _ = run_resolve(
        make_event("identify", anonymous_id="a", traits={"email": "d@x.io"}), newer, older
    )
    assert res.profile_id == "p-b"
    assert [m.loser for m in res.merges] == ["p-a"]

    tie_1 = profile("p-2", A("a"))
    tie_2 = profile("p-1", E("d@x.io"))
    res, _ = run_resolve(
        make_event("identify", anonymous_id="a", traits={"email": "d@x.io"}), tie_1, tie_2
    )
    assert res.profile_id == "p-1"


def test_two_user_ids_never_merge_the_event_goes_to_its_user_id() -> None:
    dana = profile("p-dana", U("dana"), A("shared-tablet"))
    res, _ = run_resolve(make_event("identify", user_id="sam", anonymous_id="shared-tablet"), dana)
    assert res.created and res.profile_id == "new_1"
    assert res.attached == (U("sam"),)
    assert res.merges == ()
    assert reasons(res) == {A("shared-tablet"): ("conflicting_user_id", "p-dana")}


def test_known_user_id_keeps_its_profile_against_another_user_ids_identifier() -> None:
    dana = profile("p-dana", U("dana"))
    sam = profile("p-sam", U("sam"), E("family@x.io"))
    res, _ = run_resolve(
        make_event("identify", user_id="dana", traits={"email": "family@x.io"}), dana, sam
    )
    assert res.profile_id == "p-dana"
    assert res.merges == ()
    assert reasons(res) == {E("family@x.io"): ("conflicting_user_id", "p-sam")}


def test_anonymous_event_touching_two_user_ids_picks_one_and_refuses_the_other() -> None:
    dana = profile("p-dana", U("dana"), A("a1"), age_days=3)
    sam = profile("p-sam", U("sam"), E("sam@x.io"), age_days=1)
    loose = profile("p-loose", Identifier("phone", "+15550102"), age_days=9)
    event = make_event(
        "identify", anonymous_id="a1", traits={"email": "sam@x.io", "phone": "+1 555 0102"}
    )
    res, _ = run_resolve(event, dana, sam, loose)
    assert res.profile_id == "p-dana"  # oldest user id holder
    assert [m.loser for m in res.merges] == ["p-loose"]
    assert reasons(res) == {E("sam@x.io"): ("conflicting_user_id", "p-sam")}


def test_per_type_cap_refuses_one_more_identifier() -> None:
    emails = [E(f"e{n}@x.io") for n in range(5)]
    full = profile("p1", A("a"), *emails)
    res, _ = run_resolve(
        make_event("identify", anonymous_id="a", traits={"email": "e5@x.io"}), full
    )
    assert res.profile_id == "p1"
    assert res.attached == ()
    assert reasons(res) == {E("e5@x.io"): ("cap_reached", None)}


def test_a_merge_that_would_exceed_a_cap_is_refused() -> None:
    rules = IdentityRules.from_config(identifier_traits={"email": "email"}, caps={"email": 2})
    winner = profile("p-user", U("u"), E("e1@x.io"), E("e2@x.io"))
    other = profile("p-other", A("a"), E("e3@x.io"))
    res, _ = run_resolve(make_event(user_id="u", anonymous_id="a"), winner, other, rules=rules)
    assert res.profile_id == "p-user"
    assert res.merges == ()
    assert reasons(res) == {A("a"): ("cap_reached", "p-other")}


def test_junk_ids_are_refused_and_do_not_link_anyone() -> None:
    p = profile("p1", A("a"))
    res, claims = run_resolve(make_event("identify", user_id="undefined", anonymous_id="null"), p)
    assert claims.identifiers == ()
    assert res.created and res.attached == ()
    assert {r.reason for r in res.refused} == {"junk"}


def test_alias_of_a_known_anonymous_id_merges_it_into_the_user() -> None:
    anonymous = profile("p-anon", A("old-anon"), age_days=3)
    user = profile("p-user", U("u"))
    alias = make_event("alias", user_id="u", previous_id="old-anon")
    res, claims = run_resolve(alias, anonymous, user)
    assert claims.identifiers == (U("u"), A("old-anon"))
    assert res.profile_id == "p-user"
    assert [m.loser for m in res.merges] == ["p-anon"]


def test_alias_of_an_unknown_previous_id_attaches_it_as_an_anonymous_id() -> None:
    user = profile("p-user", U("u"))
    res, _ = run_resolve(make_event("alias", user_id="u", previous_id="cookie-9"), user)
    assert res.profile_id == "p-user"
    assert res.attached == (A("cookie-9"),)


def test_alias_between_two_user_ids_is_refused() -> None:
    old = profile("p-old", U("old-uid"))
    new = profile("p-new", U("new-uid"))
    res, _ = run_resolve(make_event("alias", user_id="new-uid", previous_id="old-uid"), old, new)
    assert res.profile_id == "p-new"
    assert res.merges == ()
    assert reasons(res) == {U("old-uid"): ("conflicting_user_id", "p-old")}


def test_junk_previous_id_is_refused() -> None:
    res, _ = run_resolve(make_event("alias", user_id="u", previous_id="undefined"))
    assert [r.reason for r in res.refused] == ["junk"]
    assert res.attached == (U("u"),)


def test_event_addressing_a_profile_lands_there() -> None:
    target = profile("p-target", A("a"))
    other = profile("p-other", U("u"))
    event = make_event("identify", profile_id="p-target", traits={"plan": "gold"})
    res, _ = run_resolve(event, target, other)
    assert (res.profile_id, res.created, res.merges) == ("p-target", False, ())
    # With an identifier that belongs to an identified profile, they merge and
    # the identified profile survives, carrying the event.
    event = make_event("identify", profile_id="p-target", traits={"email": "d@x.io"})
    holder = profile("p-holder", U("u2"), E("d@x.io"))
    res, _ = run_resolve(event, target, holder)
    assert res.profile_id == "p-holder"
    assert [m.loser for m in res.merges] == ["p-target"]
    assert res.merges[0].reason == "identify addressed p-target directly"


def test_an_addressed_profile_with_a_user_id_refuses_another_user_id() -> None:
    dana = profile("p-dana", U("dana"))
    res, _ = run_resolve(make_event("identify", profile_id="p-dana", user_id="sam"), dana)
    assert (res.profile_id, res.created, res.attached) == ("p-dana", False, ())
    assert reasons(res) == {U("sam"): ("conflicting_user_id", None)}
