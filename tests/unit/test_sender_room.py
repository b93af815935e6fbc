"""The sender claims only what it has room for; the rest stays due, untouched."""

from __future__ import annotations

import asyncio

from rapport.channels.base import ChannelRegistry, DeliveryResult, OutgoingMessage
from rapport.core.clock import VirtualClock
from rapport.runtime.sender import Sender
from rapport.runtime.sender_limits import SenderConfig
from rapport.storage.memory import MemoryStorage
from tests.unit.sender_helpers import T0, WS, commit, compose, send_message


class GatedChannel:
    """Holds every send until the test opens the gate."""

    def __init__(self, name: str, provider: str) -> None:
        self.name = name
        self.provider = provider
        self.calls: list[OutgoingMessage] = []
        self.gate = asyncio.Event()

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        self.calls.append(message)
        await self.gate.wait()
        return DeliveryResult(provider_message_id=f"id-{len(self.calls)}")

    async def close(self) -> None:
        pass


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_busy_sender_leaves_what_it_cannot_take_due_and_untouched() -> None:
    storage = MemoryStorage()
    clock = VirtualClock(T0)
    email = GatedChannel("email", "smtp:mail.test:25")
    channels = ChannelRegistry()
    channels.register(email)
    config = SenderConfig(batch_size=4, queue=10, rate_per_second=1000, burst=1000)
    sender = Sender(storage, channels, compose, clock, config=config)
    await commit(storage, *(send_message(f"i{n}") for n in range(10)))

    assert await sender.run_once() == 4
    await settle()
    assert len(email.calls) == 4 and sender.room() == 0
    assert await sender.run_once() == 0  # no room: nothing claimed, nothing held
    waiting = [m for m in await storage.pending_outbox(100) if m.next_attempt_at == T0]
    assert len(waiting) == 6
    assert all(m.attempts == 0 and m.error is None for m in waiting)

    email.gate.set()
    await sender.drain()
    assert sender.room() == 4
    assert await sender.deliver_due() == 6
    assert len(email.calls) == 10
    for n in range(10):
        stored = await storage.get_outbox(WS, f"journey:i{n}:hello:1")
        assert stored is not None and stored.status == "sent"


async def test_a_provider_with_a_full_queue_does_not_take_the_room_of_the_others() -> None:
    storage = MemoryStorage()
    clock = VirtualClock(T0)
    email = GatedChannel("email", "smtp:mail.test:25")  # stuck: never answers here
    sms = GatedChannel("sms", "twilio:api.test")
    sms.gate.set()
    channels = ChannelRegistry()
    channels.register(email)
    channels.register(sms)
    config = SenderConfig(batch_size=3, queue=3, rate_per_second=1000, burst=1000)
    sender = Sender(storage, channels, compose, clock, config=config)
    await commit(storage, *(send_message(f"e{n}") for n in range(3)))
    assert await sender.run_once() == 3
    await settle()
    assert len(email.calls) == 3  # email's queue is full, and it holds the whole batch

    await commit(
        storage, *(send_message(f"s{n}", "sms", address="+15550100") for n in range(2)), offset=2
    )
    assert sender.room() == 3
    assert await sender.run_once() == 2
    await settle()
    assert len(sms.calls) == 2
    for n in range(2):
        stored = await storage.get_outbox(WS, f"journey:s{n}:hello:1")
        assert stored is not None and stored.status == "sent"
    email.gate.set()
    await sender.drain()
