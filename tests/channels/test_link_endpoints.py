"""The message-link endpoints through the real app: events land, consent flips."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rapport.api.message_links import CHANNEL_EVENT_SOURCE, PIXEL_GIF
from rapport.channels.links import (
    LinkPayload,
    LinkSigner,
    click_url,
    confirmation_link,
    message_links,
)
from rapport.channels.setup import link_signer
from rapport.core.journeys.effects import SendEffect
from rapport.core.model import Event
from rapport.runtime.service import Rapport
from rapport.storage.base import ProcessingBatch
from rapport.storage.journey_runs import OutboxMessage
from tests.api.conftest import ApiHarness, open_harness

PUBLIC = "http://rapport.test"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiHarness]:
    runtime, harness = await open_harness(tmp_path, public_url=PUBLIC)
    try:
        yield harness
    finally:
        await harness.client.aclose()
        await runtime.close()


async def dana(api: ApiHarness, consent: dict[str, bool] | None = None) -> dict[str, Any]:
    """Dana's profile, made through ingest (with the consent she gave on the site)."""
    event: dict[str, Any] = {
        "type": "identify",
        "userId": "u-dana",
        "messageId": "dana-1",
        "timestamp": "2026-01-01T00:00:00Z",
        "traits": {"email": "dana@example.com"},
    }
    if consent:
        event["context"] = {"consent": {"categoryPreferences": consent}}
    response = await api.client.post("/v1/batch", json={"batch": [event]}, auth=(api.write_key, ""))
    assert response.status_code == 200, response.text
    await api.settle()
    return await profile(api)


