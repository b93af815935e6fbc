"""Journeys run inside the per-profile processor (memory backend, virtual clock)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec

from rapport.core.journeys import describe
from rapport.core.journeys.effects import SendEffect
from rapport.core.model import Event
from rapport.core.policy.document import Confirmation, PolicyDocument
from rapport.runtime.journey_admin import check_document
from rapport.runtime.journey_effects import JOURNEY_EVENT_SOURCE, JOURNEY_TIMER
from rapport.storage.base import ProcessingBatch
from tests.unit.test_processor import WS, Harness, define, drain, make_event

WELCOME: dict[str, Any] = {
    "id": "welcome",
    "name": "Welcome",
    "triggers": [{"event": "Signed Up"}],
    "exit_when": [{"event": "Unsubscribed"}],
    "start": "hello",
    "steps": {
        "hello": {
            "message": {
                "channel": "email",
                "template": "welcome-1",
                "category": "promotional",
                "topic": "news",
            },
            "next": "pause",
        },
        "pause": {"wait": {"for": "3d"}, "next": "tips"},
        "tips": {
            "message": {
                "channel": "email",
                "template": "welcome-2",
                "category": "promotional",
                "topic": "news",
            },
        },
    },
}


GATE_OPEN = PolicyDocument(
    addresses={"email": "contact_email"}, confirmation=Confirmation(channels=())
)
"""These tests are about journeys, not the policy gate (tests/unit/policy): every
customer of ``at_now`` has an address the gate accepts and consents to marketing."""


async def publish(h: Harness, document: dict[str, Any]) -> None:
    now = h.clock.now()
    if await h.storage.get_policy(WS) is None:
        await h.storage.put_policy(WS, GATE_OPEN, now)
    check_document(document)
    await h.storage.save_journey(WS, document["id"], document, now)
    await h.storage.transition_journey(WS, document["id"], "publish", now)


def at_now(h: Harness, n: int, **fields: Any) -> Event:
    now = h.clock.now()
    fields["context"] = {
        "traits": {"contact_email": "u1@example.com"},
        "consent": {"categoryPreferences": {"marketing": True}},
        **fields.get("context", {}),
    }
    return msgspec.structs.replace(
        make_event(n, user_id="u-1", **fields), timestamp=now, received_at=now
    )


async def outbox(h: Harness) -> list[tuple[str, str]]:
    """``(idempotency key, template)`` of every pending message, in insertion order."""
    found = []
    for message in await h.storage.pending_outbox(100):
        assert isinstance(message.effect, SendEffect)
        found.append((message.idempotency_key, message.effect.template))
    return found


async def only_instance(h: Harness) -> Any:
    page = await h.storage.list_journey_instances(WS, "welcome", 10)
    assert len(page.instances) == 1
    return page.instances[0]


async def test_an_event_trigger_sends_the_first_message_and_schedules_the_wait() -> None:
    h = Harness()
    await publish(h, WELCOME)
    await h.feed(at_now(h, 1, event="Signed Up"))
    instance = await only_instance(h)
    assert (instance.status, instance.step_id) == ("waiting", "pause")
    assert await outbox(h) == [(f"journey:{instance.id}:hello:1", "welcome-1")]
    profile = await h.profile_of("user_id", "u-1")
    assert instance.profile_id == profile.id
    row = await h.storage.get_scheduled(WS, f"journey:{instance.id}")
    assert row is not None
    assert row.due_at == h.clock.now() + timedelta(days=3)
    assert (row.event.source, row.event.event) == (JOURNEY_EVENT_SOURCE, JOURNEY_TIMER)
    assert row.event.properties == {"instance_id": instance.id, "seq": 1}
    metrics = await h.storage.journey_metrics(WS, "welcome")
    assert metrics.by_step()["hello"] == {"entered": 1, "sent": 1, "passed": 1}


async def test_a_duration_wait_fires_at_its_due_instant_and_sends_the_next_message_once() -> None:
    h = Harness()
    await publish(h, WELCOME)
    await h.feed(at_now(h, 1, event="Signed Up"))
    instance = await only_instance(h)
    due = h.clock.now() + timedelta(days=3)

    h.clock.advance(timedelta(days=3) - timedelta(seconds=1))
    assert await h.relay.run_due() == 0, "not due a second early"
    await drain(h)
    assert len(await outbox(h)) == 1

    h.clock.advance(timedelta(seconds=1))
    assert h.clock.now() == due
    assert await h.relay.run_due() == 1
    await drain(h)
    ended = await only_instance(h)
    assert ended.status == "completed"
    assert await outbox(h) == [
        (f"journey:{instance.id}:hello:1", "welcome-1"),
        (f"journey:{instance.id}:tips:1", "welcome-2"),
    ]
    assert await h.storage.get_scheduled(WS, f"journey:{instance.id}") is None
    # The timer went through the log, never into the customer's timeline.
    timer_ids = [
        e.event.message_id for e in await h.log.read(0, 100) if e.event.event == JOURNEY_TIMER
    ]
    assert timer_ids == [f"journey:{instance.id}:1:{due.isoformat()}"]
    assert timer_ids[0] not in await h.timeline(instance.profile_id)
    # Delivered again (a relay retry): the log keeps one, nothing is sent twice.
    await h.log.append([(await h.log.read(0, 100))[-1].event])
    await drain(h)
    assert len(await outbox(h)) == 2


async def test_an_exit_event_mid_wait_ends_the_instance_and_cancels_its_timer() -> None:
    h = Harness()
    await publish(h, WELCOME)
    await h.feed(at_now(h, 1, event="Signed Up"))
    instance = await only_instance(h)
    h.clock.advance(timedelta(days=1))
    await h.feed(at_now(h, 2, event="Unsubscribed"))
    ended = await only_instance(h)
    assert (ended.status, ended.end_reason) == (
        "exited",
        "exit criterion 0 matched event Unsubscribed",
    )
    assert await h.storage.get_scheduled(WS, f"journey:{instance.id}") is None
    h.clock.advance(timedelta(days=5))
    await drain(h)
    assert await outbox(h) == [(f"journey:{instance.id}:hello:1", "welcome-1")]
    assert any("exited" in line for line in describe(ended))


async def test_replaying_a_committed_step_sends_nothing_twice() -> None:
    h = Harness()
    await publish(h, WELCOME)
    await h.log.append([at_now(h, 1, event="Signed Up")])
    await h.processor.run_once()
    committed = h.storage.batches[-1]
    assert len(committed.outbox) == 1
    # The same step built again from the log (a worker restarted before it knew
    # the commit landed): storage already holds its instance and message.
    await h.storage.commit_processing(ProcessingBatch(consumer="profiles", offset=0))
    await h.processor.load_offset()
    await h.processor.run_once()
    replayed = h.storage.batches[-1]
    assert replayed.offset == committed.offset
    assert replayed.outbox == []
    assert len(await outbox(h)) == 1
    page = await h.storage.list_journey_instances(WS, "welcome", 10)
    assert len(page.instances) == 1


async def test_the_same_event_decides_the_same_instance_and_keys() -> None:
    """Ids derive from the triggering event: a step whose commit was lost decides the same."""
    first, second = Harness(), Harness()
    for h in (first, second):
        await publish(h, WELCOME)
        await h.feed(at_now(h, 1, event="Signed Up"))
    assert await outbox(first) == await outbox(second)


async def test_a_segment_entered_event_starts_an_instance() -> None:
    h = Harness()
    await define(h, "vip", {"trait": "plan", "op": "equals", "value": "gold"})
    await publish(
        h,
        {
            "id": "vip-hello",
            "name": "VIP hello",
            "triggers": [{"segment_entered": "vip"}],
            "start": "hi",
            "steps": {
                "hi": {
                    "message": {
                        "channel": "email",
                        "template": "vip",
                        "category": "promotional",
                        "topic": "news",
                    }
                }
            },
        },
    )
    await h.feed(at_now(h, 1, type="identify", traits={"plan": "silver"}))
    await drain(h)
    assert await h.storage.pending_outbox(10) == []
    await h.feed(at_now(h, 2, type="identify", traits={"plan": "gold"}))
    await drain(h)
    page = await h.storage.list_journey_instances(WS, "vip-hello", 10)
    # The Segment Entered event is named after the log offset of the event
    # that made her enter (the publish's signal came through the log first).
    [gold] = [e.offset for e in await h.log.read(0, 100) if e.event.message_id == "m2"]
    assert [(i.status, i.entered_by) for i in page.instances] == [
        ("completed", f"segment-entered:{gold}:vip")
    ]
    messages = await h.storage.pending_outbox(10)
    assert [m.idempotency_key for m in messages] == [f"journey:{page.instances[0].id}:hi:1"]


async def test_an_update_step_writes_traits_as_the_journey() -> None:
    h = Harness()
    await publish(
        h,
        {
            "id": "points",
            "name": "Points",
            "triggers": [{"event": "Feedback Submitted"}],
            "reentry": "always",
            "start": "give",
            "steps": {
                "give": {
                    "update": {
                        "increment": {"points": 500},
                        "set": {"rewarded": True},
                        "add_tags": ["gave-feedback"],
                    }
                }
            },
        },
    )
    await h.feed(at_now(h, 1, type="identify", traits={"points": 100}))
    before = await h.profile_of("user_id", "u-1")
    await h.feed(at_now(h, 2, event="Feedback Submitted"))
    await drain(h)
    await h.feed(at_now(h, 3, event="Feedback Submitted"))
    await drain(h)
    profile = await h.profile_of("user_id", "u-1")
    assert profile.traits["points"].value == 1100
    assert profile.traits["points"].source == JOURNEY_EVENT_SOURCE
    assert profile.traits["rewarded"].value is True
    assert profile.traits["tags"].value == ["gave-feedback"]
    # Not the customer's activity: only her own three events count.
    assert profile.event_count == before.event_count + 2


async def test_a_merge_moves_the_instances_to_the_merged_profile() -> None:
    h = Harness()
    await publish(h, WELCOME)
    await h.feed(
        msgspec.structs.replace(
            at_now(h, 1, event="Signed Up"), user_id=None, anonymous_id="anon-1"
        )
    )
    instance = await only_instance(h)
    await h.feed(at_now(h, 2, type="identify", traits={"email": "a@x.io"}))
    await h.feed(
        msgspec.structs.replace(at_now(h, 3, type="alias", previous_id="anon-1"), event=None)
    )
    winner = await h.profile_of("user_id", "u-1")
    moved = await only_instance(h)
    assert instance.profile_id != winner.id, "the anonymous profile was merged away"
    assert moved.id == instance.id
    assert moved.profile_id == winner.id
    # The wait still fires, for the merged profile.
    h.clock.advance(timedelta(days=3))
    await drain(h)
    assert [k for k, _ in await outbox(h)] == [
        f"journey:{instance.id}:hello:1",
        f"journey:{instance.id}:tips:1",
    ]


async def test_steps_built_while_the_previous_one_commits_see_its_instances() -> None:
    """One event per step: the second step is built while the first commits."""
    for batch_size in (1, 500):
        h = Harness(batch_size=batch_size)
        await publish(h, WELCOME)
        await h.log.append(
            [
                at_now(h, 1, event="Signed Up"),
                at_now(h, 2, event="Signed Up"),
                at_now(h, 3, event="Unsubscribed"),
            ]
        )
        await drain(h)
        ended = await only_instance(h)
        assert ended.status == "exited", batch_size
        assert await outbox(h) == [(f"journey:{ended.id}:hello:1", "welcome-1")]
        assert await h.storage.get_scheduled(WS, f"journey:{ended.id}") is None
