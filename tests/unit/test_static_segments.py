"""Static segments in the core: entries, upload events, applying them, and keeping members.

Pure functions only: catalogs built from definitions, profiles built by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from rapport.core.identity import IdentityRules, scan_identifiers
from rapport.core.model import Event, Identifier, Membership, Profile, TraitValue
from rapport.core.segments import (
    SegmentCatalog,
    SegmentDefinition,
    reevaluate_segments,
    refresh_memberships,
    update_memberships,
)
from rapport.core.static_segments import (
    ADD,
    MEMBER_ADDED,
    REMOVE,
    STATIC_SEGMENT_SOURCE,
    EntryError,
    InvalidUpload,
    StaticUpload,
    apply_upload,
    carry_static_memberships,
    parse_entry,
    read_upload,
    upload_event,
    upload_message_id,
    upload_types,
)
from tests.unit.segment_helpers import active_segment

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WS = "ws"
RULES = IdentityRules(
    identifier_traits={"email": "email", "phone": "phone", "loyalty": "loyalty_id"}
)


def static(
    segment_id: str = "vip", version: int = 1, created_at: datetime = T0
) -> SegmentDefinition:
    return SegmentDefinition(
        workspace_id=WS,
        id=segment_id,
        name=segment_id,
        kind="static",
        condition=None,
        version=version,
        status="active",
        created_at=created_at,
        updated_at=created_at,
    )


def dynamic(segment_id: str, condition: Any, version: int = 1) -> SegmentDefinition:
    return active_segment(segment_id, condition, T0, workspace_id=WS, version=version)


GOLD_VIP = dynamic("gold-vip", {"all": [{"in_segment": "vip"}, {"trait": "plan", "op": "exists"}]})
NOT_VIP = dynamic("not-vip", {"not": {"in_segment": "vip"}})


def entry(
    action: str, identifier: Identifier, *, version: int = 1, upload_id: str = "u1"
) -> StaticUpload:
    return StaticUpload(
        segment_id="vip",
        version=version,
        action=action,
        identifier=identifier,
        upload_id=upload_id,
    )


def event_of(upload: StaticUpload, at: datetime = T0 + timedelta(minutes=1)) -> Event:
    return upload_event(WS, upload, RULES, at, uploaded_by="admin:k1")


def member(profile_id: str, *memberships: tuple[str, int, datetime], **fields: Any) -> Profile:
    return Profile(
        id=profile_id,
        workspace_id=WS,
        created_at=T0,
        updated_at=T0,
        identifiers=[Identifier("user_id", profile_id)],
        segments={s: Membership(version=v, entered_at=at) for s, v, at in memberships},
        **fields,
    )


def apply(
    catalog: SegmentCatalog,
    upload: StaticUpload,
    profiles: dict[str, Profile] | None = None,
    now: datetime = T0 + timedelta(minutes=2),
) -> Any:
    event = event_of(upload)
    profiles = profiles or {}
    owners = {i: p.id for p in profiles.values() for i in p.identifiers}
    return apply_upload(
        catalog, event, scan_identifiers(event, RULES), owners, profiles, now, lambda: "prof_new"
    )


# -- entries -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"type": "email", "value": " Dana@Example.COM "}, Identifier("email", "dana@example.com")),
        ("email:dana@example.com", Identifier("email", "dana@example.com")),
        ({"type": "user_id", "value": 42}, Identifier("user_id", "42")),
        ("user_id:a:b", Identifier("user_id", "a:b")),
        ("phone:+33 6 12 34 56 78", Identifier("phone", "+33612345678")),
        ("loyalty_id:L-7", Identifier("loyalty_id", "L-7")),
        ("anonymous_id:abc", Identifier("anonymous_id", "abc")),
    ],
)
def test_entries_become_normalised_identifiers(raw: Any, expected: Identifier) -> None:
    assert parse_entry(raw, RULES) == expected


@pytest.mark.parametrize(
    ("raw", "path", "code"),
    [
        ("no-colon", "", "invalid_entry"),
        (":x", "", "invalid_entry"),
        ("email:", "", "invalid_entry"),
        (17, "", "invalid_entry"),
        (None, "", "invalid_entry"),
        ("shoe:42", "", "unknown_identifier_type"),
        ("email:not-an-email", "", "invalid_identifier"),
        ("user_id:null", "", "invalid_identifier"),
        ({"type": "email"}, ".value", "invalid_identifier"),
        ({"type": "email", "value": None}, ".value", "invalid_identifier"),
        ({"type": "email", "value": ["a@b.c"]}, ".value", "invalid_identifier"),
        ({"type": 3, "value": "x"}, ".type", "invalid_identifier_type"),
        ({"value": "x"}, ".type", "invalid_identifier_type"),
        ({"type": "shoe", "value": "42"}, ".type", "unknown_identifier_type"),
        ({"type": "email", "value": "a@b.c", "colour": "red"}, ".colour", "unknown_field"),
        ({"type": "id", "value": "prof_1"}, ".type", "unknown_identifier_type"),
    ],
)
def test_bad_entries_say_where_and_why(raw: Any, path: str, code: str) -> None:
    error = parse_entry(raw, RULES)
    assert isinstance(error, EntryError)
    assert (error.path, error.code) == (path, code)
    assert error.message


def test_upload_types_are_those_events_carry() -> None:
    assert upload_types(RULES) == ["anonymous_id", "email", "loyalty_id", "phone", "user_id"]


# -- events ----------------------------------------------------------------------


def test_message_ids_name_segment_version_action_identifier_and_upload() -> None:
    dana = Identifier("email", "dana@example.com")
    base = entry(ADD, dana)
    assert upload_message_id(base) == upload_message_id(entry(ADD, dana))
    others = {
        upload_message_id(entry(REMOVE, dana)),
        upload_message_id(entry(ADD, dana, version=2)),
        upload_message_id(entry(ADD, dana, upload_id="u2")),
        upload_message_id(entry(ADD, Identifier("email", "sam@example.com"))),
        upload_message_id(msgspec.structs.replace(base, segment_id="vip2")),
        upload_message_id(entry(ADD, Identifier("user_id", "dana@example.com"))),
    }
    assert upload_message_id(base) not in others and len(others) == 6
    assert all(len(m) < 100 for m in others)


@pytest.mark.parametrize(
    "identifier",
    [
        Identifier("email", "dana@example.com"),
        Identifier("user_id", "dana"),
        Identifier("anonymous_id", "a-1"),
        Identifier("loyalty_id", "L-7"),
    ],
)
def test_an_upload_event_carries_its_identifier_where_events_do(identifier: Identifier) -> None:
    upload = entry(ADD, identifier)
    event = event_of(upload)
    assert (event.source, event.type, event.event) == (STATIC_SEGMENT_SOURCE, "track", MEMBER_ADDED)
    assert scan_identifiers(event, RULES).identifiers == (identifier,)
    decoded = msgspec.json.decode(msgspec.json.encode(event), type=Event)
    assert read_upload(decoded) == upload
    assert decoded.properties["uploaded_by"] == "admin:k1"


def test_malformed_upload_events_are_refused() -> None:
    event = event_of(entry(ADD, Identifier("user_id", "dana")))
    with pytest.raises(InvalidUpload):
        read_upload(msgspec.structs.replace(event, properties={"segment_id": "vip"}))
    with pytest.raises(InvalidUpload):
        read_upload(
            msgspec.structs.replace(event, properties={**event.properties, "action": "replace"})
        )


# -- applying an upload ------------------------------------------------------------


def test_an_add_for_an_unknown_identifier_creates_the_profile_and_readers_follow() -> None:
    catalog = SegmentCatalog([static(), NOT_VIP, GOLD_VIP])
    now = T0 + timedelta(minutes=2)
    outcome = apply(catalog, entry(ADD, Identifier("email", "dana@example.com")), now=now)
    profile = outcome.profile
    assert outcome.refused is None
    assert profile.id == "prof_new"
    assert profile.identifiers == [Identifier("email", "dana@example.com")]
    assert outcome.attached == (Identifier("email", "dana@example.com"),)
    assert profile.segments == {"vip": Membership(version=1, entered_at=now)}
    # A new profile is evaluated against every segment: "not-vip" reads the
    # list she is on, "gold-vip" needs a plan she lacks.
    assert [(c.segment_id, c.entered) for c in outcome.changes] == [("vip", True)]
    assert (profile.event_count, profile.last_seen, profile.traits) == (0, None, {})


def test_an_add_for_a_known_profile_enters_and_re_evaluates_its_readers() -> None:
    catalog = SegmentCatalog([static(), NOT_VIP, GOLD_VIP])
    gold = TraitValue(value="gold", source="x", observed_at=T0, received_at=T0)
    dana = member("dana", ("not-vip", 1, T0), traits={"plan": gold})
    outcome = apply(catalog, entry(ADD, Identifier("user_id", "dana")), {"dana": dana})
    assert outcome.attached == ()
    assert sorted(outcome.profile.segments) == ["gold-vip", "vip"]
    assert [(c.segment_id, c.entered) for c in outcome.changes] == [
        ("vip", True),
        ("gold-vip", True),
        ("not-vip", False),
    ]
    again = apply(catalog, entry(ADD, Identifier("user_id", "dana")), {"dana": outcome.profile})
    assert again.profile == outcome.profile and again.changes == []


def test_a_remove_leaves_and_an_unknown_identifier_changes_nothing() -> None:
    catalog = SegmentCatalog([static(), NOT_VIP])
    dana = member("dana", ("vip", 1, T0))
    outcome = apply(catalog, entry(REMOVE, Identifier("user_id", "dana")), {"dana": dana})
    assert outcome.profile.segments == {
        "not-vip": Membership(version=1, entered_at=T0 + timedelta(minutes=2))
    }
    assert [(c.segment_id, c.version, c.entered) for c in outcome.changes] == [
        ("vip", 1, False),
        ("not-vip", 1, True),
    ]
    not_member = apply(
        catalog, entry(REMOVE, Identifier("user_id", "dana")), {"dana": member("dana")}
    )
    assert not_member.changes == [] and not_member.profile is not None
    unknown = apply(catalog, entry(REMOVE, Identifier("user_id", "nobody")), {"dana": dana})
    assert (unknown.profile, unknown.changes, unknown.refused) == (None, [], None)


def test_an_add_is_refused_when_its_segment_is_gone_dynamic_or_created_again() -> None:
    upload = entry(ADD, Identifier("user_id", "dana"))
    deleted = apply(SegmentCatalog([]), upload)
    assert deleted.profile is None and "no longer exists" in (deleted.refused or "")
    made_dynamic = apply(
        SegmentCatalog([dynamic("vip", {"trait": "plan", "op": "exists"})]), upload
    )
    assert "not a static segment" in (made_dynamic.refused or "")
    # The upload (T0 + 1 min) was for the segment deleted before this one was created.
    recreated = apply(
        SegmentCatalog([static(version=3, created_at=T0 + timedelta(minutes=1, seconds=1))]), upload
    )
    assert "created again" in (recreated.refused or "")
    # A remove of a list that is gone changes nothing: the gone rule makes
    # members leave, and the id may name another segment by now.
    dana = member("dana", ("vip", 1, T0))
    remove = entry(REMOVE, Identifier("user_id", "dana"))
    for catalog in (
        SegmentCatalog([]),
        SegmentCatalog([dynamic("vip", {"not": {"trait": "plan", "op": "exists"}})]),
        SegmentCatalog([static(version=3, created_at=T0 + timedelta(hours=1))]),
    ):
        removed = apply(catalog, remove, {"dana": dana})
        assert removed.refused is None and removed.changes == []
        assert removed.profile is dana


def test_an_add_records_the_current_version_never_before_the_creation() -> None:
    created = T0 + timedelta(hours=1)
    catalog = SegmentCatalog([static(version=2, created_at=created)])
    outcome = apply(
        catalog,
        entry(ADD, Identifier("user_id", "dana")),
        now=T0 + timedelta(minutes=5),
        profiles=None,
    )
    # The upload event is at T0 + 1 min, before this creation: refused.
    assert outcome.refused is not None
    upload = entry(ADD, Identifier("user_id", "dana"))
    event = event_of(upload, at=created + timedelta(seconds=1))
    # The processor's clock lags the API's: the membership is still dated at the creation.
    late = apply_upload(
        catalog,
        event,
        scan_identifiers(event, RULES),
        {},
        {},
        created - timedelta(seconds=3),
        lambda: "p",
    )
    assert late.profile.segments["vip"] == Membership(version=2, entered_at=created)
    assert catalog.keeps("vip", late.profile.segments["vip"])


def test_an_identifier_the_rules_no_longer_know_is_refused() -> None:
    event = event_of(entry(ADD, Identifier("loyalty_id", "L-7")))
    claims = scan_identifiers(event, IdentityRules())
    outcome = apply_upload(SegmentCatalog([static()]), event, claims, {}, {}, T0, lambda: "p")
    assert outcome.profile is None and "identity rules" in (outcome.refused or "")


# -- streaming evaluation keeps static memberships ------------------------------------


def test_evaluation_keeps_static_members_and_lets_deleted_or_older_ones_go() -> None:
    recreated_at = T0 + timedelta(days=1)
    catalog = SegmentCatalog(
        [static(), static("again", version=3, created_at=recreated_at), NOT_VIP]
    )
    assert catalog.static.keys() == {"vip", "again"} and list(catalog.versions) == ["not-vip"]
    profile = member(
        "dana",
        ("vip", 1, T0),
        ("again", 1, T0),  # entered the "again" that was deleted
        ("gone", 1, T0),  # a static segment since deleted
    )
    event = Event(
        workspace_id=WS,
        message_id="m1",
        type="identify",
        timestamp=T0,
        received_at=T0,
        source="write_key:k",
        user_id="dana",
    )
    now = recreated_at + timedelta(hours=1)
    after, changes = update_memberships(catalog, profile, profile, event, now)
    assert list(after.segments) == ["vip"]
    assert [(c.segment_id, c.entered) for c in changes] == [("again", False), ("gone", False)]

    refreshed, changes = refresh_memberships(catalog, profile, now)
    assert list(refreshed.segments) == ["vip"] and len(changes) == 2
    # What a backfill of the static segment (created or renamed) does: nothing.
    same, changes = reevaluate_segments(catalog, after, ["vip"], now)
    assert same is after and changes == []
    gone, changes = reevaluate_segments(SegmentCatalog([NOT_VIP]), after, ["vip"], now)
    assert gone.segments == {} and [(c.segment_id, c.entered) for c in changes] == [("vip", False)]


def test_a_merged_profile_stays_on_the_lists_the_absorbed_one_was_on() -> None:
    catalog = SegmentCatalog([static(), static("press"), NOT_VIP])
    now = T0 + timedelta(hours=1)
    winner = member("a", ("press", 1, T0), ("not-vip", 1, T0))
    loser = member("b", ("vip", 1, T0), ("press", 1, T0), ("not-vip", 1, T0), ("deleted", 1, T0))
    merged, changes = carry_static_memberships(catalog, winner, [loser], now)
    assert merged.segments["vip"] == Membership(version=1, entered_at=now)
    assert merged.segments["press"] == winner.segments["press"]
    assert "deleted" not in merged.segments
    assert [(c.segment_id, c.entered) for c in changes] == [("vip", True)]
    unchanged, nothing = carry_static_memberships(catalog, winner, [member("c")], now)
    assert unchanged is winner and nothing == []
