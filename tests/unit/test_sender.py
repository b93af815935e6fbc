"""The sender's rules on the in-memory backend, a virtual clock and scripted channels.

Retries with backoff and jitter, Retry-After, dead letters and replay, the
circuit breaker keeping one provider's trouble from the others, rate and
concurrency limits, quiet hours, webhooks, and the delivery events the relay
appends to the log.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from rapport.channels.base import (
    ChannelRegistry,
    OutgoingMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from rapport.core.clock import VirtualClock
from rapport.runtime.relay import Relay
from rapport.runtime.sender import Sender
from rapport.runtime.sender_limits import CircuitBreaker, SenderConfig, TokenBucket, backoff
from rapport.storage.memory import MemoryEventLog, MemoryStorage
from tests.unit.sender_helpers import (
    T0,
    WS,
    ScriptedChannel,
    commit,
    compose,
    send_message,
    webhook_message,
)


class Setup:
    def __init__(self, config: SenderConfig | None = None) -> None:
        self.storage = MemoryStorage()
        self.log = MemoryEventLog()
        self.clock = VirtualClock(T0)
        self.email = ScriptedChannel("email", "smtp:mail.test:25")
        self.sms = ScriptedChannel("sms", "https://sms.test")
        self.hooks = ScriptedChannel("webhook", "webhook")
        self.channels = ChannelRegistry()
        for channel in (self.email, self.sms, self.hooks):
            self.channels.register(channel)
        self.relay = Relay(self.storage, self.log, self.clock)
        self.sender = Sender(
            self.storage,
            self.channels,
            compose,
            self.clock,
            config=config or SenderConfig(),
            random=lambda: 0.5,
            on_recorded=self.relay.notify,
        )

    async def deliver(self) -> int:
        claimed = await self.sender.deliver_due()
        await self.relay.run_due()
        return claimed

    def advance(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    async def status(self, instance_id: str, step: str = "hello") -> str:
        message = await self.storage.get_outbox(WS, f"journey:{instance_id}:{step}:1")
        assert message is not None
        return message.status

    async def events(self) -> list[tuple[str, dict[str, object]]]:
        return [
            (str(entry.event.event), dict(entry.event.properties))
            for entry in await self.log.read(0, 1000)
        ]


async def test_a_message_goes_out_once_and_its_event_reaches_the_log() -> None:
    s = Setup()
    await commit(s.storage, send_message("i1"))
    assert await s.deliver() == 1
    [sent] = s.email.calls
    assert (sent.to, sent.channel, sent.idempotency_key) == (
        "dana@example.test",
        "email",
        "journey:i1:hello:1",
    )
    stored = await s.storage.get_outbox(WS, "journey:i1:hello:1")
    assert stored is not None
    assert (stored.status, stored.attempts, stored.provider_message_id) == (
        "sent",
        1,
        "smtp:mail.test:25-1",
    )
    assert stored.sent_at == T0 and stored.template_version == 3
    [entry] = await s.log.read(0, 10)
    assert entry.event.event == "Message Sent" and entry.event.source == "rapport:delivery"
    assert entry.event.message_id == "delivery:sent:journey:i1:hello:1"
    assert entry.event.profile_id == "prof_i1"
    assert entry.event.properties == {
        "message": "journey:i1:hello:1",
        "channel": "email",
        "topic": "news",
        "journey_id": "welcome",
        "step_id": "hello",
        "provider_message_id": "smtp:mail.test:25-1",
    }
    # Nothing is due any more; a replayed processing step sends nothing again.
    await commit(s.storage, send_message("i1"))
    assert await s.deliver() == 0
    assert len(s.email.calls) == 1


async def test_retries_back_off_with_jitter_then_the_message_is_dead() -> None:
    config = SenderConfig(max_attempts=3, backoff_base=10, breaker_failures=100)
    s = Setup(config)
    s.email.down()
    await commit(s.storage, send_message("i1"))
    await s.deliver()
    stored = await s.storage.get_outbox(WS, "journey:i1:hello:1")
    assert stored is not None and stored.attempts == 1 and stored.error == "421 service down"
    # 10 s, equal jitter with random() = 0.5: 5 + 2.5.
    assert stored.next_attempt_at == T0 + timedelta(seconds=7.5)
    s.advance(7)
    assert await s.deliver() == 0
    s.advance(0.5)
    await s.deliver()
    stored = await s.storage.get_outbox(WS, "journey:i1:hello:1")
    assert stored is not None and stored.attempts == 2
    assert stored.next_attempt_at == s.clock.now() + timedelta(seconds=15)  # 20 s jittered
    s.advance(15)
    await s.deliver()
    assert await s.status("i1") == "dead"
    assert len(s.email.calls) == 3
    dead = (await s.storage.list_dead(WS, 10)).messages
    assert [m.error for m in dead] == ["421 service down (after 3 attempts)"]
    [(name, properties)] = await s.events()
    assert name == "Message Failed" and properties["error"] == "421 service down (after 3 attempts)"
    # Replayed once the provider is back: sent, once.
    s.email.up()
    assert await s.storage.replay_dead(WS, "journey:i1:hello:1", s.clock.now()) is not None
    await s.deliver()
    assert await s.status("i1") == "sent"
    assert len(s.email.calls) == 4
    assert [name for name, _ in await s.events()] == ["Message Failed", "Message Sent"]


async def test_retry_after_is_a_floor() -> None:
    s = Setup(SenderConfig(backoff_base=1))
    s.email.down(retry_after=120)
    await commit(s.storage, send_message("i1"))
    await s.deliver()
    stored = await s.storage.get_outbox(WS, "journey:i1:hello:1")
    assert stored is not None and stored.next_attempt_at == T0 + timedelta(seconds=120)


async def test_a_permanent_error_is_dead_at_once() -> None:
    s = Setup()
    s.email.fail = lambda message: PermanentDeliveryError("550 5.1.1 no such mailbox")
    await commit(s.storage, send_message("i1"), send_message("i2", address="broken@example.test"))
    await s.deliver()
    one, two = (
        await s.storage.get_outbox(WS, "journey:i1:hello:1"),
        await s.storage.get_outbox(WS, "journey:i2:hello:1"),
    )
    assert one is not None and (one.status, one.attempts, one.error) == (
        "dead",
        1,
        "550 5.1.1 no such mailbox",
    )
    # The composer could not render it: dead without reaching the channel.
    assert two is not None and two.status == "dead" and "missing variable" in (two.error or "")
    assert [m.to for m in s.email.calls] == ["dana@example.test"]


async def test_one_provider_down_never_stalls_the_other() -> None:
    # One at a time per provider, so the circuit opens before the fourth email is tried.
    config = SenderConfig(breaker_failures=3, breaker_cooldown=60, backoff_base=5, concurrency=1)
    s = Setup(config)
    s.email.down()
    await commit(
        s.storage,
        *(send_message(f"e{n}") for n in range(10)),
        *(send_message(f"s{n}", "sms", address="+33600000000") for n in range(10)),
    )
    await s.deliver()
    # SMS all out; email's circuit opened after 3 failures, the rest held, not tried.
    assert len(s.sms.calls) == 10
    assert len(s.email.calls) == 3
    assert s.sender.breaker("smtp:mail.test:25").state == "open"
    statuses = [await s.status(f"e{n}") for n in range(10)]
    assert statuses == ["pending"] * 10
    attempts = []
    for n in range(10):
        message = await s.storage.get_outbox(WS, f"journey:e{n}:hello:1")
        assert message is not None
        attempts.append(message.attempts)
    assert sorted(attempts) == [0] * 7 + [1] * 3
    # New SMS keep flowing while the circuit is open.
    await commit(s.storage, send_message("s10", "sms", address="+33600000001"), offset=2)
    s.advance(10)
    await s.deliver()
    assert len(s.sms.calls) == 11 and len(s.email.calls) == 3
    # After the cool-down one probe goes; it fails: open again, nothing else tried.
    s.advance(51)
    await s.deliver()
    assert len(s.email.calls) == 4
    assert s.sender.breaker("smtp:mail.test:25").state == "open"
    # The provider is back: the next probe closes the circuit, everything goes.
    s.email.up()
    for _ in range(3):
        s.advance(62)
        await s.deliver()
    assert [await s.status(f"e{n}") for n in range(10)] == ["sent"] * 10
    assert len({m.idempotency_key for m in s.email.calls if m.to}) == 10
    assert s.sender.breaker("smtp:mail.test:25").state == "closed"


async def test_the_rate_limit_holds_messages_back_without_an_attempt() -> None:
    s = Setup(SenderConfig(rate_per_second=2, burst=3))
    await commit(s.storage, *(send_message(f"i{n}") for n in range(7)))
    await s.deliver()
    assert len(s.email.calls) == 3
    held = await s.storage.get_outbox(WS, "journey:i3:hello:1")
    assert held is not None and held.attempts == 0 and held.status == "pending"
    s.advance(1)
    await s.deliver()
    assert len(s.email.calls) == 5
    s.advance(1)
    await s.deliver()
    assert len(s.email.calls) == 7
    assert len({m.idempotency_key for m in s.email.calls}) == 7


async def test_concurrency_per_provider_is_bounded() -> None:
    s = Setup(SenderConfig(concurrency=2))
    s.email.delay = 0.02
    s.sms.delay = 0.02
    await commit(
        s.storage,
        *(send_message(f"e{n}") for n in range(4)),
        *(send_message(f"s{n}", "sms", address="+3360000000") for n in range(4)),
    )
    await s.sender.run_once()
    await asyncio.sleep(0.005)
    # Both providers busy at once, each at most 2 in flight.
    assert s.email.in_flight == 2 and s.sms.in_flight == 2
    await s.sender.drain()
    assert s.email.max_in_flight == 2 and s.sms.max_in_flight == 2
    assert len(s.email.calls) == 4 and len(s.sms.calls) == 4


async def test_a_slow_provider_times_out_as_a_transient_failure() -> None:
    s = Setup(SenderConfig(send_timeout=0.05))
    s.email.delay = 1.0
    await commit(s.storage, send_message("i1"))
    await s.deliver()
    stored = await s.storage.get_outbox(WS, "journey:i1:hello:1")
    assert stored is not None and stored.status == "pending" and stored.attempts == 1
    assert stored.error == "no answer within 0.05 s"


async def test_quiet_hours_are_honoured() -> None:
    s = Setup()
    end = T0 + timedelta(hours=10)
    await commit(s.storage, send_message("i1", not_before=end))
    assert await s.sender.settled()  # nothing due before the quiet hours end
    assert await s.deliver() == 0
    s.clock.set(end)
    assert not await s.sender.settled()
    await s.deliver()
    assert await s.status("i1") == "sent"
    assert await s.sender.settled()


async def test_a_webhook_step_is_posted_as_json_with_its_headers() -> None:
    s = Setup()
    await commit(s.storage, webhook_message("i1", "https://hooks.shop.test/orders"))
    await s.deliver()
    [call] = s.hooks.calls
    assert call.to == "https://hooks.shop.test/orders" and call.channel == "webhook"
    assert json.loads(call.content["body"]) == {"order": 42, "items": ["a", None]}
    assert call.headers == {"X-Shop": "demo"}
    assert await s.status("i1", "notify") == "sent"
    [(name, properties)] = await s.events()
    assert name == "Message Sent" and properties["channel"] == "webhook"
    assert properties["topic"] is None


async def test_a_channel_that_is_not_configured_dead_letters_the_message() -> None:
    s = Setup()
    await commit(s.storage, send_message("i1", "push", address="device-token"))
    await s.deliver()
    [dead] = (await s.storage.list_dead(WS, 10)).messages
    assert dead.error == "no channel named 'push' is configured"


async def test_the_run_loop_delivers_until_stopped() -> None:
    s = Setup()
    stop = asyncio.Event()
    task = asyncio.create_task(s.sender.run(stop))
    await commit(s.storage, send_message("i1"))
    s.sender.notify()
    for _ in range(200):
        if s.email.calls:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert await s.status("i1") == "sent"


def test_backoff_grows_exponentially_with_equal_jitter_up_to_the_cap() -> None:
    config = SenderConfig(backoff_base=30, backoff_max=100)
    assert backoff(1, config, lambda: 0.0, None) == 15
    assert backoff(1, config, lambda: 1.0, None) == 30
    assert backoff(2, config, lambda: 1.0, None) == 60
    assert backoff(5, config, lambda: 1.0, None) == 100
    assert backoff(1, config, lambda: 0.0, 40.0) == 40


def test_the_token_bucket_refills_with_time() -> None:
    bucket = TokenBucket(rate=2, burst=2, now=T0)
    assert bucket.take(T0) == 0 and bucket.take(T0) == 0
    assert bucket.take(T0) == pytest.approx(0.5)
    assert bucket.take(T0 + timedelta(seconds=0.5)) == 0


def test_the_breaker_opens_probes_and_closes() -> None:
    breaker = CircuitBreaker(failures=2, cooldown=60)
    breaker.failed(T0)
    assert breaker.blocked_until(T0) is None
    breaker.failed(T0)
    assert breaker.state == "open"
    assert breaker.blocked_until(T0 + timedelta(seconds=10)) == T0 + timedelta(seconds=60)
    assert breaker.blocked_until(T0 + timedelta(seconds=60)) is None  # the probe
    assert breaker.state == "half_open"
    assert breaker.blocked_until(T0 + timedelta(seconds=61)) is not None  # one probe only
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.blocked_until(T0) is None


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        SenderConfig(concurrency=0)


async def test_composed_channel_is_the_routed_one() -> None:
    # The gate routed to SMS: whatever the composer says, SMS sends it.
    s = Setup()

    async def email_composer(message: object) -> OutgoingMessage:
        composed = await compose(message)  # type: ignore[arg-type]
        return OutgoingMessage(
            idempotency_key=composed.idempotency_key,
            workspace_id=composed.workspace_id,
            profile_id=composed.profile_id,
            channel="email",
            to=composed.to,
        )

    s.sender._compose = email_composer
    await commit(s.storage, send_message("i1", "sms", address="+33600000000"))
    await s.deliver()
    assert len(s.sms.calls) == 1 and s.sms.calls[0].channel == "sms" and not s.email.calls


def test_a_probe_that_never_answers_lets_another_through() -> None:
    breaker = CircuitBreaker(failures=1, cooldown=60)
    breaker.failed(T0)
    assert breaker.blocked_until(T0 + timedelta(seconds=60)) is None  # probe taken, then lost
    assert breaker.open_until(T0 + timedelta(seconds=100)) is not None
    assert breaker.open_until(T0 + timedelta(seconds=120)) is None
    assert breaker.blocked_until(T0 + timedelta(seconds=120)) is None


async def test_a_failing_composer_leaves_the_providers_circuit_alone() -> None:
    s = Setup(SenderConfig(breaker_failures=1, backoff_base=10))

    async def unavailable(message: object) -> OutgoingMessage:
        raise TransientDeliveryError("code pool locked")

    s.sender._compose = unavailable
    await commit(s.storage, send_message("i1"))
    await s.deliver()
    stored = await s.storage.get_outbox(WS, "journey:i1:hello:1")
    assert stored is not None and stored.attempts == 1 and stored.error == "code pool locked"
    assert s.sender.breaker("smtp:mail.test:25").state == "closed" and not s.email.calls


async def test_a_sender_that_dies_mid_send_loses_nothing() -> None:
    s = Setup(SenderConfig(lease=300))
    s.email.delay = 60.0  # the provider never answers before the "crash"
    await commit(s.storage, send_message("i1"))
    assert await s.sender.run_once() == 1
    await asyncio.sleep(0.01)
    for task in list(s.sender._tasks):  # the process dies: nothing is recorded
        task.cancel()
    await asyncio.gather(*s.sender._tasks, return_exceptions=True)
    stored = await s.storage.get_outbox(WS, "journey:i1:hello:1")
    assert stored is not None and stored.status == "pending" and stored.attempts == 0
    # Another sender (a restarted process) sends it once the lease has run out.
    s.email.delay = 0.0
    other = Sender(s.storage, s.channels, compose, s.clock, random=lambda: 0.5)
    assert await other.deliver_due() == 0
    s.advance(300)
    assert await other.deliver_due() == 1
    assert await s.status("i1") == "sent"
    # Both tries carried the same key: a provider that deduplicates keeps one.
    assert [m.idempotency_key for m in s.email.calls] == ["journey:i1:hello:1"] * 2
