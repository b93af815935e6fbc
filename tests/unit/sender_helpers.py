"""What the sender tests share: messages as the gate leaves them, a composer, tiny channels."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from rapport.channels.base import (
    DeliveryResult,
    OutgoingMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from rapport.core.journeys.effects import SendEffect, WebhookEffect, idempotency_key
from rapport.core.policy.checks import GateVerdict, PolicyCheck
from rapport.storage.base import ProcessingBatch, Storage
from rapport.storage.journey_runs import OutboxMessage

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WS = "ws_a"


def send_message(
    instance_id: str,
    channel: str = "email",
    *,
    address: str = "dana@example.test",
    not_before: datetime | None = None,
    created_at: datetime = T0,
) -> OutboxMessage:
    key = idempotency_key(instance_id, "hello", 1)
    return OutboxMessage(
        workspace_id=WS,
        idempotency_key=key,
        profile_id=f"prof_{instance_id}",
        created_at=created_at,
        verdict=GateVerdict(
            outcome="defer" if not_before else "send",
            channel=channel,
            address=address,
            not_before=not_before,
            checks=(PolicyCheck(name="consent", passed=True, detail=f"{channel} consent"),),
        ),
        effect=SendEffect(
            idempotency_key=key,
            instance_id=instance_id,
            journey_id="welcome",
            version=2,
            step_id="hello",
            profile_id=f"prof_{instance_id}",
            channels=(channel,),
            template="welcome-1",
            category="promotional",
            topic="news",
            trigger_message_id=f"msg-{instance_id}",
        ),
    )


def webhook_message(instance_id: str, url: str) -> OutboxMessage:
    key = idempotency_key(instance_id, "notify", 1)
    return OutboxMessage(
        workspace_id=WS,
        idempotency_key=key,
        profile_id=f"prof_{instance_id}",
        created_at=T0,
        effect=WebhookEffect(
            idempotency_key=key,
            instance_id=instance_id,
            journey_id="welcome",
            version=2,
            step_id="notify",
            profile_id=f"prof_{instance_id}",
            url=url,
            method="POST",
            headers={"X-Shop": "demo"},
            body={"order": 42, "items": ["a", None]},
        ),
    )


async def compose(message: OutboxMessage) -> OutgoingMessage:
    """A real composer's shape: the gate's address and channel, a rendered subject."""
    verdict = message.verdict
    effect = message.effect
    assert verdict is not None and verdict.channel and verdict.address
    assert isinstance(effect, SendEffect)
    if verdict.address.startswith("broken"):
        raise PermanentDeliveryError("template welcome-1: missing variable first_name")
    return OutgoingMessage(
        idempotency_key=message.idempotency_key,
        workspace_id=message.workspace_id,
        profile_id=message.profile_id,
        channel=verdict.channel,
        to=verdict.address,
        topic=effect.topic,
        content={"subject": f"Hello from {effect.journey_id}", "text": "hi"},
        metadata={"template_version": 3},
    )


async def commit(storage: Storage, *messages: OutboxMessage, offset: int = 1) -> None:
    await storage.commit_processing(
        ProcessingBatch(consumer="profiles", offset=offset, outbox=list(messages))
    )


class ScriptedChannel:
    """A channel whose answers a test sets: ``fail`` decides per message (None: accept)."""

    def __init__(self, name: str, provider: str) -> None:
        self.name = name
        self.provider = provider
        self.calls: list[OutgoingMessage] = []
        self.fail: Callable[[OutgoingMessage], Exception | None] = lambda message: None
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    def down(self, retry_after: float | None = None) -> None:
        self.fail = lambda message: TransientDeliveryError("421 service down", retry_after)

    def up(self) -> None:
        self.fail = lambda message: None

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        self.calls.append(message)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            error = self.fail(message)
            if error is not None:
                raise error
            return DeliveryResult(provider_message_id=f"{self.provider}-{len(self.calls)}")
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        self.closed = True
