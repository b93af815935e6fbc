"""An idle sender reads whether anything is due before it claims (a claim is a write).

A sender in a process of its own (``rapport sender``) is not woken by the
processor's commits: it polls every ``idle_poll``. Each poll must be a read;
a claim (on SQLite a write that takes the file's write lock, which the other
processes then wait for) only when something is due or a commit woke it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from rapport.channels.base import ChannelRegistry
from rapport.core.clock import VirtualClock
from rapport.runtime.sender import Sender
from rapport.runtime.sender_limits import SenderConfig
from rapport.storage.journey_runs import OutboxMessage
from rapport.storage.memory import MemoryStorage
from tests.unit.sender_helpers import T0, WS, ScriptedChannel, commit, compose, send_message


class CountingStorage(MemoryStorage):
    """The memory backend, counting the sender's claims and due-time reads."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0
        self.reads = 0

    async def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[OutboxMessage]:
        self.claims += 1
        return await super().claim_due(now, limit, lease)

    async def next_outbox_at(self) -> datetime | None:
        self.reads += 1
        return await super().next_outbox_at()


async def wait_for(done: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not done():  # noqa: ASYNC110 - polling what another task changes
            await asyncio.sleep(0.005)


async def test_polls_read_and_claim_only_what_is_due() -> None:
    storage = CountingStorage()
    channels = ChannelRegistry()
    email = ScriptedChannel("email", "smtp:mail.test:25")
    channels.register(email)
    config = SenderConfig(idle_poll=0.01, rate_per_second=1000, burst=1000)
    sender = Sender(storage, channels, compose, VirtualClock(T0), config=config)
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    try:
        # Idle: a dozen polls or more, all reads; only the very first pass claims.
        await wait_for(lambda: storage.reads >= 12)
        assert storage.claims == 1

        # Committed by "another process": nobody calls notify; a poll finds it due.
        await commit(storage, send_message("i1"))
        await wait_for(lambda: len(email.calls) == 1)
        await sender.drain()
        stored = await storage.get_outbox(WS, "journey:i1:hello:1")
        assert stored is not None and stored.status == "sent"

        # Idle again: polls read, nothing more is claimed.
        claims, reads = storage.claims, storage.reads
        await wait_for(lambda: storage.reads >= reads + 10)
        assert storage.claims <= claims + 1  # at most the pass right after the send
    finally:
        stop.set()
        await running
