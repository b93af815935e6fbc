"""The journey-runs part of the ``Storage`` contract, over every backend.

Instances, metric increments and outbox messages are written only through
``commit_processing``, in the transaction of the step that decided them; a
replayed batch changes nothing (no doubled counter, no second message).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import msgspec
import pytest

from rapport.core.journeys.effects import (
    MetricIncrement,
    SendEffect,
    WebhookEffect,
    idempotency_key,
    timer_key,
)
from rapport.core.journeys.instances import HeldMessage, JourneyInstance, TraceEntry, WaitState
from rapport.core.model import Event, Profile, ScheduledEvent
from rapport.storage.base import ProcessingBatch
from rapport.storage.journey_runs import OutboxMessage
from rapport.storage.postgres import PostgresStorage
from tests.contract.conftest import Backend, BackendFactory

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PARIS_WINTER = timezone(timedelta(hours=1))
WS = "ws_a"


def instance(
    instance_id: str,
    profile_id: str = "prof_1",
    *,
    journey_id: str = "welcome",
    status: str = "waiting",
    key: str | None = None,
    ended_at: datetime | None = None,
) -> JourneyInstance:
    ended = status in ("completed", "exited", "converted")
    return JourneyInstance(
        id=instance_id,
        journey_id=journey_id,
        version=2,
        profile_id=profile_id,
        status=status,  # type: ignore[arg-type]
        entered_at=T0,
        entered_by="msg-1",
        correlation_key=key,
        step_id="wait-a-day",
        wait=None if ended else WaitState(kind="for", since=T0, until=T0 + timedelta(days=1)),
        timer_at=None if ended else T0 + timedelta(days=1),
        timer_seq=1,
        visits={"hello": 1, "wait-a-day": 1},
        variables={"variant:split": "b"},
        ended_at=(ended_at or T0 + timedelta(hours=1)) if ended else None,
        end_reason="exit criterion 0" if ended else None,
        trace=[TraceEntry(at=T0, step="hello", what="sent", cause="event Signed Up (msg-1)")],
    )


def send(instance_id: str, step_id: str = "hello", visit: int = 1) -> OutboxMessage:
    key = idempotency_key(instance_id, step_id, visit)
    return OutboxMessage(
        workspace_id=WS,
        idempotency_key=key,
        profile_id="prof_1",
        created_at=T0,
        effect=SendEffect(
            idempotency_key=key,
            instance_id=instance_id,
            journey_id="welcome",
            version=2,
            step_id=step_id,
            profile_id="prof_1",
            channels=("email", "sms"),
            template="welcome-1",
            category="promotional",
            data={"note": "nul \u0000 byte", "n": 1.5},
        ),
    )


def metric(name: str, step_id: str = "hello", count: int = 1) -> tuple[str, MetricIncrement]:
    return (
        WS,
        MetricIncrement(journey_id="welcome", version=2, step_id=step_id, metric=name, count=count),  # type: ignore[arg-type]
    )


def batch(offset: int, **fields: object) -> ProcessingBatch:
    return ProcessingBatch(consumer="profiles", offset=offset, **fields)  # type: ignore[arg-type]


async def test_an_instance_reads_back_whole_with_its_trace(backend: Backend) -> None:
    storage, _ = backend
    held = msgspec.structs.replace(
        instance("i1"),
        status="held",
        held=HeldMessage(step_id="hello", since=T0.astimezone(PARIS_WINTER)),
        trace=[
            TraceEntry(at=T0 + timedelta(seconds=n), step="hello", what="held", why=f"n {n}")
            for n in range(200)
        ],
        trace_dropped=7,
    )
    await storage.commit_processing(batch(1, journey_instances=[(WS, held)]))
    got = await storage.get_journey_instance(WS, "i1")
    assert got == held
    assert got is not None and len(got.trace) == 200 and got.trace_dropped == 7
    assert got.held is not None and got.held.since == T0
    assert await storage.get_journey_instance("ws_b", "i1") is None
    assert await storage.get_journey_instance(WS, "nope") is None


async def test_the_last_version_in_a_batch_wins_and_a_later_batch_replaces_it(
    backend: Backend,
) -> None:
    storage, _ = backend
    ended = instance("i1", status="exited")
    await storage.commit_processing(batch(1, journey_instances=[(WS, instance("i1")), (WS, ended)]))
    assert await storage.get_journey_instance(WS, "i1") == ended
    again = msgspec.structs.replace(instance("i1"), timer_seq=2)
    await storage.commit_processing(batch(2, journey_instances=[(WS, again)]))
    assert await storage.get_journey_instance(WS, "i1") == again
    assert await storage.journey_instance_counts(WS, "welcome") == {"waiting": 1}


async def test_loading_gives_live_instances_and_the_latest_ended_per_slot(
    backend: Backend,
) -> None:
    storage, _ = backend
    rows = [
        instance("a-live", key="order-1"),
        instance("a-old", status="completed", key="order-1", ended_at=T0),
        instance("a-new", status="exited", key="order-1", ended_at=T0 + timedelta(hours=2)),
        instance("b-old", status="converted", ended_at=T0),
        instance("b-new", status="completed", ended_at=T0 + timedelta(days=1)),
        instance("c", journey_id="other", status="completed"),
        instance("d", "prof_2", status="held"),
        instance("e", "prof_3"),
    ]
    await storage.commit_processing(batch(1, journey_instances=[(WS, r) for r in rows]))
    loaded = await storage.load_journey_instances(WS, ["prof_2", "prof_1", "prof_1", "nobody"])
    assert [i.id for i in loaded] == ["c", "a-live", "a-new", "b-new", "d"]
    assert loaded[1] == rows[0]
    assert await storage.load_journey_instances("ws_b", ["prof_1"]) == []
    assert await storage.load_journey_instances(WS, []) == []


async def test_instances_of_a_journey_page_by_id_with_or_without_a_status(
    backend: Backend,
) -> None:
    storage, _ = backend
    rows = [
        instance(f"i{n:02}", f"p{n}", status="waiting" if n % 3 else "exited") for n in range(10)
    ]
    rows.append(instance("x", journey_id="other"))
    await storage.commit_processing(batch(1, journey_instances=[(WS, r) for r in rows]))
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await storage.list_journey_instances(WS, "welcome", 4, after)
        seen += [i.id for i in page.instances]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [f"i{n:02}" for n in range(10)]
    exited = await storage.list_journey_instances(WS, "welcome", 3, status="exited")
    assert [i.id for i in exited.instances] == ["i00", "i03", "i06"]
    assert exited.next_after == "i06"
    last = await storage.list_journey_instances(WS, "welcome", 3, "i06", status="exited")
    assert [i.id for i in last.instances] == ["i09"] and last.next_after is None
    assert await storage.journey_instance_counts(WS, "welcome") == {"waiting": 6, "exited": 4}
    with pytest.raises(ValueError, match="limit"):
        await storage.list_journey_instances(WS, "welcome", 0)


async def test_metrics_add_up_across_batches_and_a_replay_adds_nothing(backend: Backend) -> None:
    storage, _ = backend
    first = batch(
        5,
        journey_metrics=[
            metric("entered"),
            metric("sent"),
            metric("entered"),
            metric("entered", "wait-a-day"),
            metric("waiting", "wait-a-day"),
        ],
    )
    await storage.commit_processing(first)
    await storage.commit_processing(first)  # a replay of the same step
    await storage.commit_processing(
        batch(6, journey_metrics=[metric("passed", "wait-a-day"), metric("entered", count=3)])
    )
    got = await storage.journey_metrics(WS, "welcome")
    assert got.by_step() == {
        "hello": {"entered": 5, "sent": 1},
        "wait-a-day": {"entered": 1, "passed": 1, "waiting": 1},
    }
    assert got.totals() == {"entered": 6, "sent": 1, "passed": 1, "waiting": 1}
    assert got.totals(version=1) == {}
    assert (await storage.journey_metrics("ws_b", "welcome")).counts == []
    # Another consumer at the same offset is another batch.
    await storage.commit_processing(
        ProcessingBatch(consumer="other", offset=5, journey_metrics=[metric("exited")])
    )
    assert (await storage.journey_metrics(WS, "welcome")).by_step()["hello"]["exited"] == 1


async def test_a_message_is_stored_once_per_key_and_pages_in_order(backend: Backend) -> None:
    storage, _ = backend
    hook_key = idempotency_key("i2", "notify", 1)
    hook = OutboxMessage(
        workspace_id=WS,
        idempotency_key=hook_key,
        profile_id="prof_2",
        created_at=T0,
        effect=WebhookEffect(
            idempotency_key=hook_key,
            instance_id="i2",
            journey_id="welcome",
            version=2,
            step_id="notify",
            profile_id="prof_2",
            url="https://example.test/hook",
            method="POST",
            headers={"x-a": "b"},
            body={"k": [1, None]},
        ),
    )
    first = batch(1, outbox=[send("i1"), hook, send("i1")])
    await storage.commit_processing(first)
    await storage.commit_processing(first)
    pending = await storage.pending_outbox(10)
    assert [m.idempotency_key for m in pending] == [send("i1").idempotency_key, hook_key]
    assert pending[0].seq < pending[1].seq
    assert pending[0].effect == send("i1").effect and pending[1].effect == hook.effect
    assert all(m.status == "pending" and m.updated_at is None for m in pending)
    await storage.commit_processing(batch(2, outbox=[send("i1", visit=2), send("i1")]))
    after = await storage.pending_outbox(2, after=pending[0].seq)
    assert [m.idempotency_key for m in after] == [hook_key, send("i1", visit=2).idempotency_key]
    with pytest.raises(ValueError, match="limit"):
        await storage.pending_outbox(0)


async def test_marking_a_message_sent_or_failed(backend: Backend) -> None:
    storage, _ = backend
    await storage.commit_processing(batch(1, outbox=[send("i1"), send("i2")]))
    k1, k2 = send("i1").idempotency_key, send("i2").idempotency_key
    later = T0.astimezone(PARIS_WINTER) + timedelta(minutes=1)
    assert await storage.mark_outbox(WS, k1, "sent", later)
    assert not await storage.mark_outbox(WS, k1, "failed", later)  # no longer pending
    assert await storage.mark_outbox(WS, k2, "failed", later, error="bounced: 550")
    assert not await storage.mark_outbox(WS, "unknown", "sent", later)
    assert not await storage.mark_outbox("ws_b", k1, "sent", later)
    sent, failed = await storage.get_outbox(WS, k1), await storage.get_outbox(WS, k2)
    assert sent is not None and sent.status == "sent" and sent.updated_at == later
    assert failed is not None and failed.status == "failed" and failed.error == "bounced: 550"
    assert await storage.pending_outbox(10) == []
    # A replay of the step that wrote it sends nothing again.
    await storage.commit_processing(batch(1, outbox=[send("i1")]))
    assert await storage.pending_outbox(10) == []
    assert (await storage.get_outbox(WS, k1)) == sent
    with pytest.raises(ValueError, match="sent or failed"):
        await storage.mark_outbox(WS, k1, "pending", later)
    with pytest.raises(ValueError, match="naive"):
        await storage.mark_outbox(WS, k1, "sent", datetime(2026, 3, 1))


async def test_the_journey_part_commits_with_the_rest_of_the_batch(backend: Backend) -> None:
    storage, _ = backend
    profile = Profile(id="prof_1", workspace_id=WS, created_at=T0, updated_at=T0)
    timer = ScheduledEvent(
        workspace_id=WS,
        key=timer_key("i1"),
        due_at=T0 + timedelta(days=1),
        event=Event(
            workspace_id=WS,
            message_id="journey:i1:1",
            type="track",
            event="Journey Timer",
            timestamp=T0,
            received_at=T0,
            source="rapport:journeys",
            profile_id="prof_1",
        ),
    )
    good = {
        "profiles": [profile],
        "scheduled": [timer],
        "journey_instances": [(WS, instance("i1"))],
        "journey_metrics": [metric("entered")],
    }
    naive = msgspec.structs.replace(send("i1"), created_at=datetime(2026, 3, 1))
    mismatched = msgspec.structs.replace(send("i1"), idempotency_key="journey:i1:other:1")
    for bad in (naive, mismatched):
        with pytest.raises(ValueError):
            await storage.commit_processing(batch(3, outbox=[bad], **good))
    naive_instance = msgspec.structs.replace(instance("i2"), entered_at=datetime(2026, 3, 1))
    with pytest.raises(ValueError):
        await storage.commit_processing(
            batch(3, **{**good, "journey_instances": [(WS, naive_instance)]})
        )
    if isinstance(storage, PostgresStorage):
        # Refused by the database itself, inside the transaction: text holds no NUL.
        with pytest.raises(asyncpg.PostgresError):
            await storage.commit_processing(
                batch(3, **{**good, "journey_instances": [(WS, instance("bad\u0000id"))]})
            )
    assert await storage.load_profiles(WS, ["prof_1"]) == {}
    assert await storage.get_scheduled(WS, timer_key("i1")) is None
    assert await storage.get_journey_instance(WS, "i1") is None
    assert (await storage.journey_metrics(WS, "welcome")).counts == []
    assert await storage.pending_outbox(10) == []
    assert await storage.consumer_offset("profiles") == 0
    # The same batch, good, commits whole; its metrics count once even though
    # refused attempts came first at the same offset.
    await storage.commit_processing(batch(3, outbox=[send("i1")], **good))
    assert set(await storage.load_profiles(WS, ["prof_1"])) == {"prof_1"}
    assert await storage.get_scheduled(WS, timer_key("i1")) == timer
    assert await storage.get_journey_instance(WS, "i1") == instance("i1")
    assert (await storage.journey_metrics(WS, "welcome")).totals() == {"entered": 1}
    assert len(await storage.pending_outbox(10)) == 1
    assert await storage.consumer_offset("profiles") == 3


async def test_runs_survive_a_reopen(backend_factory: BackendFactory) -> None:
    if not backend_factory.supports_reopen:
        pytest.skip("nothing survives closing this backend")
    opened = await backend_factory.open()
    stored = [instance("i1"), instance("i0", status="exited")]
    await opened[0].commit_processing(
        batch(
            1,
            journey_instances=[(WS, i) for i in stored],
            journey_metrics=[metric("entered")],
            outbox=[send("i1")],
        )
    )
    await backend_factory.close(opened)
    storage, _ = await backend_factory.open()
    assert await storage.load_journey_instances(WS, ["prof_1"]) == sorted(
        stored, key=lambda i: i.id
    )
    assert (await storage.journey_metrics(WS, "welcome")).totals() == {"entered": 1}
    [message] = await storage.pending_outbox(10)
    assert message.effect == send("i1").effect
    # A replay after the restart adds nothing, and new keys come after the old ones.
    await storage.commit_processing(
        batch(1, journey_metrics=[metric("entered")], outbox=[send("i1"), send("i3")])
    )
    assert (await storage.journey_metrics(WS, "welcome")).totals() == {"entered": 1}
    pending = await storage.pending_outbox(10)
    assert [m.effect.instance_id for m in pending] == ["i1", "i3"]
    assert pending[1].seq > pending[0].seq


async def test_ten_thousand_waiting_instances_load_by_profile(backend: Backend) -> None:
    storage, _ = backend
    total = 10_000
    for start in range(0, total, 2_500):
        rows = [(WS, instance(f"i{n:05}", f"p{n:05}")) for n in range(start, start + 2_500)]
        ended = [
            (WS, instance(f"e{n:05}", f"p{n:05}", status="exited"))
            for n in range(start, start + 10)
        ]
        await storage.commit_processing(batch(start + 1, journey_instances=rows + ended))
    assert await storage.journey_instance_counts(WS, "welcome") == {
        "waiting": total,
        "exited": 40,
    }
    wanted = [f"p{n:05}" for n in range(0, total, 7)]
    loaded = await storage.load_journey_instances(WS, wanted)
    live = [i for i in loaded if i.live]
    assert [i.profile_id for i in live] == wanted
    assert all(i.status == "waiting" and i.timer_seq == 1 for i in live)
    assert {i.id for i in loaded if not i.live} == {
        f"e{n:05}" for n in range(0, total, 7) if n % 2_500 < 10
    }
    everyone = await storage.load_journey_instances(WS, [f"p{n:05}" for n in range(total)])
    assert len(everyone) == total + 40


async def test_an_instance_moved_to_another_profile_loads_only_with_it(backend: Backend) -> None:
    storage, _ = backend
    await storage.commit_processing(batch(1, journey_instances=[(WS, instance("i1", "loser"))]))
    moved = instance("i1", "winner")
    await storage.commit_processing(batch(2, journey_instances=[(WS, moved)]))
    assert await storage.load_journey_instances(WS, ["loser"]) == []
    assert await storage.load_journey_instances(WS, ["winner", "loser"]) == [moved]


async def test_moves_among_many_instances_rewrite_only_the_moved_ones(backend: Backend) -> None:
    storage, _ = backend
    # More instances than one SQLite statement moves (256); every 7th changes profile,
    # journey or key (a merge), the others only their state.
    first = [instance(f"i{n:04d}", f"p{n:04d}") for n in range(600)]
    await storage.commit_processing(batch(1, journey_instances=[(WS, i) for i in first]))
    later = [
        msgspec.structs.replace(i, profile_id="winner", correlation_key="k", timer_seq=2)
        if n % 7 == 0
        else msgspec.structs.replace(i, timer_seq=2)
        for n, i in enumerate(first)
    ]
    await storage.commit_processing(batch(2, journey_instances=[(WS, i) for i in later]))
    moved = [i for n, i in enumerate(later) if n % 7 == 0]
    assert await storage.load_journey_instances(WS, ["winner"]) == moved
    assert await storage.load_journey_instances(WS, ["p0000", "p0007"]) == []
    stayed = [i.profile_id for n, i in enumerate(later) if n % 7]
    assert await storage.load_journey_instances(WS, stayed) == [
        i for n, i in enumerate(later) if n % 7
    ]
