"""The composer on a real SQLite-backed runtime: profile, trigger event, template
version, promo codes, links and parts become the message a channel sends; what
cannot come right by retrying is a permanent error that says what to fix."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from rapport.channels.base import PermanentDeliveryError
from rapport.channels.links import LinkSigner
from rapport.core.clock import VirtualClock
from rapport.core.journeys.effects import SendEffect
from rapport.core.policy.checks import GateVerdict
from rapport.runtime.compose import Composer
from rapport.storage.journey_runs import OutboxMessage
from tests.api.conftest import ApiHarness, open_harness

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PUBLIC_URL = "https://rapport.shop.test"
SIGNER = LinkSigner(b"k" * 32)


class Shop:
    def __init__(self, api: ApiHarness, workspace_id: str) -> None:
        self.api = api
        self.workspace_id = workspace_id
        self.composer = Composer(api.rapport.storage, SIGNER, PUBLIC_URL, api.rapport.clock)

    async def customer(self, user_id: str, traits: dict[str, Any]) -> str:
        await self.send({"type": "identify", "userId": user_id, "traits": traits})
        found = await self.api.client.get(
            f"/api/profiles/user_id:{user_id}", headers=self.api.admin
        )
        profile_id: str = found.json()["id"]
        return profile_id

    async def send(self, *events: dict[str, Any]) -> None:
        answer = await self.api.client.post(
            "/v1/batch", json={"batch": list(events)}, auth=(self.api.write_key, "")
        )
        assert answer.status_code == 200, answer.text
        await self.api.settle()

    async def template(self, body: dict[str, Any]) -> None:
        answer = await self.api.client.put(
            f"/api/templates/{body['id']}", json=body, headers=self.api.admin
        )
        assert answer.status_code in (200, 201), answer.text

    async def pool(self, pool_id: str, codes: list[str]) -> None:
        client, admin = self.api.client, self.api.admin
        await client.post("/api/code-pools", json={"id": pool_id}, headers=admin)
        if codes:
            added = await client.post(f"/api/code-pools/{pool_id}/codes", json=codes, headers=admin)
            assert added.status_code == 200, added.text

    def message(
        self,
        profile_id: str,
        template: str,
        channel: str = "email",
        address: str | None = "dana@example.com",
        *,
        key: str = "journey:i1:thanks:1",
        trigger: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> OutboxMessage:
        effect = SendEffect(
            idempotency_key=key,
            instance_id="i1",
            journey_id="backorder",
            version=3,
            step_id="thanks",
            profile_id=profile_id,
            channels=("sms", "email"),
            template=template,
            category="promotional",
            topic="offers",
            data=data or {},
            trigger_message_id=trigger,
        )
        return OutboxMessage(
            workspace_id=self.workspace_id,
            idempotency_key=key,
            profile_id=profile_id,
            effect=effect,
            created_at=T0,
            verdict=GateVerdict(outcome="send", channel=channel, address=address),
        )


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    runtime, api = await open_harness(tmp_path)
    key = await runtime.authenticate(api.secret_key)
    assert key is not None
    try:
        yield Shop(api, key.workspace_id)
    finally:
        await api.client.aclose()
        await runtime.close()


THANKS = {
    "id": "thanks",
    "name": "Thanks",
    "channel": "email",
    "subject": "{{ profile.traits.first_name }}, {{ journey.points }} points",
    "html": "<p>Your {{ event.properties.product | default: 'order' }}:"
    " use <b>{{ codes.sorry-15 }}</b></p>",
    "text": "Code {{ codes.sorry-15 }} for {{ event.name | default: 'you' }}",
}


async def test_a_message_is_composed_from_profile_event_template_and_codes(shop: Shop) -> None:
    dana = await shop.customer("dana", {"first_name": "Dana"})
    await shop.send(
        {
            "type": "track",
            "userId": "dana",
            "event": "Order Completed",
            "messageId": "m-order",
            "properties": {"product": "Trail <Runner>"},
        },
        {"type": "track", "userId": "dana", "event": "Page Viewed", "messageId": "m-later"},
    )
    await shop.template(THANKS)
    await shop.pool("sorry-15", ["S15-A", "S15-B"])
    message = shop.message(dana, "thanks", trigger="m-order", data={"points": 500})
    composed = await shop.composer(message)

    assert (composed.channel, composed.to, composed.profile_id) == (
        "email",
        "dana@example.com",
        dana,
    )
    assert (composed.category, composed.topic) == ("promotional", "offers")
    assert composed.content == {
        "subject": "Dana, 500 points",
        "html": "<p>Your Trail &lt;Runner&gt;: use <b>S15-A</b></p>",
        "text": "Code S15-A for Order Completed",
    }
    assert composed.metadata == {
        "journey_id": "backorder",
        "version": 3,
        "step_id": "thanks",
        "template": "thanks",
        "template_version": 1,
    }
    assert sorted(composed.links) == ["click", "open", "status", "unsubscribe"]
    token = composed.links["unsubscribe"].removeprefix(f"{PUBLIC_URL}/l/u/")
    payload = SIGNER.verify("unsubscribe", token)
    assert payload is not None
    assert (payload.p, payload.m, payload.c, payload.t) == (
        dana,
        "journey:i1:thanks:1",
        "email",
        "offers",
    )

    # A retry, and a later message, show her the same code; a new version is recorded.
    await shop.template({**THANKS, "subject": "Again, {{ profile.traits.first_name }}"})
    again = await shop.composer(shop.message(dana, "thanks", key="journey:i2:thanks:1"))
    assert again.content["text"] == "Code S15-A for you"
    assert again.metadata["template_version"] == 2
    mia = await shop.customer("mia", {"first_name": "Mia"})
    other = await shop.composer(shop.message(mia, "thanks", key="journey:i3:thanks:1"))
    assert "S15-B" in other.content["text"]
    stats = await shop.api.client.get("/api/code-pools/sorry-15/stats", headers=shop.api.admin)
    assert (stats.json()["available"], stats.json()["claimed"]) == (0, 2)


async def test_an_exhausted_or_unknown_pool_is_a_permanent_error(shop: Shop) -> None:
    dana = await shop.customer("dana", {"first_name": "Dana"})
    mia = await shop.customer("mia", {"first_name": "Mia"})
    await shop.template(THANKS)
    with pytest.raises(PermanentDeliveryError, match="no code pool 'sorry-15'"):
        await shop.composer(shop.message(dana, "thanks", data={"points": 1}))
    await shop.pool("sorry-15", ["ONLY"])
    await shop.composer(shop.message(dana, "thanks", data={"points": 1}))
    with pytest.raises(PermanentDeliveryError, match="code pool 'sorry-15' is exhausted"):
        await shop.composer(shop.message(mia, "thanks", data={"points": 1}))


async def test_the_template_for_the_chosen_channel_is_used(shop: Shop) -> None:
    dana = await shop.customer("dana", {"first_name": "Dana"})
    await shop.template(
        {"id": "alert", "name": "A", "channel": "email", "subject": "Out", "text": "By mail"}
    )
    await shop.template(
        {
            "id": "alert-sms",
            "name": "A",
            "channel": "sms",
            "body": "{{ profile.traits.first_name }}: out",
        }
    )
    by_sms = await shop.composer(shop.message(dana, "alert", "sms", "+33612345678"))
    assert (by_sms.to, by_sms.content) == ("+33612345678", {"body": "Dana: out"})
    assert by_sms.metadata["template"] == "alert-sms"
    by_mail = await shop.composer(shop.message(dana, "alert"))
    assert by_mail.content == {"subject": "Out", "text": "By mail"}
    with pytest.raises(
        PermanentDeliveryError,
        match="template 'alert' is for email, the message goes by push and there is no push"
        " template 'alert-push'",
    ):
        await shop.composer(shop.message(dana, "alert", "push", "token-1"))
    with pytest.raises(PermanentDeliveryError, match="template 'nope' does not exist"):
        await shop.composer(shop.message(dana, "nope"))


async def test_an_sms_carries_its_own_signed_unsubscribe_link(shop: Shop) -> None:
    dana = await shop.customer("dana", {"first_name": "Dana"})
    await shop.template(
        {
            "id": "flash",
            "name": "F",
            "channel": "sms",
            "body": "{{ profile.traits.first_name }}, 20% off. Stop: {{ links.unsubscribe }}",
        }
    )
    composed = await shop.composer(shop.message(dana, "flash", "sms", "+33612345678"))
    unsubscribe = composed.links["unsubscribe"]
    assert composed.content == {"body": f"Dana, 20% off. Stop: {unsubscribe}"}
    payload = SIGNER.verify("unsubscribe", unsubscribe.removeprefix(f"{PUBLIC_URL}/l/u/"))
    assert payload is not None
    assert (payload.p, payload.m, payload.c, payload.t) == (
        dana,
        "journey:i1:thanks:1",
        "sms",
        "offers",
    )
    # Each message's link speaks for that message (and only the unsubscribe link is shown).
    other = await shop.composer(shop.message(dana, "flash", "sms", "+336", key="journey:i9:x:1"))
    assert other.links["unsubscribe"] in other.content["body"]
    assert other.links["unsubscribe"] != unsubscribe
    await shop.template({"id": "leak", "name": "L", "channel": "sms", "body": "{{ links.click }}"})
    with pytest.raises(PermanentDeliveryError, match=r"links\.click is undefined"):
        await shop.composer(shop.message(dana, "leak", "sms", "+33612345678"))


async def test_a_render_failure_is_a_permanent_error_naming_the_variable(shop: Shop) -> None:
    dana = await shop.customer("dana", {})
    await shop.template(
        {
            "id": "hello",
            "name": "H",
            "channel": "sms",
            "body": "Hi\n{{ profile.traits.first_name }}",
        }
    )
    with pytest.raises(PermanentDeliveryError) as caught:
        await shop.composer(shop.message(dana, "hello", "sms", "+33612345678"))
    detail = caught.value.detail
    assert detail.startswith("template 'hello' version 1 failed to render (missing_variable)")
    assert "$.body line 2" in detail and "first_name" in detail


async def test_webhook_bodies_are_json_text_and_push_deep_links_are_urls(shop: Shop) -> None:
    dana = await shop.customer("dana", {"first_name": 'Da"na'})
    await shop.template(
        {
            "id": "hook",
            "name": "H",
            "channel": "webhook",
            "body": {
                "name": "{{ profile.traits.first_name }}",
                "n": 3,
                "tags": ["{{ journey.t }}"],
            },
        }
    )
    hook = await shop.composer(
        shop.message(dana, "hook", "webhook", "https://hooks.test/x", data={"t": "vip"})
    )
    assert json.loads(hook.content["body"]) == {"name": 'Da"na', "n": 3, "tags": ["vip"]}
    await shop.template(
        {
            "id": "push",
            "name": "P",
            "channel": "push",
            "title": "Hi",
            "body": "Store",
            "deep_link": "shop://store/{{ journey.store }}",
        }
    )
    push = await shop.composer(shop.message(dana, "push", "push", "tok", data={"store": "7"}))
    assert push.content == {"title": "Hi", "body": "Store", "url": "shop://store/7"}


async def test_a_message_for_a_merged_away_profile_goes_to_the_survivor(shop: Shop) -> None:
    await shop.send({"type": "track", "anonymousId": "anon-1", "event": "Viewed"})
    anon = await shop.api.client.get("/api/profiles/anonymous_id:anon-1", headers=shop.api.admin)
    loser = anon.json()["id"]
    await shop.send(
        {"type": "identify", "userId": "dana", "traits": {"first_name": "Dana"}},
        {"type": "alias", "userId": "dana", "previousId": "anon-1"},
    )
    dana = await shop.api.client.get("/api/profiles/user_id:dana", headers=shop.api.admin)
    await shop.template(
        {"id": "hi", "name": "H", "channel": "sms", "body": "Hi {{ profile.traits.first_name }}"}
    )
    composed = await shop.composer(shop.message(loser, "hi", "sms", "+33612345678"))
    assert dana.json()["id"] != loser  # the anonymous profile was merged away
    assert composed.profile_id == dana.json()["id"]
    assert composed.content == {"body": "Hi Dana"}
    assert msgspec.json.encode(composed)  # a plain, encodable message


async def test_now_in_a_template_is_the_runtime_clock(shop: Shop) -> None:
    """A runtime on a virtual clock renders the virtual date, not the machine's."""
    dana = await shop.customer("dana", {"first_name": "Dana"})
    await shop.template(
        {
            "id": "dated",
            "name": "D",
            "channel": "sms",
            "body": 'Offer of {{ "now" | date: "%B %-d, %Y" }}, {{ profile.traits.first_name }}',
        }
    )
    clock = VirtualClock(datetime(2031, 2, 14, 9, 30, tzinfo=UTC))
    composer = Composer(shop.api.rapport.storage, SIGNER, PUBLIC_URL, clock)
    composed = await composer(shop.message(dana, "dated", "sms", "+33612345678"))
    assert composed.content == {"body": "Offer of February 14, 2031, Dana"}
    clock.advance(timedelta(days=30))
    again = await composer(shop.message(dana, "dated", "sms", "+33612345678"))
    assert again.content == {"body": "Offer of March 16, 2031, Dana"}
