"""The sender over every storage backend: retries, dead letters, replay, events, once each.

On PostgreSQL two senders share the outbox (two workers): no message is sent twice.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from rapport.channels.base import ChannelRegistry
from rapport.core.clock import VirtualClock
from rapport.runtime.relay import Relay
from rapport.runtime.sender import Sender
from rapport.runtime.sender_limits import SenderConfig
from rapport.storage.postgres import PostgresStorage
from tests.contract.conftest import Backend
from tests.unit.sender_helpers import T0, WS, ScriptedChannel, commit, compose, send_message


async def test_retries_dead_letter_replay_and_events(backend: Backend) -> None:
    storage, log = backend
    clock = VirtualClock(T0)
    email, sms = ScriptedChannel("email", "smtp:a:25"), ScriptedChannel("sms", "https://sms")
    channels = ChannelRegistry()
    channels.register(email)
    channels.register(sms)
    relay = Relay(storage, log, clock)
    sender = Sender(
        storage,
        channels,
        compose,
        clock,
        config=SenderConfig(max_attempts=2, backoff_base=60, breaker_failures=100),
        random=lambda: 1.0,
        on_recorded=relay.notify,
    )
    email.down()
    await commit(storage, send_message("e1"), send_message("s1", "sms", address="+33611"))
    await sender.deliver_due()
    assert len(sms.calls) == 1 and len(email.calls) == 1
    clock.advance(timedelta(seconds=60))
    await sender.deliver_due()
    dead = await storage.get_outbox(WS, "journey:e1:hello:1")
    assert dead is not None and dead.status == "dead" and dead.attempts == 2
    [listed] = (await storage.list_dead(WS, 10)).messages
    assert listed.idempotency_key == "journey:e1:hello:1"
    email.up()
    clock.advance(timedelta(seconds=1))
    assert await storage.replay_dead(WS, "journey:e1:hello:1", clock.now()) is not None
    await sender.deliver_due()
    sent = await storage.get_outbox(WS, "journey:e1:hello:1")
    assert sent is not None and sent.status == "sent" and sent.attempts == 1
    assert sent.provider_message_id == "smtp:a:25-3"
    await relay.run_due()
    entries = await log.read(0, 100)
    assert [(e.event.event, e.event.properties["message"]) for e in entries] == [
        ("Message Sent", "journey:s1:hello:1"),
        ("Message Failed", "journey:e1:hello:1"),
        ("Message Sent", "journey:e1:hello:1"),
    ]
    # Appending them again (a relay that crashed before deleting) adds nothing.
    assert await log.append([e.event for e in entries]) == [False, False, False]


async def test_two_senders_on_one_outbox_send_each_message_once(backend: Backend) -> None:
    storage, _ = backend
    if not isinstance(storage, PostgresStorage):
        pytest.skip("several senders share an outbox on PostgreSQL only")
    clock = VirtualClock(T0)
    email = ScriptedChannel("email", "smtp:a:25")
    email.delay = 0.001
    channels = ChannelRegistry()
    channels.register(email)
    config = SenderConfig(batch_size=20, rate_per_second=10_000, burst=10_000)
    senders = [Sender(storage, channels, compose, clock, config=config) for _ in range(3)]
    await commit(storage, *(send_message(f"i{n:03}") for n in range(150)))
    await asyncio.gather(*(sender.deliver_due() for sender in senders))
    keys = [m.idempotency_key for m in email.calls]
    assert len(keys) == len(set(keys)) == 150
    assert sum(s.sent_total for s in senders) == 150
