"""A message step after an update step is gated and rendered against the updated profile."""

from __future__ import annotations

from typing import Any

from rapport.core.journeys.effects import SendEffect, TraitUpdateEffect
from rapport.runtime.journey_effects import held_sends, split_sends, update_event
from tests.unit.test_processor import WS, Harness, drain
from tests.unit.test_processor_journeys import at_now, outbox, publish

POINTS: dict[str, Any] = {
    "id": "points",
    "name": "Points, then a thank-you",
    "triggers": [{"event": "Feedback Submitted"}],
    "reentry": "always",
    "start": "hello",
    "steps": {
        "hello": {
            "message": {"channel": "email", "template": "ack", "category": "transactional"},
            "next": "give",
        },
        "give": {"update": {"increment": {"points": 500}}, "next": "thanks"},
        "thanks": {
            "message": {"channel": "email", "template": "thanks", "category": "transactional"},
        },
    },
}


def send(key: str, profile: str = "p-1") -> SendEffect:
    return SendEffect(
        idempotency_key=key,
        instance_id="i-1",
        journey_id="j",
        version=1,
        step_id=key,
        profile_id=profile,
        channels=("email",),
        template=key,
        category="transactional",
        data={"points_added": 500},
    )


def update(key: str, profile: str = "p-1") -> TraitUpdateEffect:
    return TraitUpdateEffect(
        idempotency_key=key, instance_id="i-1", profile_id=profile, source="journey:j:v1:" + key
    )


def test_sends_after_an_update_of_their_profile_wait_for_the_latest_one() -> None:
    effects = [
        send("a"),
        update("u1"),
        send("b"),
        send("other", profile="p-2"),
        update("u2"),
        send("c"),
    ]
    now, after = split_sends(effects)
    assert [s.idempotency_key for s in now] == ["a", "other"]
    assert {k: [s.idempotency_key for s in v] for k, v in after.items()} == {
        "u1": ["b"],
        "u2": ["c"],
    }


def test_the_update_event_carries_its_sends_whole() -> None:
    waiting = [send("b"), send("c")]
    event = update_event(WS, update("u1"), at_now(Harness(), 1).received_at, waiting)
    assert held_sends(event) == waiting
    assert held_sends(update_event(WS, update("u2"), event.received_at)) == []


async def test_the_thank_you_reaches_the_outbox_once_the_points_are_on_the_profile() -> None:
    h = Harness()
    await publish(h, POINTS)
    await h.feed(at_now(h, 1, type="identify", traits={"points": 100}))
    await h.feed(at_now(h, 2, event="Feedback Submitted"))
    # The step that ran the journey: the acknowledgement at once, the thank-you
    # not before the update is applied.
    assert [template for _, template in await outbox(h)] == ["ack"]
    assert (await h.profile_of("user_id", "u-1")).traits["points"].value == 100
    await drain(h)
    assert [template for _, template in await outbox(h)] == ["ack", "thanks"]
    assert (await h.profile_of("user_id", "u-1")).traits["points"].value == 600
