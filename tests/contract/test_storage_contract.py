"""The ``Storage`` contract, run over every backend (see ``conftest.backend``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from rapport.core.model import (
    ConsentValue,
    Event,
    Identifier,
    MergeRecord,
    Profile,
    ProfileEvent,
    Rejection,
    TraitValue,
)
from rapport.storage.base import ApiKey, ProcessingBatch, Storage
from tests.contract.conftest import Backend

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NEW_YORK_WINTER = timezone(timedelta(hours=-5))
WS = "ws_a"
CONSUMER = "processor"
EMAIL = Identifier("email", "dana@example.com")
USER = Identifier("userId", "user_1")
ANON = Identifier("anonymousId", "anon_1")


def profile(profile_id: str, *, workspace_id: str = WS, **fields: object) -> Profile:
    fields = {"created_at": T0, "updated_at": T0, **fields}
    return Profile(id=profile_id, workspace_id=workspace_id, **fields)  # type: ignore[arg-type]


def timeline_event(offset: int, profile_id: str, *, workspace_id: str = WS) -> ProfileEvent:
    at = T0 + timedelta(minutes=offset)
    body = msgspec.json.encode(
        Event(
            workspace_id=workspace_id,
            message_id=f"m{offset}",
            type="track",
            event=f"Event {offset}",
            timestamp=at,
            received_at=at,
            source="write_key:key_1",
        )
    )
    return ProfileEvent(
        workspace_id=workspace_id,
        profile_id=profile_id,
        offset=offset,
        message_id=f"m{offset}",
        type="track",
        name=f"Event {offset}",
        timestamp=at,
        received_at=at,
        body=body,
    )


def batch(offset: int, **parts: object) -> ProcessingBatch:
    return ProcessingBatch(consumer=CONSUMER, offset=offset, **parts)  # type: ignore[arg-type]


def rich_profile() -> Profile:
    """A profile using every field, with provenance and non-UTC datetimes."""
    seen = datetime(2026, 2, 27, 9, 30, 15, 250000, tzinfo=NEW_YORK_WINTER)
    return Profile(
        id="prof_rich",
        workspace_id=WS,
        created_at=datetime(2026, 2, 1, 8, 0, tzinfo=NEW_YORK_WINTER),
        updated_at=seen,
        identifiers=[EMAIL, USER],
        traits={
            "email": TraitValue(
                value="dana@example.com",
                source="write_key:key_1",
                observed_at=seen,
                received_at=T0,
                consent_basis=["email_marketing", "analytics"],
                message_id="m-identify",
            ),
            "address": TraitValue(
                value={"city": "Lyon", "zip": "69001", "lines": ["1 rue X", None]},
                source="import:crm",
                observed_at=T0,
                received_at=T0,
            ),
            "vip": TraitValue(value=True, source="admin:key_2", observed_at=T0, received_at=T0),
        },
        consent={
            "email_marketing": ConsentValue(
                granted=True,
                source="write_key:key_1",
                observed_at=seen,
                received_at=T0,
                message_id="m-consent",
            ),
            "sms": ConsentValue(
                granted=False, source="admin:key_2", observed_at=T0, received_at=T0
            ),
        },
        merged_from=["prof_old"],
        first_seen=datetime(2026, 2, 1, 8, 0, tzinfo=NEW_YORK_WINTER),
        last_seen=seen,
        event_count=42,
    )


# -- workspaces and keys ---------------------------------------------------------


async def test_ensure_workspace_creates_once_then_returns_the_existing(backend: Backend) -> None:
    storage, _ = backend
    created = await storage.ensure_workspace("acme", "ws_1", T0)
    assert (created.id, created.name, created.created_at) == ("ws_1", "acme", T0)

    again = await storage.ensure_workspace("acme", "ws_2", T0 + timedelta(days=1))
    assert again == created
    assert await storage.get_workspace("ws_1") == created
    assert await storage.get_workspace("ws_2") is None

    other = await storage.ensure_workspace("globex", "ws_3", T0)
    assert other.id == "ws_3"
    assert await storage.get_workspace("ws_3") == other
    assert await storage.find_workspace("globex") == other
    assert await storage.find_workspace("acme") == created
    assert await storage.find_workspace("initech") is None


async def test_api_keys_are_found_by_hash_unless_revoked(backend: Backend) -> None:
    storage, _ = backend
    await storage.ensure_workspace("acme", WS, T0)
    write_key = ApiKey(
        id="key_1", workspace_id=WS, kind="write", key_hash="h" * 64, created_at=T0, name="web"
    )
    secret_key = ApiKey(
        id="key_2", workspace_id=WS, kind="secret", key_hash="s" * 64, created_at=T0
    )
    revoked = ApiKey(
        id="key_3",
        workspace_id=WS,
        kind="write",
        key_hash="r" * 64,
        created_at=T0,
        revoked_at=T0 + timedelta(hours=1),
    )
    for key in (write_key, secret_key, revoked):
        await storage.create_api_key(key)

    assert await storage.find_api_key("h" * 64) == write_key
    assert await storage.find_api_key("s" * 64) == secret_key
    assert await storage.find_api_key("r" * 64) is None
    assert await storage.find_api_key("x" * 64) is None


# -- rejections ------------------------------------------------------------------


def rejection(n: int, *, workspace_id: str = WS) -> Rejection:
    return Rejection(
        workspace_id=workspace_id,
        received_at=T0 + timedelta(seconds=n),
        code="invalid_field",
        message=f"problem {n}",
        field="properties.revenue" if n % 2 else None,
        index=n,
        message_id=f"m{n}" if n % 2 else None,
        source="write_key:key_1",
        payload='{"type": "track"}',
    )


async def test_rejections_are_listed_newest_first_and_paged(backend: Backend) -> None:
    storage, _ = backend
    await storage.record_rejections([rejection(n) for n in range(3)])
    await storage.record_rejections([rejection(99, workspace_id="ws_other")])
    await storage.record_rejections([rejection(n) for n in range(3, 5)])

    first = await storage.list_rejections(WS, limit=2)
    assert [r.message for r in first] == ["problem 4", "problem 3"]
    assert first[0].id is not None and first[1].id is not None
    assert first[0].id > first[1].id

    second = await storage.list_rejections(WS, limit=2, before=first[-1].id)
    assert [r.message for r in second] == ["problem 2", "problem 1"]
    third = await storage.list_rejections(WS, limit=2, before=second[-1].id)
    assert [r.message for r in third] == ["problem 0"]

    everything = await storage.list_rejections(WS, limit=100)
    assert len(everything) == 5
    assert len({r.id for r in everything}) == 5
    other = await storage.list_rejections("ws_other", limit=100)
    assert [r.message for r in other] == ["problem 99"]


async def test_rejections_keep_every_field(backend: Backend) -> None:
    storage, _ = backend
    original = rejection(1)
    await storage.record_rejections([original, rejection(2)])
    stored = await storage.list_rejections(WS, limit=10)
    by_message = {r.message: r for r in stored}
    assert msgspec.structs.replace(by_message["problem 1"], id=None) == original
    assert msgspec.structs.replace(by_message["problem 2"], id=None) == rejection(2)
    assert by_message["problem 2"].field is None


# -- identity graph and profiles -------------------------------------------------


async def test_identifiers_and_profiles_round_trip_every_field(backend: Backend) -> None:
    storage, _ = backend
    rich = rich_profile()
    await storage.commit_processing(
        batch(
            1,
            profiles=[rich],
            identifiers=[(WS, EMAIL, rich.id), (WS, USER, rich.id)],
        )
    )

    found = await storage.find_profile_ids(WS, [EMAIL, USER, ANON])
    assert found == {EMAIL: rich.id, USER: rich.id}
    assert await storage.find_profile_ids("ws_other", [EMAIL]) == {}

    loaded = await storage.load_profiles(WS, [rich.id, "prof_missing"])
    assert loaded == {rich.id: rich}
    stored = loaded[rich.id]
    # Equal datetimes may still differ in offset: the offsets must survive.
    assert stored.updated_at.utcoffset() == timedelta(hours=-5)
    assert stored.traits["email"].observed_at.utcoffset() == timedelta(hours=-5)
    assert stored.consent["email_marketing"].observed_at.utcoffset() == timedelta(hours=-5)
    assert stored.traits["email"].consent_basis == ["email_marketing", "analytics"]
    assert stored.consent["sms"].granted is False
    assert await storage.load_profiles("ws_other", [rich.id]) == {}


async def test_profile_upsert_replaces_the_document(backend: Backend) -> None:
    storage, _ = backend
    await storage.commit_processing(batch(1, profiles=[profile("p1", event_count=1)]))
    later = profile("p1", event_count=2, updated_at=T0 + timedelta(hours=1))
    await storage.commit_processing(batch(2, profiles=[later]))
    assert await storage.load_profiles(WS, ["p1"]) == {"p1": later}


async def test_an_identifier_moves_to_another_profile_by_upsert(backend: Backend) -> None:
    storage, _ = backend
    await storage.commit_processing(
        batch(1, profiles=[profile("p1"), profile("p2")], identifiers=[(WS, EMAIL, "p1")])
    )
    await storage.commit_processing(batch(2, identifiers=[(WS, EMAIL, "p2")]))
    assert await storage.find_profile_ids(WS, [EMAIL]) == {EMAIL: "p2"}


async def test_resolve_profile_id_of_live_and_unknown_profiles(backend: Backend) -> None:
    storage, _ = backend
    await storage.commit_processing(batch(1, profiles=[profile("p1")]))
    assert await storage.resolve_profile_id(WS, "p1") == "p1"
    assert await storage.resolve_profile_id(WS, "nobody") is None
    assert await storage.resolve_profile_id("ws_other", "p1") is None


async def test_existing_profile_ids_names_live_profiles_only(backend: Backend) -> None:
    storage, _ = backend
    await storage.commit_processing(
        batch(1, profiles=[profile("p1"), profile("p2"), profile("loser")])
    )
    await storage.commit_processing(
        batch(2, merges=[merge("p2", "loser")], profiles=[profile("p2", merged_from=["loser"])])
    )
    assert await storage.existing_profile_ids(WS, ["p1", "p2", "loser", "nobody"]) == {
        "p1",
        "p2",
    }
    assert await storage.existing_profile_ids(WS, []) == set()
    assert await storage.existing_profile_ids("ws_other", ["p1"]) == set()


# -- timelines -------------------------------------------------------------------


async def test_profile_events_page_newest_first(backend: Backend) -> None:
    storage, _ = backend
    events = [timeline_event(offset, "p1") for offset in range(1, 6)]
    await storage.commit_processing(
        batch(5, profiles=[profile("p1")], events=[*events, timeline_event(6, "p2")])
    )

    page = await storage.list_profile_events(WS, "p1", limit=2)
    assert [e.offset for e in page.events] == [5, 4]
    assert page.next_before == 4
    page = await storage.list_profile_events(WS, "p1", limit=2, before=page.next_before)
    assert [e.offset for e in page.events] == [3, 2]
    assert page.next_before == 2
    page = await storage.list_profile_events(WS, "p1", limit=2, before=page.next_before)
    assert [e.offset for e in page.events] == [1]
    assert page.next_before is None

    # A last page that is exactly full says there is nothing more.
    exact = await storage.list_profile_events(WS, "p1", limit=5)
    assert [e.offset for e in exact.events] == [5, 4, 3, 2, 1]
    assert exact.next_before is None

    empty = await storage.list_profile_events(WS, "nobody", limit=10)
    assert (empty.events, empty.next_before) == ([], None)


async def test_profile_events_keep_every_field(backend: Backend) -> None:
    storage, _ = backend
    original = timeline_event(7, "p1")
    unnamed = msgspec.structs.replace(timeline_event(8, "p1"), name=None, type="identify")
    await storage.commit_processing(batch(8, profiles=[profile("p1")], events=[original, unnamed]))
    page = await storage.list_profile_events(WS, "p1", limit=10)
    assert page.events == [unnamed, original]
    assert msgspec.json.decode(page.events[1].body, type=Event).message_id == "m7"


# -- processing batches ----------------------------------------------------------


async def test_consumer_offsets_start_at_zero_and_are_per_consumer(backend: Backend) -> None:
    storage, _ = backend
    assert await storage.consumer_offset(CONSUMER) == 0
    await storage.commit_processing(batch(10))
    await storage.commit_processing(ProcessingBatch(consumer="exporter", offset=3))
    assert await storage.consumer_offset(CONSUMER) == 10
    assert await storage.consumer_offset("exporter") == 3
    await storage.commit_processing(batch(25))
    assert await storage.consumer_offset(CONSUMER) == 25


async def test_replaying_a_batch_changes_nothing(backend: Backend) -> None:
    storage, _ = backend
    loser_events = [timeline_event(1, "p2"), timeline_event(2, "p2")]
    await storage.commit_processing(
        batch(2, profiles=[profile("p1"), profile("p2")], events=loser_events)
    )
    merged = batch(
        4,
        events=[timeline_event(3, "p1"), timeline_event(4, "p1")],
        identifiers=[(WS, EMAIL, "p1"), (WS, ANON, "p1")],
        merges=[merge("p1", "p2")],
        profiles=[profile("p1", event_count=4, merged_from=["p2"])],
    )
    await storage.commit_processing(merged)
    state = await snapshot(storage)

    await storage.commit_processing(merged)

    assert await snapshot(storage) == state
    assert [e.offset for e in state["timeline"]] == [4, 3, 2, 1]


async def test_a_failing_batch_applies_nothing(backend: Backend) -> None:
    storage, _ = backend
    await storage.commit_processing(batch(1, profiles=[profile("p1")]))
    before = await snapshot(storage)
    unstorable = profile(
        "p1",
        traits={
            "x": TraitValue(value=object(), source="s", observed_at=T0, received_at=T0),
        },
    )

    with pytest.raises((TypeError, ValueError, msgspec.EncodeError)):
        await storage.commit_processing(
            batch(
                9,
                events=[timeline_event(5, "p1")],
                identifiers=[(WS, EMAIL, "p1")],
                merges=[merge("p1", "p3")],
                profiles=[profile("p2"), unstorable],
            )
        )

    assert await snapshot(storage) == before
    assert await storage.find_profile_ids(WS, [EMAIL]) == {}
    assert await storage.load_profiles(WS, ["p2"]) == {}
    assert await storage.resolve_profile_id(WS, "p3") is None


# -- merges ----------------------------------------------------------------------


def merge(winner: str, loser: str, minutes: int = 0) -> MergeRecord:
    return MergeRecord(
        workspace_id=WS,
        winner=winner,
        loser=loser,
        merged_at=T0 + timedelta(minutes=minutes),
        reason="shared identifier email",
        message_id=f"m-merge-{loser}",
    )


async def test_merge_unions_timelines_and_redirects_the_loser(backend: Backend) -> None:
    storage, _ = backend
    await storage.commit_processing(
        batch(
            4,
            profiles=[profile("winner"), profile("loser")],
            identifiers=[(WS, EMAIL, "winner"), (WS, ANON, "loser")],
            events=[
                timeline_event(1, "loser"),
                timeline_event(2, "winner"),
                timeline_event(3, "loser"),
                timeline_event(4, "winner"),
            ],
        )
    )
    record = merge("winner", "loser")
    await storage.commit_processing(
        batch(
            5,
            events=[timeline_event(5, "winner")],
            identifiers=[(WS, ANON, "winner")],
            merges=[record],
            profiles=[profile("winner", merged_from=["loser"])],
        )
    )

    page = await storage.list_profile_events(WS, "winner", limit=10)
    assert [e.offset for e in page.events] == [5, 4, 3, 2, 1]
    assert {e.profile_id for e in page.events} == {"winner"}
    assert (await storage.list_profile_events(WS, "loser", limit=10)).events == []
    assert await storage.load_profiles(WS, ["winner", "loser"]) == {
        "winner": profile("winner", merged_from=["loser"])
    }
    assert await storage.resolve_profile_id(WS, "loser") == "winner"
    assert await storage.find_profile_ids(WS, [EMAIL, ANON]) == {EMAIL: "winner", ANON: "winner"}
    assert await storage.list_merges(WS, "winner") == [record]
    assert await storage.list_merges(WS, "loser") == []


async def test_a_merge_moves_every_identifier_of_the_loser(backend: Backend) -> None:
    """Even identifiers the batch does not list follow the loser to the winner."""
    storage, _ = backend
    await storage.commit_processing(
        batch(
            2,
            profiles=[profile("winner"), profile("loser")],
            identifiers=[(WS, EMAIL, "winner"), (WS, ANON, "loser")],
        )
    )
    await storage.commit_processing(
        batch(3, merges=[merge("winner", "loser")], profiles=[profile("winner")])
    )
    assert await storage.find_profile_ids(WS, [EMAIL, ANON]) == {EMAIL: "winner", ANON: "winner"}


async def test_merge_chains_resolve_to_the_final_winner(backend: Backend) -> None:
    storage, _ = backend
    await storage.commit_processing(
        batch(
            3,
            profiles=[profile("a"), profile("b"), profile("c")],
            events=[timeline_event(1, "a"), timeline_event(2, "b"), timeline_event(3, "c")],
        )
    )
    a_into_b = merge("b", "a", minutes=1)
    b_into_c = merge("c", "b", minutes=2)
    await storage.commit_processing(batch(4, merges=[a_into_b], profiles=[profile("b")]))
    await storage.commit_processing(batch(5, merges=[b_into_c], profiles=[profile("c")]))

    assert await storage.resolve_profile_id(WS, "a") == "c"
    assert await storage.resolve_profile_id(WS, "b") == "c"
    assert await storage.resolve_profile_id(WS, "c") == "c"
    page = await storage.list_profile_events(WS, "c", limit=10)
    assert [e.offset for e in page.events] == [3, 2, 1]
    assert await storage.list_merges(WS, "b") == [a_into_b]
    assert await storage.list_merges(WS, "c") == [b_into_c]
    assert await storage.load_profiles(WS, ["a", "b", "c"]) == {"c": profile("c")}


async def test_a_chain_merged_within_one_batch(backend: Backend) -> None:
    storage, _ = backend
    await storage.commit_processing(
        batch(
            3,
            profiles=[profile("a"), profile("b"), profile("c")],
            events=[timeline_event(1, "a"), timeline_event(2, "b"), timeline_event(3, "c")],
        )
    )
    await storage.commit_processing(
        batch(4, merges=[merge("b", "a"), merge("c", "b")], profiles=[profile("c")])
    )
    assert await storage.resolve_profile_id(WS, "a") == "c"
    page = await storage.list_profile_events(WS, "c", limit=10)
    assert [e.offset for e in page.events] == [3, 2, 1]


async def test_list_merges_is_oldest_first(backend: Backend) -> None:
    storage, _ = backend
    await storage.commit_processing(
        batch(1, profiles=[profile("w"), profile("x"), profile("y"), profile("z")])
    )
    late = merge("w", "x", minutes=30)
    early = merge("w", "y", minutes=10)
    middle = merge("w", "z", minutes=20)
    await storage.commit_processing(batch(2, merges=[late], profiles=[profile("w")]))
    await storage.commit_processing(batch(3, merges=[early, middle], profiles=[profile("w")]))
    assert await storage.list_merges(WS, "w") == [early, middle, late]


async def snapshot(storage: Storage) -> dict[str, object]:
    """What a batch can change, read back through the public interface."""
    ids = ["p1", "p2", "p3"]
    timeline = (await storage.list_profile_events(WS, "p1", limit=100)).events
    return {
        "profiles": await storage.load_profiles(WS, ids),
        "identifiers": await storage.find_profile_ids(WS, [EMAIL, USER, ANON]),
        "resolved": [await storage.resolve_profile_id(WS, i) for i in ids],
        "merges": await storage.list_merges(WS, "p1"),
        "timeline": timeline,
        "loser_timeline": (await storage.list_profile_events(WS, "p2", limit=100)).events,
        "offset": await storage.consumer_offset(CONSUMER),
    }
