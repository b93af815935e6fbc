"""A message whose send is in flight is not sent again when its lease runs out under it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from rapport.channels.base import ChannelRegistry, DeliveryResult, OutgoingMessage
from rapport.core.clock import VirtualClock
from rapport.runtime.sender import Sender
from rapport.runtime.sender_limits import SenderConfig
from rapport.storage.memory import MemoryStorage
from tests.unit.sender_helpers import T0, WS, commit, compose, send_message


class GatedChannel:
    """Holds every send until the test opens the gate."""

    name = "email"
    provider = "smtp:mail.test:25"

    def __init__(self) -> None:
        self.calls: list[OutgoingMessage] = []
        self.gate = asyncio.Event()

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        self.calls.append(message)
        await self.gate.wait()
        return DeliveryResult(provider_message_id=f"id-{len(self.calls)}")

    async def close(self) -> None:
        pass


async def test_a_clock_jumping_past_the_lease_mid_send_does_not_send_twice() -> None:
    storage = MemoryStorage()
    clock = VirtualClock(T0)
    channel = GatedChannel()
    channels = ChannelRegistry()
    channels.register(channel)
    sender = Sender(storage, channels, compose, clock, config=SenderConfig(lease=60))
    await commit(storage, send_message("i1"))

    assert await sender.run_once() == 1
    await asyncio.sleep(0)  # the send starts and waits at the gate
    assert len(channel.calls) == 1
    # A test (or a suspended VM) moves time past the lease: the row is due again.
    clock.advance(timedelta(minutes=45))
    await sender.run_once()
    await asyncio.sleep(0)
    assert len(channel.calls) == 1, "claimed again while in flight and sent twice"

    channel.gate.set()
    await sender.drain()
    stored = await storage.get_outbox(WS, "journey:i1:hello:1")
    assert stored is not None and stored.status == "sent"
    assert await sender.run_once() == 0
    assert len(channel.calls) == 1
