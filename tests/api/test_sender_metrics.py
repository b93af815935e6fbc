"""``/metrics`` exposes the sender's counters: messages sent, failed (retried) and dead.

A started service delivers through a scripted channel that accepts one message,
refuses one for good and puts one off for an hour; the scrape reads the sender's
own counts at that moment.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from rapport.channels.base import (
    OutgoingMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from tests.api.conftest import ApiHarness
from tests.api.test_messages_api import commit_messages, service, wait_for, workspace
from tests.unit.sender_helpers import send_message

SENDER_COUNTERS = (
    "rapport_messages_sent_total",
    "rapport_messages_failed_total",
    "rapport_messages_dead_total",
)


async def scrape(api: ApiHarness) -> dict[str, float]:
    """The sender's counters, as Prometheus would parse them."""
    answer = await api.client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
    return {name: samples[name] for name in SENDER_COUNTERS}


def verdict(message: OutgoingMessage) -> Exception | None:
    if message.idempotency_key.startswith("journey:i2:"):
        return PermanentDeliveryError("550 5.1.1 no such mailbox")
    if message.idempotency_key.startswith("journey:i3:"):
        # Retry-After an hour: the retry cannot come due while the test runs.
        return TransientDeliveryError("421 try later", 3600.0)
    return None


async def test_metrics_count_sent_failed_and_dead_messages(tmp_path: Path) -> None:
    async with service(tmp_path) as (api, email):
        assert await scrape(api) == dict.fromkeys(SENDER_COUNTERS, 0.0)
        email.fail = verdict
        ws = await workspace(api)
        await commit_messages(api, ws, send_message("i1"), send_message("i2"), send_message("i3"))
        await wait_for(api, "journey:i1:hello:1", "sent")
        await wait_for(api, "journey:i2:hello:1", "dead")
        retried = await wait_for(api, "journey:i3:hello:1", "pending")
        delivery = retried["delivery"]
        assert isinstance(delivery, dict) and delivery["attempts"] == 1
        assert delivery["last_error"] == "421 try later"
        assert await scrape(api) == {
            "rapport_messages_sent_total": 1.0,
            "rapport_messages_failed_total": 1.0,
            "rapport_messages_dead_total": 1.0,
        }
        # The dead one replayed and sent: one more sent, the dead count stays (a counter).
        email.up()
        replay = await api.client.post(
            "/api/dead-letters/journey:i2:hello:1/replay", headers=api.admin
        )
        assert replay.status_code == 200
        await wait_for(api, "journey:i2:hello:1", "sent")
        assert await scrape(api) == {
            "rapport_messages_sent_total": 2.0,
            "rapport_messages_failed_total": 1.0,
            "rapport_messages_dead_total": 1.0,
        }


async def test_without_a_sender_the_counters_read_zero(api: ApiHarness) -> None:
    assert api.rapport.sender is None
    assert await scrape(api) == dict.fromkeys(SENDER_COUNTERS, 0.0)
