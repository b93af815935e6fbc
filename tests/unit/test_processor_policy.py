"""The policy gate inside the processing step: verdicts in the outbox, sends on the profile."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from rapport.core.journeys.effects import SendEffect
from rapport.core.model import Event
from rapport.core.policy.document import ConsentNames, FrequencyCap, PolicyDocument, QuietHours
from rapport.runtime.journey_admin import check_document
from rapport.storage.journey_runs import OutboxMessage
from tests.unit.test_processor import WS, Harness, make_event
from tests.unit.test_processor_journeys import WELCOME, only_instance


async def publish(h: Harness, document: dict[str, Any]) -> None:
    """Publish without a policy: the workspace runs on the default one."""
    check_document(document)
    await h.storage.save_journey(WS, document["id"], document, h.clock.now())
    await h.storage.transition_journey(WS, document["id"], "publish", h.clock.now())


def at_now(h: Harness, n: int, **fields: Any) -> Event:
    now = h.clock.now()
    return msgspec.structs.replace(
        make_event(n, user_id="u-1", **fields), timestamp=now, received_at=now
    )


OPTED_IN = {"consent": {"categoryPreferences": {"marketing": True}}}


def signed_up(h: Harness, n: int, source: str, email: str = "dana@example.com") -> Event:
    event = at_now(h, n, event="Signed Up", context={"traits": {"email": email}, **OPTED_IN})
    return msgspec.structs.replace(event, source=source)


async def rows(h: Harness, *keys: str) -> list[OutboxMessage]:
    found = []
    for key in keys:
        row = await h.storage.get_outbox(WS, key)
        assert row is not None, key
        found.append(row)
    return found


async def test_a_journey_message_lands_in_the_outbox_with_its_verdict() -> None:
    h = Harness()
    await publish(h, WELCOME)
    await h.feed(signed_up(h, 1, "secret_key:k2"))
    instance = await only_instance(h)
    (row,) = await rows(h, f"journey:{instance.id}:hello:1")
    assert row.status == "pending"
    assert row.verdict is not None
    assert (row.verdict.outcome, row.verdict.channel, row.verdict.address) == (
        "send",
        "email",
        "dana@example.com",
    )
    assert [c.name for c in row.verdict.checks] == ["topic", "consent", "route"]
    profile = await h.profile_of("user_id", "u-1")
    assert [(s.channel, s.category, s.topic) for s in profile.sent] == [], (
        "no cap in force: no history is kept"
    )


async def test_a_seven_day_cap_drops_the_second_message_and_the_profile_remembers() -> None:
    h = Harness()
    policy = PolicyDocument(caps=(FrequencyCap(id="weekly", max=1, window="7d"),))
    await h.storage.put_policy(WS, policy, h.clock.now())
    await publish(h, WELCOME)
    await h.feed(signed_up(h, 1, "secret_key:k2"))
    instance = await only_instance(h)
    profile = await h.profile_of("user_id", "u-1")
    assert [(s.at, s.channel, s.topic) for s in profile.sent] == [(h.clock.now(), "email", "news")]
    h.clock.advance(timedelta(days=3))
    assert await h.relay.run_due() == 1
    await h.processor.run_once()
    hello, tips = await rows(h, f"journey:{instance.id}:hello:1", f"journey:{instance.id}:tips:1")
    assert hello.status == "pending"
    assert tips.status == "dropped"
    assert tips.verdict is not None
    assert tips.verdict.reason == "cap_reached: weekly: 1 already sent"


async def test_a_policy_written_later_is_used_by_the_next_step() -> None:
    h = Harness()
    await publish(h, WELCOME)
    await h.feed(signed_up(h, 1, "secret_key:k2"))
    instance = await only_instance(h)
    policy = PolicyDocument(consent=ConsentNames(channels={"email": "newsletters"}))
    await h.storage.put_policy(WS, policy, h.clock.now())
    optout = at_now(
        h, 2, event="Viewed", context={"consent": {"categoryPreferences": {"newsletters": False}}}
    )
    await h.feed(optout)
    h.clock.advance(timedelta(days=3))
    await h.relay.run_due()
    await h.processor.run_once()
    (tips,) = await rows(h, f"journey:{instance.id}:tips:1")
    assert tips.status == "dropped"
    assert tips.verdict is not None and tips.verdict.reason.startswith("no_channel")


async def test_a_browser_claimed_email_gets_one_confirmation_and_no_promotion() -> None:
    h = Harness()
    await publish(h, WELCOME)
    await h.feed(signed_up(h, 1, "write_key:k1", email="Stranger@Example.com"))
    instance = await only_instance(h)
    hello, confirm = await rows(
        h,
        f"journey:{instance.id}:hello:1",
        f"confirm:{instance.profile_id}:email:stranger@example.com",
    )
    assert hello.status == "dropped"
    assert hello.verdict is not None and hello.verdict.reason.startswith("contact_unconfirmed")
    assert confirm.status == "pending"
    assert isinstance(confirm.effect, SendEffect)
    assert confirm.effect.category == "transactional"
    assert confirm.effect.data["confirmation"] == {
        "channel": "email",
        "address": "stranger@example.com",
    }
    pending = [m.idempotency_key for m in await h.storage.pending_outbox(100)]
    assert pending == [confirm.idempotency_key]
    profile = await h.profile_of("user_id", "u-1")
    point = profile.contacts["email:stranger@example.com"]
    assert point.confirmation_requested_at == h.clock.now()

    # She clicks the link: the next promotion goes out.
    clicked = at_now(
        h,
        2,
        event="Contact Confirmed",
        properties={"channel": "email", "address": "stranger@example.com"},
    )
    await h.feed(msgspec.structs.replace(clicked, source="rapport:channels"))
    h.clock.advance(timedelta(days=3))
    await h.relay.run_due()
    await h.processor.run_once()
    (tips,) = await rows(h, f"journey:{instance.id}:tips:1")
    assert tips.status == "pending"
    assert tips.verdict is not None and tips.verdict.address == "Stranger@Example.com"


SMS_OFFER: dict[str, Any] = {
    "id": "sms-offer",
    "name": "SMS offer",
    "triggers": [{"event": "Viewed Jacket"}],
    "start": "offer",
    "steps": {
        "offer": {
            "message": {
                "channel": ["sms", "email"],
                "template": "offer",
                "category": "promotional",
                "topic": "offers",
            }
        }
    },
}


async def test_quiet_hours_defer_a_promotional_sms_in_her_own_zone() -> None:
    h = Harness()
    now = h.clock.now()
    local = now.astimezone(ZoneInfo("America/New_York"))
    start, end = local.replace(minute=0), local.replace(minute=0) + timedelta(hours=2)
    quiet = QuietHours(start=f"{start:%H:%M}", end=f"{end:%H:%M}", channels=("sms",))
    await h.storage.put_policy(WS, PolicyDocument(quiet_hours=quiet), now)
    await publish(h, SMS_OFFER)
    event = at_now(
        h,
        1,
        event="Viewed Jacket",
        context={
            "traits": {"phone": "+1 555 010 0199", "timezone": "America/New_York"},
            "consent": {"categoryPreferences": {"marketing": True, "sms": True}},
        },
    )
    await h.feed(msgspec.structs.replace(event, source="secret_key:k2"))
    page = await h.storage.list_journey_instances(WS, "sms-offer", 10)
    (row,) = await rows(h, f"journey:{page.instances[0].id}:offer:1")
    assert row.status == "pending"
    assert row.verdict is not None
    assert (row.verdict.outcome, row.verdict.channel, row.verdict.address) == (
        "defer",
        "sms",
        "+1 555 010 0199",
    )
    assert row.verdict.not_before == end.astimezone(UTC)
    assert row.verdict.reason.startswith("quiet_hours")


def offer_journey(journey_id: str, priority: int) -> dict[str, Any]:
    return {
        "id": journey_id,
        "name": journey_id,
        "priority": priority,
        "triggers": [{"event": "Ticket Closed"}],
        "start": "offer",
        "steps": {
            "offer": {
                "message": {
                    "channel": "email",
                    "template": journey_id,
                    "category": "promotional",
                    "topic": "offers",
                }
            }
        },
    }


async def test_two_journeys_at_once_the_global_cap_lets_the_higher_priority_through() -> None:
    h = Harness()
    cap = FrequencyCap(id="daily", category="promotional", max=1, window="calendar_day")
    await h.storage.put_policy(WS, PolicyDocument(caps=(cap,)), h.clock.now())
    await publish(h, offer_journey("survey", 10))
    await publish(h, offer_journey("apology", 90))
    await h.feed(signed_up(h, 1, "secret_key:k2"))  # her address and consent
    await h.feed(at_now(h, 2, event="Ticket Closed"))
    keys = {}
    for journey_id in ("survey", "apology"):
        page = await h.storage.list_journey_instances(WS, journey_id, 10)
        keys[journey_id] = f"journey:{page.instances[0].id}:offer:1"
    survey, apology = await rows(h, keys["survey"], keys["apology"])
    assert apology.status == "pending"
    assert survey.status == "dropped"
    assert survey.verdict is not None
    assert survey.verdict.reason.startswith("arbitration: daily lets 1 through this time")
    assert "won by apology/offer (priority 90)" in survey.verdict.reason
