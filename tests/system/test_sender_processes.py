"""Delivery scaled out: ``rapport serve`` with ``sender = off`` and ``rapport sender`` processes.

The serving process ingests and processes; two sender processes on the same
SQLite data dir claim the outbox (leased claims: each message is in one
sender's hands at a time) and deliver to a real SMTP server (aiosmtpd). One
of them is SIGKILLed part way: the other takes over what it held once the
lease runs out. Every customer gets her message; a message arrives twice
only if it was inside an SMTP transaction at the kill (SMTP has no
idempotent submission, docs/delivery.md), and then with the same Message-ID.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.system.server import RapportServer, SenderProcess, create_key, free_port
from tests.system.test_delivery_faults import (
    EMAIL_CONNECTIONS,
    JOURNEY,
    TEMPLATE,
    SlowSink,
    address,
    admin_client,
    outbox,
    rapport_env,
    ship_orders,
    smtp_sink,
    wait_until,
)

pytestmark = pytest.mark.system
KILL_AT = 150


def test_two_sender_processes_share_the_outbox_and_survive_a_kill(tmp_path: Path) -> None:
    customers = 600
    lease = 6
    limits = (
        f"lease={lease},queue=64,concurrency={EMAIL_CONNECTIONS},idle_poll=0.05,"
        "rate_per_second=100000,burst=100000,backoff_base=0.5,backoff_max=2"
    )
    smtp_port = free_port()
    sink = SlowSink()
    data_dir = tmp_path / "data"
    secret_key = create_key(data_dir, "secret")
    env = rapport_env(smtp_port, limits)
    with smtp_sink(sink, smtp_port):
        server = RapportServer(data_dir, {**env, "RAPPORT_SENDER": "off"}).start()
        senders = [SenderProcess(data_dir, env).start() for _ in range(2)]
        try:
            with admin_client(server, secret_key) as admin:
                assert admin.post("/api/templates", json=TEMPLATE).status_code == 201
                assert admin.post("/api/journeys", json=JOURNEY).status_code == 201
                response = admin.post(f"/api/journeys/{JOURNEY['id']}/publish")
                assert response.status_code == 200, response.text
            # The sink SIGKILLs the first sender on the 150th DATA, before answering
            # it: whatever the machine's speed, the kill lands mid-delivery.
            killed = senders[0]
            sink.kill_pid, sink.kill_at = killed.pid, KILL_AT
            ship_orders(server, secret_key, customers)
            assert sink.killed.wait(120), f"the sink never got {KILL_AT} messages"
            assert killed.proc is not None
            assert killed.proc.wait(timeout=30) == -signal.SIGKILL

            def settled() -> bool:
                if len({to for _, to in sink.message_ids()}) < customers:
                    return False
                rows = outbox(data_dir)
                return len(rows) == customers and {status for status, _ in rows} == {"sent"}

            wait_until(settled, 180, "every message delivered by the surviving sender", server)
        finally:
            for sender in senders:
                sender.stop()
            server.stop()
        received = sink.message_ids()

    # Nothing lost: every customer got her message, through the two processes.
    assert {to for _, to in received} == {address(i) for i in range(customers)}
    # A second copy only for what was inside an SMTP transaction at the kill (at most
    # one per connection), with the first copy's Message-ID.
    copies = Counter(to for _, to in received)
    twice = {to for to, n in copies.items() if n > 1}
    assert len(twice) <= EMAIL_CONNECTIONS, twice
    assert max(copies.values()) <= 2
    ids_by_address: dict[str, set[str]] = {}
    for message_id, to in received:
        ids_by_address.setdefault(to, set()).add(message_id)
    assert all(len(ids) == 1 for ids in ids_by_address.values())
    # The outbox records each message once, with the Message-ID that arrived.
    rows = outbox(data_dir)
    assert len(rows) == customers
    assert {provider_id for _, provider_id in rows} == {
        next(iter(ids)) for ids in ids_by_address.values()
    }
