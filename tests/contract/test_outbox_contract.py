"""The delivery part of the ``Storage`` contract (``rapport.storage.outbox``), on every backend.

Claims honour the gate's ``not_before`` and a lease; an attempt is recorded
only on a pending message, with its event stored for the relay in the same
transaction; dead letters list and replay; a profile's messages page newest
first.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from rapport.core.journeys.effects import SendEffect, idempotency_key
from rapport.core.model import Event, ScheduledEvent
from rapport.core.policy.checks import GateVerdict, PolicyCheck
from rapport.storage.base import ProcessingBatch
from rapport.storage.journey_runs import OutboxMessage
from rapport.storage.outbox import DeliveryAttempt
from rapport.storage.postgres import PostgresStorage
from tests.contract.conftest import Backend, BackendFactory

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WS = "ws_a"
LEASE = timedelta(minutes=5)


def message(
    instance_id: str,
    profile_id: str = "prof_1",
    *,
    not_before: datetime | None = None,
    status: str = "pending",
) -> OutboxMessage:
    key = idempotency_key(instance_id, "hello", 1)
    verdict = GateVerdict(
        outcome="defer" if not_before else "drop" if status == "dropped" else "send",
        channel="email",
        address="dana@example.test",
        not_before=not_before,
        checks=(PolicyCheck(name="consent", passed=True, detail="email consent given"),),
    )
    return OutboxMessage(
        workspace_id=WS,
        idempotency_key=key,
        profile_id=profile_id,
        created_at=T0,
        status=status,  # type: ignore[arg-type]
        verdict=verdict,
        effect=SendEffect(
            idempotency_key=key,
            instance_id=instance_id,
            journey_id="welcome",
            version=1,
            step_id="hello",
            profile_id=profile_id,
            channels=("email",),
            template="welcome-1",
            category="promotional",
        ),
    )


def key(instance_id: str) -> str:
    return idempotency_key(instance_id, "hello", 1)


async def commit(backend: Backend, *messages: OutboxMessage, offset: int = 1) -> None:
    await backend[0].commit_processing(
        ProcessingBatch(consumer="profiles", offset=offset, outbox=list(messages))
    )


def sent_event(k: str, at: datetime) -> ScheduledEvent:
    return ScheduledEvent(
        workspace_id=WS,
        key=f"delivery:{k}",
        due_at=at,
        event=Event(
            workspace_id=WS,
            message_id=f"delivery:sent:{k}",
            type="track",
            event="Message Sent",
            timestamp=at,
            received_at=at,
            source="rapport:delivery",
            properties={"message": k},
            profile_id="prof_1",
        ),
    )


async def test_claims_honour_not_before_and_the_lease(backend: Backend) -> None:
    storage, _ = backend
    later = T0 + timedelta(hours=8)
    assert await storage.next_outbox_at() is None
    await commit(backend, message("i1"), message("i2", not_before=later), message("i3"))
    assert await storage.next_outbox_at() == T0
    claimed = await storage.claim_due(T0, 10, LEASE)
    assert await storage.next_outbox_at() == T0 + LEASE
    assert [m.idempotency_key for m in claimed] == [key("i1"), key("i3")]
    assert claimed[0].verdict is not None and claimed[0].verdict.checks[0].name == "consent"
    assert all(m.next_attempt_at == T0 + LEASE for m in claimed)
    # Leased: nobody claims them again until the lease runs out.
    assert await storage.claim_due(T0 + timedelta(minutes=1), 10, LEASE) == []
    again = await storage.claim_due(T0 + LEASE, 1, LEASE)
    assert [m.idempotency_key for m in again] == [key("i1")]
    # Quiet hours over: the deferred one is due.
    due = await storage.claim_due(later, 10, LEASE)
    assert [m.idempotency_key for m in due] == [key("i1"), key("i2"), key("i3")]
    with pytest.raises(ValueError, match="limit"):
        await storage.claim_due(T0, 0, LEASE)
    with pytest.raises(ValueError, match="naive"):
        await storage.claim_due(datetime(2026, 3, 1), 1, LEASE)


async def test_a_dropped_message_is_stored_dropped_and_never_claimed(backend: Backend) -> None:
    storage, _ = backend
    await commit(backend, message("i1", status="dropped"), message("i2"))
    dropped = await storage.get_outbox(WS, key("i1"))
    assert dropped is not None and dropped.status == "dropped"
    assert [m.idempotency_key for m in await storage.claim_due(T0, 10, LEASE)] == [key("i2")]
    assert [m.idempotency_key for m in await storage.pending_outbox(10)] == [key("i2")]
    # A replay of the step that wrote it changes nothing.
    await commit(backend, message("i1"))
    stored = await storage.get_outbox(WS, key("i1"))
    assert stored is not None and stored.status == "dropped"


async def test_retry_then_sent_with_its_event(backend: Backend) -> None:
    storage, _ = backend
    await commit(backend, message("i1"))
    await storage.claim_due(T0, 10, LEASE)
    retry_at = T0 + timedelta(seconds=30)
    assert await storage.record_attempt(
        DeliveryAttempt(
            workspace_id=WS,
            idempotency_key=key("i1"),
            at=T0,
            outcome="retry",
            retry_at=retry_at,
            error="451 try later",
        )
    )
    waiting = await storage.get_outbox(WS, key("i1"))
    assert waiting is not None
    assert (waiting.status, waiting.attempts, waiting.next_attempt_at, waiting.error) == (
        "pending",
        1,
        retry_at,
        "451 try later",
    )
    # Not tried (an open circuit): attempts stay.
    assert await storage.record_attempt(
        DeliveryAttempt(
            workspace_id=WS,
            idempotency_key=key("i1"),
            at=T0,
            outcome="retry",
            retry_at=retry_at,
            counted=False,
        )
    )
    assert await storage.claim_due(retry_at - timedelta(seconds=1), 10, LEASE) == []
    [claimed] = await storage.claim_due(retry_at, 10, LEASE)
    assert claimed.attempts == 1
    at = retry_at + timedelta(seconds=1)
    event = sent_event(key("i1"), at)
    sent = DeliveryAttempt(
        workspace_id=WS,
        idempotency_key=key("i1"),
        at=at,
        outcome="sent",
        provider_message_id="smtp-250-abc",
        template_version=3,
        template_id="welcome-1-sms",
        event=event,
    )
    assert await storage.record_attempt(sent)
    done = await storage.get_outbox(WS, key("i1"))
    assert done is not None
    assert (done.status, done.attempts, done.sent_at, done.provider_message_id) == (
        "sent",
        2,
        at,
        "smtp-250-abc",
    )
    assert done.template_version == 3 and done.updated_at == at
    assert done.template_id == "welcome-1-sms", "the channel variant actually rendered"
    assert await storage.get_scheduled(WS, event.key) == event
    # Recorded once: a second answer for the same message stores nothing.
    assert not await storage.record_attempt(
        msgspec.structs.replace(sent, event=sent_event(key("i1"), at + LEASE))
    )
    assert await storage.get_scheduled(WS, event.key) == event
    assert await storage.claim_due(at + timedelta(days=1), 10, LEASE) == []
    with pytest.raises(ValueError, match="retry_at"):
        await storage.record_attempt(msgspec.structs.replace(sent, outcome="retry"))


async def test_dead_letters_list_and_replay(backend: Backend) -> None:
    storage, _ = backend
    await commit(backend, *(message(f"i{n}") for n in range(5)))
    for n in range(5):
        assert await storage.record_attempt(
            DeliveryAttempt(
                workspace_id=WS,
                idempotency_key=key(f"i{n}"),
                at=T0,
                outcome="dead" if n % 2 == 0 else "sent",
                error="550 no such user" if n % 2 == 0 else None,
            )
        )
    first = await storage.list_dead(WS, 2)
    assert [m.idempotency_key for m in first.messages] == [key("i0"), key("i2")]
    assert first.next_cursor is not None
    rest = await storage.list_dead(WS, 2, after=first.next_cursor)
    assert [m.idempotency_key for m in rest.messages] == [key("i4")]
    assert rest.next_cursor is None
    assert rest.messages[0].error == "550 no such user" and rest.messages[0].attempts == 1
    assert (await storage.list_dead("ws_b", 10)).messages == []
    later = T0 + timedelta(hours=1)
    replayed = await storage.replay_dead(WS, key("i2"), later)
    assert replayed is not None
    assert (replayed.status, replayed.attempts, replayed.next_attempt_at) == ("pending", 0, later)
    assert await storage.replay_dead(WS, key("i2"), later) is None  # no longer dead
    assert await storage.replay_dead(WS, key("i1"), later) is None  # sent, not dead
    assert await storage.replay_dead("ws_b", key("i0"), later) is None
    assert [m.idempotency_key for m in await storage.claim_due(later, 10, LEASE)] == [key("i2")]
    assert [m.idempotency_key for m in (await storage.list_dead(WS, 10)).messages] == [
        key("i0"),
        key("i4"),
    ]


async def test_a_profiles_messages_page_newest_first(backend: Backend) -> None:
    storage, _ = backend
    await commit(backend, *(message(f"i{n}", "prof_1") for n in range(3)), message("x", "prof_2"))
    first = await storage.list_profile_messages(WS, "prof_1", 2)
    assert [m.idempotency_key for m in first.messages] == [key("i2"), key("i1")]
    assert first.next_cursor is not None
    rest = await storage.list_profile_messages(WS, "prof_1", 2, before=first.next_cursor)
    assert [m.idempotency_key for m in rest.messages] == [key("i0")]
    assert rest.next_cursor is None
    assert (await storage.list_profile_messages("ws_b", "prof_1", 5)).messages == []
    with pytest.raises(ValueError, match="limit"):
        await storage.list_profile_messages(WS, "prof_1", 0)


async def test_delivery_state_survives_a_reopen(backend_factory: BackendFactory) -> None:
    if not backend_factory.supports_reopen:
        pytest.skip("nothing survives closing this backend")
    opened = await backend_factory.open()
    await commit(opened, message("i1"), message("i2"))
    await opened[0].claim_due(T0, 10, LEASE)
    await opened[0].record_attempt(
        DeliveryAttempt(
            workspace_id=WS,
            idempotency_key=key("i1"),
            at=T0,
            outcome="retry",
            retry_at=T0 + timedelta(minutes=1),
            error="timeout",
        )
    )
    await backend_factory.close(opened)
    storage, _ = await backend_factory.open()
    # i2's sender died with it: its lease ends and it comes back.
    assert [m.idempotency_key for m in await storage.claim_due(T0 + LEASE, 10, LEASE)] == [
        key("i1"),
        key("i2"),
    ]
    stored = await storage.get_outbox(WS, key("i1"))
    assert stored is not None and stored.attempts == 1 and stored.error == "timeout"


async def test_two_workers_never_claim_the_same_message(backend: Backend) -> None:
    storage, _ = backend
    if not isinstance(storage, PostgresStorage):
        pytest.skip("one sender per process on this backend")
    await commit(backend, *(message(f"i{n:03}") for n in range(200)))
    claims = await asyncio.gather(*(storage.claim_due(T0, 30, LEASE) for _ in range(10)))
    keys = [m.idempotency_key for claim in claims for m in claim]
    assert len(keys) == len(set(keys)) == 200
