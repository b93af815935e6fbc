"""The sender: pending outbox messages -> channels, once each, with retries and limits.

A loop claims due messages (``Storage.claim_due``: a lease makes a claimed
message invisible to other claims, and on PostgreSQL ``SKIP LOCKED`` keeps
two workers off the same row), then for each one:

1. picks the channel: the gate's ``verdict.channel`` (``webhook`` for a
   webhook step), and the channel's provider, which limits are kept per
   (a webhook's provider is its host);
2. holds it back without an attempt -- rescheduling it, not waiting -- when
   quiet hours are not over, the provider's circuit is open, its queue is
   full or its rate limit is spent, so a slow or failing provider never
   holds up the messages of the others;
3. composes it (``Composer``: template, links, codes; the messages of one
   claim taken in hand are first handed together to the composer's
   ``prefetch``, which reads their facts in a few storage calls) and sends
   it, at most ``concurrency`` at once per provider, within ``send_timeout``;
4. records the answer at once (``Storage.record_attempt``): sent with the
   provider's id; a transient failure retried after an exponential backoff
   with jitter (never before the provider's ``Retry-After``), until
   ``max_attempts``; a permanent failure, or too many, dead (the
   dead-letter list, see ``replay_dead``). ``Message Sent`` / ``Message
   Failed`` events are stored in that same transaction, for the relay to
   append to the event log (message ids derived from the idempotency key, so
   delivering one twice appends it once).

Exactly once: a message leaves the outbox only through a recorded answer.
The one window left is between the provider accepting a message and
``record_attempt`` committing (a crash, or storage down for longer than the
few retries of the record): the lease then runs out and the message is sent
again. Every send carries the message's idempotency key (``Message-ID``,
``Idempotency-Key``), so providers that deduplicate drop the second copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import random as random_module
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import msgspec
import structlog

from rapport.channels.base import (
    Channel,
    ChannelRegistry,
    DeliveryResult,
    OutgoingMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
    UnknownChannelError,
)
from rapport.core.clock import Clock
from rapport.core.journeys.effects import SendEffect, WebhookEffect
from rapport.core.model import Event, ScheduledEvent
from rapport.runtime.sender_limits import CircuitBreaker, SenderConfig, TokenBucket, backoff
from rapport.storage.base import Storage
from rapport.storage.journey_runs import OutboxMessage
from rapport.storage.outbox import DeliveryAttempt

log = structlog.get_logger("rapport.sender")

Composer = Callable[[OutboxMessage], Awaitable[OutgoingMessage]]
"""Turns a claimed message into what a channel sends (rendered template, signed
links, promo codes); raises ``PermanentDeliveryError`` when it cannot."""

DELIVERY_SOURCE = "rapport:delivery"
MESSAGE_SENT = "Message Sent"
MESSAGE_FAILED = "Message Failed"
RECORD_RETRIES = 3
"""Times a failed ``record_attempt`` is retried before the lease is left to run out."""
Prefetch = Callable[[Sequence[OutboxMessage]], Awaitable[None]]
"""A composer's optional ``prefetch``: reads for a claim's messages, all at once."""


class Sender:
    """Delivers due outbox messages (see the module doc)."""

    def __init__(
        self,
        storage: Storage,
        channels: ChannelRegistry,
        composer: Composer,
        clock: Clock,
        *,
        config: SenderConfig | None = None,
        random: Callable[[], float] = random_module.random,
        on_recorded: Callable[[], None] | None = None,
    ) -> None:
        """``on_recorded``: called after an answer stored an event (the relay's ``notify``)."""
        self._storage = storage
        self._channels = channels
        self._compose = composer
        self._prefetch: Prefetch | None = getattr(composer, "prefetch", None)
        self._clock = clock
        self.config = config or SenderConfig()
        self._random = random
        self.on_recorded = on_recorded
        self._breakers: dict[str, CircuitBreaker] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._queued: dict[str, int] = {}
        """Provider -> messages handed to it and not answered yet."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_hand: set[tuple[str, str]] = set()
        """(workspace, key) of the messages whose send is in flight in this process."""
        self._claiming = 0
        self._room_wait = False
        self._wake = asyncio.Event()
        self.sent_total = 0
        self.failed_total = 0
        self.dead_total = 0

    # -- the loop ------------------------------------------------------------
    def notify(self) -> None:
        """Wake an idle ``run`` loop: messages were committed."""
        self._wake.set()

    def breaker(self, provider: str) -> CircuitBreaker:
        found = self._breakers.get(provider)
        if found is None:
            found = CircuitBreaker(self.config.breaker_failures, self.config.breaker_cooldown)
            self._breakers[provider] = found
        return found

    async def run_once(self) -> int:
        """Claim what is due and hand it out; return how many were claimed.

        Sends go on in the background (``drain`` waits for them).
        """
        room = self.room()
        if room <= 0:
            return 0
        self._claiming += 1
        try:
            now = self._clock.now()
            claimed = await self._storage.claim_due(now, room, timedelta(seconds=self.config.lease))
            ready: list[tuple[OutboxMessage, Channel, str]] = []
            try:
                for message in claimed:
                    taken = await self._dispatch(message, now)
                    if taken is not None:
                        ready.append(taken)
                await self._prefetched([message for message, _, _ in ready])
            finally:
                # Taken in hand, they go out even when a later one could not be dispatched.
                for message, channel, provider in ready:
                    self._start(message, channel, provider)
        finally:
            self._claiming -= 1
        return len(claimed)

    def room(self) -> int:
        """Messages one claim may take: ``batch_size`` less the sends in hand.

        Claiming more than can go out would only hold them (a write and a
        ``saturated_delay`` each); left unclaimed they stay due, and the end
        of a send wakes the loop to claim them. A provider whose queue is
        full does not count: its messages are held as before, and it never
        takes the room of the others.
        """
        busy = sum(n for n in self._queued.values() if n < self.config.queue)
        return self.config.batch_size - busy

    async def settled(self) -> bool:
        """Whether nothing is in hand and no pending message is due now (``Rapport.settle``)."""
        if self._tasks or self._claiming:
            return False
        due = await self._storage.next_outbox_at()
        if self._tasks or self._claiming:
            # A claim began while we read: its lease pushed the message's
            # next attempt past now, so ``due`` alone would call it settled.
            return False
        return due is None or due > self._clock.now()

    async def drain(self) -> None:
        """Wait for every send in flight to be answered and recorded."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def deliver_due(self) -> int:
        """Claim and send until nothing is due now; return how many were claimed (tests)."""
        total = 0
        while claimed := await self.run_once():
            total += claimed
            await self.drain()
        await self.drain()
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, then wait for sends in flight."""
        failures = 0
        look_first = False
        while not stop.is_set():
            woken = self._wake.is_set()
            self._wake.clear()
            if look_first and not woken:
                # The poll, not a commit, ended the sleep: read whether anything is
                # due before claiming. A claim is a write (on SQLite it takes the
                # file's write lock, which the other processes then wait for); a
                # sender in a process of its own polls often (``idle_poll``).
                delay = await self._until_next(self.config.idle_poll)
                if delay > 0:
                    await _sleep(stop, self._wake, delay)
                    continue
            room = self.room()
            try:
                claimed = await self.run_once()
                failures = 0
            except Exception as exc:  # storage trouble: logged, retried with backoff
                failures += 1
                log.error("sender.claim_failed", attempt=failures, exc_info=exc)
                claimed = 0
            look_first = claimed == 0 and not failures
            roomy = self.room() >= self._worth_claiming()
            if claimed >= room > 0 and roomy:
                await asyncio.sleep(0)  # more is due: claim again at once
                continue
            delay = self.config.idle_poll * (2 ** min(failures, 5))
            if not failures and roomy:
                delay = await self._until_next(delay)
            else:
                self._room_wait = not failures  # sends ending wake the loop (``_sent``)
            await _sleep(stop, self._wake, delay)
        await self.drain()

    async def _until_next(self, longest: float) -> float:
        """Seconds until the earliest pending message is due, at most ``longest``.

        New messages do not wake the loop by themselves (call ``notify``), so
        it never sleeps longer than ``idle_poll``.
        """
        try:
            due = await self._storage.next_outbox_at()
        except Exception as exc:  # storage trouble: the next claim reports it
            log.warning("sender.next_due_failed", exc_info=exc)
            return longest
        if due is None:
            return longest
        return min(longest, max(0.0, (due - self._clock.now()).total_seconds()))

    async def _prefetched(self, messages: list[OutboxMessage]) -> None:
        """Let the composer read for the messages about to be composed, in a few calls."""
        if self._prefetch is None or not messages:
            return
        try:
            await self._prefetch(messages)
        except Exception as exc:  # storage trouble: each compose reads (and reports) itself
            log.warning("sender.prefetch_failed", exc_info=exc)

    # -- one message -----------------------------------------------------------
    async def _dispatch(
        self, message: OutboxMessage, now: datetime
    ) -> tuple[OutboxMessage, Channel, str] | None:
        """Hold or record ``message`` when it cannot go now, else take it in hand.

        Taken in hand (counted in its provider's queue), it is returned for
        ``_start`` once the claim's messages are prefetched.
        """
        key = (message.workspace_id, message.idempotency_key)
        if key in self._in_hand:
            # Claimed again while its send is still in flight here: its lease ran
            # out under us (a clock that jumped). The send in flight records it.
            return None
        verdict = message.verdict
        if verdict is not None and verdict.not_before is not None and verdict.not_before > now:
            await self._hold(message, verdict.not_before)
            return None
        try:
            channel = self._channels.get(_channel_name(message))
        except UnknownChannelError as error:
            await self._record(message, "dead", error=str(error))
            return None
        provider = _provider(channel, message)
        if self._queued.get(provider, 0) >= self.config.queue:
            await self._hold(message, now + timedelta(seconds=self.config.saturated_delay))
            return None
        blocked = self.breaker(provider).open_until(now)
        if blocked is not None:
            await self._hold(message, blocked + timedelta(seconds=self._random()))
            return None
        wait = self._bucket(provider, now).take(now)
        if wait > 0:
            await self._hold(message, now + timedelta(seconds=wait))
            return None
        self._queued[provider] = self._queued.get(provider, 0) + 1
        self._in_hand.add(key)
        return message, channel, provider

    def _start(self, message: OutboxMessage, channel: Channel, provider: str) -> None:
        key = (message.workspace_id, message.idempotency_key)
        task = asyncio.create_task(self._deliver(message, channel, provider))
        self._tasks.add(task)
        task.add_done_callback(lambda _: self._in_hand.discard(key))
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        # The loop waits for room: wake it once a claim is worth a write.
        if self._room_wait and self.room() >= self._worth_claiming():
            self._room_wait = False
            self._wake.set()

    def _worth_claiming(self) -> int:
        """Room below which a busy sender waits for more rather than claim a few."""
        return max(1, self.config.batch_size // 8)

    async def _deliver(self, message: OutboxMessage, channel: Channel, provider: str) -> None:
        try:
            outgoing = await self._composed(message, channel)
            if outgoing is not None:
                await self._send_and_record(message, channel, provider, outgoing)
        finally:
            self._queued[provider] -= 1

    async def _composed(self, message: OutboxMessage, channel: Channel) -> OutgoingMessage | None:
        """The message to send, or None once a failure to compose it is recorded.

        Composing says nothing about the provider: its failures leave the circuit alone.
        """
        try:
            return await self._outgoing(message, channel)
        except PermanentDeliveryError as error:
            await self._record(message, "dead", error=error.detail)
        except TransientDeliveryError as error:
            await self._failed(message, error.detail, error.retry_after)
        except Exception as error:  # a composer bug: retried, then dead
            log.error("sender.compose_failed", key=message.idempotency_key, exc_info=error)
            await self._failed(message, f"{type(error).__name__}: {error}", None)
        return None

    async def _send_and_record(
        self, message: OutboxMessage, channel: Channel, provider: str, outgoing: OutgoingMessage
    ) -> None:
        breaker = self.breaker(provider)
        try:
            async with self._slot(provider):
                # Asked again once a slot is free: sends queued behind the ones that
                # opened the circuit are held, not tried (and one of them may probe).
                blocked = breaker.blocked_until(self._clock.now())
                if blocked is not None:
                    await self._hold(message, blocked + timedelta(seconds=self._random()))
                    return
                result = await self._send(channel, outgoing)
        except PermanentDeliveryError as error:
            breaker.succeeded()  # the provider answered
            await self._record(message, "dead", error=error.detail)
            return
        except TransientDeliveryError as error:
            breaker.failed(self._clock.now())
            await self._failed(message, error.detail, error.retry_after)
            return
        except Exception as error:  # a channel bug: retried, then dead
            log.error("sender.unexpected", key=message.idempotency_key, exc_info=error)
            breaker.failed(self._clock.now())
            await self._failed(message, f"{type(error).__name__}: {error}", None)
            return
        breaker.succeeded()
        version = outgoing.metadata.get("template_version")
        used = outgoing.metadata.get("template")
        # str(): a channel may hand back a header object (email's Message-ID).
        provider_id = result.provider_message_id
        await self._record(
            message,
            "sent",
            provider_message_id=None if provider_id is None else str(provider_id),
            template_version=version if isinstance(version, int) else None,
            template_id=used if isinstance(used, str) else None,
            channel=outgoing.channel,
        )

    async def _outgoing(self, message: OutboxMessage, channel: Channel) -> OutgoingMessage:
        effect = message.effect
        if isinstance(effect, WebhookEffect):
            return webhook_message(message, effect)
        outgoing = await self._compose(message)
        if outgoing.channel != channel.name:
            outgoing = msgspec.structs.replace(outgoing, channel=channel.name)
        return outgoing

    async def _send(self, channel: Channel, outgoing: OutgoingMessage) -> DeliveryResult:
        try:
            async with asyncio.timeout(self.config.send_timeout):
                return await channel.send(outgoing)
        except TimeoutError:
            raise TransientDeliveryError(
                f"no answer within {self.config.send_timeout:g} s"
            ) from None

    async def _failed(self, message: OutboxMessage, detail: str, retry_after: float | None) -> None:
        attempts = message.attempts + 1
        if attempts >= self.config.max_attempts:
            await self._record(message, "dead", error=f"{detail} (after {attempts} attempts)")
            return
        self.failed_total += 1
        delay = backoff(attempts, self.config, self._random, retry_after)
        now = self._clock.now()
        await self._store(
            DeliveryAttempt(
                workspace_id=message.workspace_id,
                idempotency_key=message.idempotency_key,
                at=now,
                outcome="retry",
                retry_at=now + timedelta(seconds=delay),
                error=detail,
            )
        )

    async def _hold(self, message: OutboxMessage, until: datetime) -> None:
        """Not tried now (quiet hours, a limit, an open circuit): due again at ``until``."""
        await self._store(
            DeliveryAttempt(
                workspace_id=message.workspace_id,
                idempotency_key=message.idempotency_key,
                at=self._clock.now(),
                outcome="retry",
                retry_at=until,
                counted=False,
            )
        )

    async def _record(
        self,
        message: OutboxMessage,
        outcome: str,
        *,
        error: str | None = None,
        counted: bool = True,
        provider_message_id: str | None = None,
        template_version: int | None = None,
        template_id: str | None = None,
        channel: str | None = None,
    ) -> None:
        now = self._clock.now()
        sent = outcome == "sent"
        event = delivery_event(
            message,
            MESSAGE_SENT if sent else MESSAGE_FAILED,
            now,
            channel=channel or _channel_name(message),
            provider_message_id=provider_message_id,
            error=error,
        )
        stored = await self._store(
            DeliveryAttempt(
                workspace_id=message.workspace_id,
                idempotency_key=message.idempotency_key,
                at=now,
                outcome="sent" if sent else "dead",
                counted=counted,
                error=error,
                provider_message_id=provider_message_id,
                template_version=template_version,
                template_id=template_id,
                event=event,
            )
        )
        if stored:
            if sent:
                self.sent_total += 1
            else:
                self.dead_total += 1
                log.warning("sender.dead", key=message.idempotency_key, error=error)
            if self.on_recorded is not None:
                self.on_recorded()

    async def _store(self, attempt: DeliveryAttempt) -> bool:
        """Record an answer, retrying a failing storage a few times (see the module doc)."""
        for attempt_number in range(RECORD_RETRIES + 1):
            try:
                return await self._storage.record_attempt(attempt)
            except Exception as exc:  # storage trouble: the lease keeps the message safe
                if attempt_number == RECORD_RETRIES:
                    log.error("sender.record_failed", key=attempt.idempotency_key, exc_info=exc)
                    return False
                await asyncio.sleep(0.05 * 2**attempt_number)
        return False

    def _bucket(self, provider: str, now: datetime) -> TokenBucket:
        found = self._buckets.get(provider)
        if found is None:
            found = TokenBucket(self.config.rate_per_second, self.config.burst, now)
            self._buckets[provider] = found
        return found

    def _slot(self, provider: str) -> asyncio.Semaphore:
        found = self._slots.get(provider)
        if found is None:
            found = asyncio.Semaphore(self.config.concurrency)
            self._slots[provider] = found
        return found


def webhook_message(message: OutboxMessage, effect: WebhookEffect) -> OutgoingMessage:
    """A webhook step's request: its body as JSON text, its headers, to its URL."""
    return OutgoingMessage(
        idempotency_key=message.idempotency_key,
        workspace_id=message.workspace_id,
        profile_id=message.profile_id,
        channel="webhook",
        to=effect.url,
        category="transactional",
        content={"body": msgspec.json.encode(effect.body).decode()},
        headers=dict(effect.headers),
        metadata={
            "journey_id": effect.journey_id,
            "version": effect.version,
            "step_id": effect.step_id,
            "method": effect.method,
        },
    )


def delivery_event(
    message: OutboxMessage,
    name: str,
    now: datetime,
    *,
    channel: str,
    provider_message_id: str | None,
    error: str | None,
) -> ScheduledEvent:
    """The ``Message Sent`` / ``Message Failed`` event of ``message``, due now.

    The message id is derived from the idempotency key (and, for a failure,
    the instant it was given up: a replayed message may fail again later).
    """
    effect = message.effect
    key = message.idempotency_key
    properties: dict[str, Any] = {
        "message": key,
        "channel": channel,
        "topic": effect.topic if isinstance(effect, SendEffect) else None,
        "journey_id": effect.journey_id,
        "step_id": effect.step_id,
        "provider_message_id": provider_message_id,
    }
    if name == MESSAGE_SENT:
        message_id = f"delivery:sent:{key}"
    else:
        message_id = f"delivery:failed:{key}:{now.isoformat()}"
        properties["error"] = error
    return ScheduledEvent(
        workspace_id=message.workspace_id,
        key=message_id,
        due_at=now,
        event=Event(
            workspace_id=message.workspace_id,
            message_id=message_id,
            type="track",
            event=name,
            timestamp=now,
            received_at=now,
            source=DELIVERY_SOURCE,
            properties=properties,
            profile_id=message.profile_id,
        ),
    )


def _channel_name(message: OutboxMessage) -> str:
    if isinstance(message.effect, WebhookEffect):
        return "webhook"
    if message.verdict is not None and message.verdict.channel:
        return message.verdict.channel
    return message.effect.channels[0] if message.effect.channels else ""


def _provider(channel: Channel, message: OutboxMessage) -> str:
    """What limits and circuits are kept per: the channel's provider; a webhook's host."""
    if isinstance(message.effect, WebhookEffect):
        return f"{channel.provider}:{urlsplit(message.effect.url).netloc}"
    return channel.provider


async def _sleep(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    if stop.is_set() or wake.is_set():
        return
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
