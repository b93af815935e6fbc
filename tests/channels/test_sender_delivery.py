"""The sender against real providers: an SMTP server (aiosmtpd) that is down for a
while and a local HTTP webhook endpoint that is up, on a virtual clock.

While SMTP refuses connections its circuit opens and webhooks keep going out;
when it comes back every email is delivered exactly once.
"""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import timedelta

from aiosmtpd.smtp import SMTP
from starlette.responses import JSONResponse, Response

from rapport.channels.base import ChannelRegistry
from rapport.channels.email import EmailChannel
from rapport.channels.links import LinkSigner
from rapport.channels.webhook import WebhookChannel
from rapport.core.clock import VirtualClock
from rapport.runtime.relay import Relay
from rapport.runtime.sender import Sender
from rapport.runtime.sender_limits import SenderConfig
from rapport.storage.memory import MemoryEventLog, MemoryStorage
from tests.providers import Hit, HttpProvider, MailSink
from tests.unit.sender_helpers import T0, WS, commit, compose, send_message, webhook_message


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_smtp_down_for_a_while_webhooks_flow_and_each_email_arrives_once(
    http_provider: HttpProvider, signer: LinkSigner
) -> None:
    storage, log = MemoryStorage(), MemoryEventLog()
    clock = VirtualClock(T0)
    port = free_port()  # nothing listens yet: the SMTP server is down
    email = EmailChannel(
        "127.0.0.1", port, sender="Shop <shop@shop.test>", signer=signer, tls="none"
    )
    channels = ChannelRegistry()
    channels.register(email)
    channels.register(WebhookChannel("hook-secret", clock))
    relay = Relay(storage, log, clock)
    sender = Sender(
        storage,
        channels,
        compose,
        clock,
        config=SenderConfig(
            breaker_failures=2, breaker_cooldown=30, backoff_base=10, concurrency=1
        ),
        random=lambda: 0.0,
        on_recorded=relay.notify,
    )
    await commit(
        storage,
        *(send_message(f"e{n}", address=f"customer{n}@example.test") for n in range(5)),
        *(webhook_message(f"w{n}", f"{http_provider.base_url}/orders") for n in range(5)),
    )
    try:
        await sender.deliver_due()
        # Every webhook went out, signed and keyed; two emails failed and opened the circuit.
        assert len(http_provider.hits) == 5
        hit = http_provider.hits[0]
        assert json.loads(hit.body) == {"order": 42, "items": ["a", None]}
        assert hit.headers["x-shop"] == "demo"
        assert hit.headers["idempotency-key"] == "journey:w0:notify:1"
        assert sender.breaker(email.provider).state == "open"
        failed = [await storage.get_outbox(WS, f"journey:e{n}:hello:1") for n in range(5)]
        assert sorted(m.attempts for m in failed if m is not None) == [0, 0, 0, 1, 1]
        assert all(m is not None and m.status == "pending" for m in failed)

        # The SMTP server comes back on its port.
        sink = MailSink()
        server = await asyncio.get_running_loop().create_server(
            lambda: SMTP(sink, hostname="mail.test"), "127.0.0.1", port
        )
        try:
            for _ in range(6):
                clock.advance(timedelta(seconds=31))
                await sender.deliver_due()
            recipients = sorted(r.rcpt_tos[0] for r in sink.received)
            assert recipients == [f"customer{n}@example.test" for n in range(5)]
            message_ids = {r.message["Message-ID"] for r in sink.received}
            assert len(message_ids) == 5
            sent = [await storage.get_outbox(WS, f"journey:e{n}:hello:1") for n in range(5)]
            assert all(m is not None and m.status == "sent" for m in sent)
            assert {m.provider_message_id for m in sent if m is not None} == message_ids
            # Nothing left: more rounds send nothing twice.
            clock.advance(timedelta(hours=1))
            assert await sender.deliver_due() == 0
            assert len(sink.received) == 5 and len(http_provider.hits) == 5
        finally:
            await channels.close()
            server.close()
            await server.wait_closed()
    finally:
        await channels.close()
    await relay.run_due()
    names = [entry.event.event for entry in await log.read(0, 100)]
    assert names.count("Message Sent") == 10


async def test_a_webhook_endpoint_that_keeps_failing_ends_in_the_dead_letter_list(
    http_provider: HttpProvider,
) -> None:
    storage = MemoryStorage()
    clock = VirtualClock(T0)
    channels = ChannelRegistry()
    channels.register(WebhookChannel("", clock))

    def unavailable(hit: Hit) -> Response:
        return JSONResponse({"error": "busy"}, status_code=503, headers={"Retry-After": "90"})

    http_provider.answer = unavailable
    sender = Sender(
        storage,
        channels,
        compose,
        clock,
        config=SenderConfig(max_attempts=3, breaker_failures=10, backoff_base=1),
        random=lambda: 0.0,
    )
    await commit(storage, webhook_message("w1", f"{http_provider.base_url}/orders"))
    try:
        await sender.deliver_due()
        stored = await storage.get_outbox(WS, "journey:w1:notify:1")
        assert stored is not None and stored.attempts == 1
        # The endpoint's Retry-After (90 s) wins over the 0.5 s backoff.
        assert stored.next_attempt_at == T0 + timedelta(seconds=90)
        for _ in range(2):
            clock.advance(timedelta(seconds=90))
            await sender.deliver_due()
    finally:
        await channels.close()
    [dead] = (await storage.list_dead(WS, 10)).messages
    assert dead.attempts == 3 and "503" in (dead.error or "")
    assert len(http_provider.hits) == 3