async def profile(api: ApiHarness) -> dict[str, Any]:
    response = await api.client.get("/api/profiles/user_id:u-dana", headers=api.admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def links_for(
    runtime: Rapport, person: dict[str, Any], topic: str | None = "news", channel: str = "email"
) -> dict[str, str]:
    return message_links(
        link_signer(runtime.settings),
        PUBLIC,
        workspace_id=person["workspace_id"],
        profile_id=person["id"],
        idempotency_key="msg-1",
        channel=channel,
        topic=topic,
    )


async def channel_events(runtime: Rapport) -> list[Event]:
    entries = await runtime.event_log.read(0, 10_000)
    return [e.event for e in entries if e.event.source == CHANNEL_EVENT_SOURCE]


def path(url: str) -> str:
    return url.removeprefix(PUBLIC)


def forge(url: str) -> str:
    """The URL with one character of the token's payload changed."""
    head, _, token = url.rpartition("/")
    body, dot, mac = token.partition(".")
    flipped = ("B" if body[5] != "B" else "C").join((body[:5], body[6:]))
    return f"{head}/{flipped}{dot}{mac}"


async def test_open_pixel_records_an_open_only_for_a_genuine_token(api: ApiHarness) -> None:
    person = await dana(api)
    links = links_for(api.rapport, person)
    for _ in range(2):  # every open counts
        response = await api.client.get(path(links["open"]), headers={"User-Agent": "Mail/1.0"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/gif"
        assert response.content == PIXEL_GIF
    forged = await api.client.get(path(forge(links["open"])))
    assert forged.status_code == 200 and forged.content == PIXEL_GIF
    garbage = await api.client.get("/l/o/nonsense.gif")
    assert garbage.status_code == 200 and garbage.content == PIXEL_GIF

    events = await channel_events(api.rapport)
    assert [e.event for e in events] == ["Email Opened", "Email Opened"]
    first = events[0]
    assert first.type == "track" and first.user_id is None and first.anonymous_id is None
    assert first.profile_id == person["id"]
    assert first.workspace_id == person["workspace_id"]
    assert first.properties == {"message": "msg-1", "channel": "email", "topic": "news"}
    assert first.context == {"userAgent": "Mail/1.0"}
    assert events[0].message_id != events[1].message_id
    await api.settle()
    after = await profile(api)
    assert after["event_count"] == person["event_count"] + 2


async def test_click_records_and_redirects_only_to_the_signed_target(api: ApiHarness) -> None:
    person = await dana(api)
    links = links_for(api.rapport, person)
    signer = link_signer(api.rapport.settings)
    target = "https://shop.example.com/shoes?a=1&b=2"
    url = click_url(signer, links["click"], target)

    response = await api.client.get(path(url))
    assert response.status_code == 302
    assert response.headers["location"] == target
    [event] = await channel_events(api.rapport)
    assert event.event == "Email Link Clicked"
    assert event.properties == {
        "message": "msg-1",
        "channel": "email",
        "topic": "news",
        "url": target,
    }
    assert event.profile_id == person["id"]

    # Pointing the signed link elsewhere: refused, never redirected.
    evil = url.replace("shop.example.com", "evil.example.com")
    refused = await api.client.get(path(evil))
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_target"
    assert "location" not in refused.headers
    # A forged token, a token of another kind, a missing target.
    forged = await api.client.get(path(click_url(signer, forge(links["click"]), target)))
    assert forged.status_code == 400 and forged.json()["field"] == "token"
    open_token = links["open"].removesuffix(".gif").rsplit("/", 1)[-1]
    other_kind = await api.client.get(f"/l/c/{open_token}", params={"u": target, "s": "x"})
    assert other_kind.status_code == 400 and other_kind.json()["code"] == "invalid_link"
    missing = await api.client.get(path(links["click"]))
    assert missing.status_code == 400 and missing.json()["field"] == "u"
    assert len(await channel_events(api.rapport)) == 1


async def test_one_click_unsubscribe_turns_the_topic_off_once(api: ApiHarness) -> None:
    person = await dana(api, {"topic:news": True, "marketing": True})
    links = links_for(api.rapport, person, topic="news")
    unsubscribe = path(links["unsubscribe"])
    form = {"List-Unsubscribe": "One-Click"}

    first = await api.client.post(unsubscribe, data=form)
    assert first.status_code == 200
    assert "unsubscribed" in first.text.lower()
    # A provider repeating the POST before or after processing adds nothing.
    assert (await api.client.post(unsubscribe, data=form)).status_code == 200
    await api.settle()
    assert (await api.client.post(unsubscribe, data=form)).status_code == 200

    [event] = await channel_events(api.rapport)
    assert event.event == "Unsubscribed"
    assert event.context == {"consent": {"categoryPreferences": {"topic:news": False}}}
    assert event.properties["topic"] == "news"
    assert event.properties["message"] == "msg-1"
    await api.settle()
    consent = (await profile(api))["consent"]
    assert consent["topic:news"]["granted"] is False
    assert consent["topic:news"]["source"] == CHANNEL_EVENT_SOURCE
    assert consent["marketing"]["granted"] is True


async def test_one_click_without_topic_turns_marketing_off(api: ApiHarness) -> None:
    person = await dana(api, {"marketing": True})
    links = links_for(api.rapport, person, topic=None)
    response = await api.client.post(
        path(links["unsubscribe"]),
        content=b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\ny\r\n--b--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 200
    await api.settle()
    assert (await profile(api))["consent"]["marketing"]["granted"] is False


async def test_preference_page_lists_and_changes_topics(api: ApiHarness) -> None:
    person = await dana(api, {"topic:offers": True, "topic:birthday": False, "marketing": True})
    links = links_for(api.rapport, person, topic="news")
    page = await api.client.get(path(links["unsubscribe"]))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    boxes = dict(re.findall(r'name="(topic:[^"]+)" value=on( checked)?', page.text))
    # The link's topic first (never answered: shown subscribed), then her topics.
    assert boxes == {"topic:news": " checked", "topic:birthday": "", "topic:offers": " checked"}
    assert "marketing" not in boxes

    # She keeps news, turns offers off and birthday on.
    form = {"categories": ["topic:news", "topic:birthday", "topic:offers"], "topic:news": "on"}
    form["topic:birthday"] = "on"
    saved = await api.client.post(path(links["unsubscribe"]), data=form)
    assert saved.status_code == 200
    assert "saved" in saved.text
    assert (await api.client.post(path(links["unsubscribe"]), data=form)).status_code == 200

    [event] = await channel_events(api.rapport)
    assert event.event == "Preferences Updated"
    changes = {"topic:birthday": True, "topic:offers": False}
    assert event.context == {"consent": {"categoryPreferences": changes}}
    assert event.properties["preferences"] == changes
    await api.settle()
    consent = (await profile(api))["consent"]
    assert consent["topic:offers"]["granted"] is False
    assert consent["topic:birthday"]["granted"] is True
    # news was shown ticked and left ticked: no consent is invented for it.
    assert "topic:news" not in consent

    bad = await api.client.post(path(links["unsubscribe"]), data={"categories": "shoes"})
    assert bad.status_code == 400 and bad.json()["field"] == "categories"


async def test_status_callbacks_become_delivery_events(api: ApiHarness) -> None:
    person = await dana(api)
    links = links_for(api.rapport, person, topic="deliveries", channel="sms")
    status = path(links["status"])
    delivered = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    assert (await api.client.post(status, data=delivered)).status_code == 204
    assert (await api.client.post(status, data=delivered)).status_code == 204  # repeated
    failed = {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30003"}
    assert (await api.client.post(status, data=failed)).status_code == 204
    sent = {"MessageSid": "SM1", "MessageStatus": "sent"}
    assert (await api.client.post(status, data=sent)).status_code == 204

    events = await channel_events(api.rapport)
    assert [e.event for e in events] == ["Message Delivered", "Message Failed", "Message Status"]
    assert events[1].properties == {
        "message": "msg-1",
        "channel": "sms",
        "topic": "deliveries",
        "status": "undelivered",
        "provider_message_id": "SM1",
        "error_code": "30003",
    }
    missing = await api.client.post(status, data={"MessageSid": "SM1"})
    assert missing.status_code == 400 and missing.json()["field"] == "MessageStatus"
    forged = await api.client.post(path(forge(links["status"])), data=delivered)
    assert forged.status_code == 400
    await api.settle()


async def test_confirmation_link(api: ApiHarness) -> None:
    person = await dana(api)
    signer: LinkSigner = link_signer(api.rapport.settings)
    url = confirmation_link(
        signer,
        PUBLIC,
        workspace_id=person["workspace_id"],
        profile_id=person["id"],
        channel="email",
        address="dana@example.com",
    )
    for _ in range(2):
        page = await api.client.get(path(url))
        assert page.status_code == 200
        assert "dana@example.com" in page.text
    [event] = await channel_events(api.rapport)
    assert event.event == "Contact Confirmed"
    assert event.properties == {"message": None, "channel": "email", "address": "dana@example.com"}
    assert event.profile_id == person["id"]
    forged = await api.client.get(path(forge(url)))
    assert forged.status_code == 400 and forged.json()["code"] == "invalid_link"
    assert (await api.client.get("/l/confirm/not-a-token")).status_code == 400
    await api.settle()


async def test_unknown_profile_is_404_not_500(api: ApiHarness) -> None:
    person = await dana(api)
    links = message_links(
        link_signer(api.rapport.settings),
        PUBLIC,
        workspace_id=person["workspace_id"],
        profile_id="prof_gone",
        idempotency_key="m",
        channel="email",
        topic=None,
    )
    response = await api.client.get(path(links["unsubscribe"]))
    assert response.status_code == 404
    assert response.json()["code"] == "profile_not_found"


async def test_opens_and_clicks_say_what_the_message_was_about(api: ApiHarness) -> None:
    """With the message in the outbox, its journey, step and data travel on the event
    (a computed trait reads ``properties.data.appointment_at``, say)."""
    person = await dana(api)
    key = "journey:inst_1:remind:1"
    effect = SendEffect(
        idempotency_key=key,
        instance_id="inst_1",
        journey_id="appointment-reminder",
        version=1,
        step_id="remind",
        profile_id=person["id"],
        channels=("email",),
        template="reminder",
        category="transactional",
        topic="reminders",
        data={"appointment_at": "2026-05-04T10:00:00+00:00", "n": 1},
    )
    message = OutboxMessage(
        workspace_id=person["workspace_id"],
        idempotency_key=key,
        profile_id=person["id"],
        created_at=datetime(2026, 5, 4, 9, 0, tzinfo=UTC),
        effect=effect,
    )
    await api.rapport.storage.commit_processing(
        ProcessingBatch(consumer="link-test", offset=1, outbox=[message])
    )
    signer = link_signer(api.rapport.settings)
    links = message_links(
        signer,
        PUBLIC,
        workspace_id=person["workspace_id"],
        profile_id=person["id"],
        idempotency_key=key,
        channel="email",
        topic="reminders",
    )
    assert (await api.client.get(path(links["open"]))).status_code == 200
    target = "https://maps.example.com/?q=clinic"
    assert (await api.client.get(path(click_url(signer, links["click"], target)))).is_redirect
    opened, clicked = await channel_events(api.rapport)
    about = {
        "message": key,
        "channel": "email",
        "topic": "reminders",
        "journey_id": "appointment-reminder",
        "step_id": "remind",
        "data": {"appointment_at": "2026-05-04T10:00:00+00:00", "n": 1},
    }
    assert opened.properties == about
    assert clicked.properties == {**about, "url": target}


def title(html: str) -> str:
    found = re.search(r"<h1>([^<]*)</h1>", html)
    assert found is not None, html
    return found.group(1)


async def test_preference_page_names_the_links_channel_and_the_policys_topics(
    api: ApiHarness,
) -> None:
    person = await dana(api, {"topic:offers": True, "topic:birthday": False})
    policy = {
        "topics": [
            {"id": "deliveries", "name": "Delivery updates", "category": "transactional"},
            {"id": "offers", "name": "Offers & deals"},
        ]
    }
    put = await api.client.put("/api/policy", json=policy, headers=api.admin)
    assert put.status_code == 200, put.text

    sms = links_for(api.rapport, person, topic="deliveries", channel="sms")["unsubscribe"]
    page = await api.client.get(path(sms))
    assert page.status_code == 200 and title(page.text) == "Your SMS preferences"
    labels = re.findall(r'name="(topic:[^"]+)" value=on(?: checked)?> ([^<]*)</label>', page.text)
    # Named topics by their policy name (escaped); birthday, not in the policy, by its id.
    assert labels == [
        ("topic:deliveries", "Delivery updates"),
        ("topic:birthday", "birthday"),
        ("topic:offers", "Offers &amp; deals"),
    ]
    form = {"categories": ["topic:deliveries", "topic:birthday", "topic:offers"]}
    saved = await api.client.post(path(sms), data=form)
    assert saved.status_code == 200 and title(saved.text) == "Your SMS preferences"
    assert "> Delivery updates</label>" in saved.text

    email = links_for(api.rapport, person, topic="offers")["unsubscribe"]
    assert title((await api.client.get(path(email))).text) == "Your email preferences"
    # A token that names no channel: the page does not guess one.
    signer = link_signer(api.rapport.settings)
    anonymous = LinkPayload(k="unsubscribe", w=person["workspace_id"], p=person["id"], t="offers")
    unknown = await api.client.get(f"/l/u/{signer.token(anonymous)}")
    assert unknown.status_code == 200 and title(unknown.text) == "Your message preferences"
    await api.settle()


async def test_the_unsubscribed_page_names_the_policys_topic(api: ApiHarness) -> None:
    person = await dana(api, {"topic:offers": True, "topic:birthday": True})
    policy = {"topics": [{"id": "offers", "name": "Offers & deals"}]}
    put = await api.client.put("/api/policy", json=policy, headers=api.admin)
    assert put.status_code == 200, put.text
    form = {"List-Unsubscribe": "One-Click"}

    offers = links_for(api.rapport, person, topic="offers")["unsubscribe"]
    done = await api.client.post(path(offers), data=form)
    assert done.status_code == 200 and title(done.text) == "You are unsubscribed"
    assert "<p>You will no longer receive: Offers &amp; deals.</p>" in done.text
    assert "topic:offers" not in done.text
    # A topic the policy does not name reads as its id, as on the preference page.
    birthday = links_for(api.rapport, person, topic="birthday")["unsubscribe"]
    other = await api.client.post(path(birthday), data=form)
    assert "<p>You will no longer receive: birthday.</p>" in other.text
    await api.settle()
