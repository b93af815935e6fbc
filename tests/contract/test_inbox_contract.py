"""The in-app inbox part of the ``Storage`` contract, over every backend:
idempotent delivery, newest-first pages over a profile and those merged into
it, first read kept, unread counts, workspace isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from rapport.storage.inbox import InboxMessage, inbox_message_id
from tests.contract.conftest import Backend

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PARIS = timezone(timedelta(hours=1))
WS = "ws_a"


def message(key: str, profile_id: str = "prof_a", workspace_id: str = WS) -> InboxMessage:
    return InboxMessage(
        workspace_id=workspace_id,
        id=inbox_message_id(workspace_id, key),
        profile_id=profile_id,
        idempotency_key=key,
        title=f"Title {key}",
        body="Body \u0000 «ok»",
        category="promotional",
        topic="news",
        metadata={"journey_id": "j", "version": 2},
        created_at=T0,
    )


async def test_a_message_is_stored_once_and_reads_back_whole(backend: Backend) -> None:
    storage, _ = backend
    inbox = storage.inbox
    stored = await inbox.put_message(message("k1"))
    assert stored.seq > 0 and stored.read_at is None
    again = await inbox.put_message(message("k1"))
    assert again == stored
    read = await inbox.get_message(WS, stored.id)
    assert read == stored
    assert read is not None and read.body == "Body \u0000 «ok»" and read.metadata["version"] == 2
    assert await inbox.get_message("ws_b", stored.id) is None


async def test_pages_are_newest_first_over_several_profiles(backend: Backend) -> None:
    storage, _ = backend
    inbox = storage.inbox
    for n in range(5):
        await inbox.put_message(message(f"k{n}", profile_id="prof_a" if n % 2 else "prof_b"))
    await inbox.put_message(message("other", profile_id="prof_c"))
    await inbox.put_message(message("k9", workspace_id="ws_b"))
    first = await inbox.list_messages(WS, ["prof_a", "prof_b"], limit=3)
    assert [m.idempotency_key for m in first.messages] == ["k4", "k3", "k2"]
    assert first.next_before is not None
    rest = await inbox.list_messages(WS, ["prof_a", "prof_b"], limit=3, before=first.next_before)
    assert [m.idempotency_key for m in rest.messages] == ["k1", "k0"]
    assert rest.next_before is None
    only_a = await inbox.list_messages(WS, ["prof_a"], limit=10)
    assert [m.idempotency_key for m in only_a.messages] == ["k3", "k1"]
    assert (await inbox.list_messages(WS, [], limit=10)).messages == []


async def test_reading_keeps_the_first_read_and_counts_unread(backend: Backend) -> None:
    storage, _ = backend
    inbox = storage.inbox
    one = await inbox.put_message(message("k1"))
    await inbox.put_message(message("k2"))
    assert await inbox.unread_count(WS, ["prof_a"]) == 2
    at = datetime(2026, 3, 1, 13, 30, tzinfo=PARIS)
    read = await inbox.mark_read(WS, one.id, at)
    assert read is not None and read.read_at == at
    later = await inbox.mark_read(WS, one.id, at + timedelta(hours=1))
    assert later is not None and later.read_at == at
    assert await inbox.unread_count(WS, ["prof_a"]) == 1
    unread = await inbox.list_messages(WS, ["prof_a"], limit=10, unread_only=True)
    assert [m.idempotency_key for m in unread.messages] == ["k2"]
    assert await inbox.mark_read(WS, "inapp_missing", at) is None
    assert await inbox.mark_read("ws_b", one.id, at) is None
