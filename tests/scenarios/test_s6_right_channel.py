"""S6 — the right channel, the customer's terms.

Order confirmations go by email; delivery alerts by SMS to customers who
opted in to SMS, by email otherwise (one message step, ``channel: [sms,
email]``, the templates ``delivery-alert`` and ``delivery-alert-sms``). A
customer who unsubscribed from birthday messages gets none on her birthday,
one who likes them gets one at 09:00 her time. A promotional SMS that would
reach a New Yorker at 02:00 waits until 09:00 New York time (quiet hours
defer, they do not drop), while a customer in Tokyo gets it at once. Every
message carries a working one-click unsubscribe for its topic: the email's
``List-Unsubscribe`` header (RFC 8058 POST), the SMS's own text
(``{{ links.unsubscribe }}``: GET the preference page, POST one click).

The journeys are the published examples (``examples/journeys/s6-*.yaml``),
applied as they are; the policy is the one ``docs/policies.md`` shows for S6.

"Opted in to SMS" is the policy's ``consent: {opt_in: [sms]}``: the gate
routes to SMS only a customer with a phone and ``sms`` consent granted; one
who said ``sms: false``, one who never answered and one without a phone get
the email.
"""

from __future__ import annotations

import email.message
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.scenarios.conftest import EXAMPLES
from tests.scenarios.harness import PUBLIC_URL, Scenario

POLICY: dict[str, Any] = {
    "topics": [
        {"id": "orders", "name": "Order updates", "category": "transactional"},
        {"id": "delivery", "name": "Delivery alerts", "category": "transactional"},
        {"id": "birthday", "name": "Birthday wishes", "default_subscribed": False},
        {"id": "offers", "name": "Offers"},
    ],
    "consent": {"opt_in": ["sms"]},
    "quiet_hours": {"start": "21:00", "end": "09:00", "channels": ["sms", "push"]},
    "timezone": {"trait": "timezone", "default": "Europe/Paris"},
}

TEMPLATES: list[dict[str, Any]] = [
    {
        "id": "order-confirmation",
        "name": "Order confirmation",
        "channel": "email",
        "subject": "Order {{ event.properties.order_id }} confirmed",
        "text": "Thank you, {{ profile.traits.first_name }}! We received order"
        " {{ event.properties.order_id }} ({{ event.properties.total }} EUR).",
        "html": "<p>Thank you, {{ profile.traits.first_name }}!</p><p>We received order"
        " <b>{{ event.properties.order_id }}</b> ({{ event.properties.total }} EUR).</p>",
    },
    {
        "id": "delivery-alert",
        "name": "Delivery alert (email)",
        "channel": "email",
        "subject": "Order {{ event.properties.order_id }} arrives today",
        "text": "Your parcel arrives today between {{ event.properties.window }}.",
    },
    {
        "id": "delivery-alert-sms",
        "name": "Delivery alert (SMS)",
        "channel": "sms",
        "body": "Rapport Shop: order {{ event.properties.order_id }} arrives today,"
        " {{ event.properties.window }}. Stop alerts: {{ links.unsubscribe }}",
    },
    {
        "id": "birthday-wishes",
        "name": "Happy birthday",
        "channel": "email",
        "subject": "Happy birthday, {{ profile.traits.first_name }}!",
        "text": "Happy birthday, {{ profile.traits.first_name }}: a little something is"
        " waiting in your account.",
    },
    {
        "id": "flash-sale",
        "name": "Flash sale (SMS)",
        "channel": "sms",
        "body": "{{ profile.traits.first_name }}, {{ journey.percent_off }}% off rain jackets"
        " for 24 hours. Stop offers: {{ links.unsubscribe }}",
    },
]

SMS_SHOPPERS: dict[str, Any] = {
    "id": "sms-shoppers",
    "name": "Customers we can text",
    "condition": {"trait": "phone", "op": "exists"},
}

UNSUBSCRIBE_LINK = re.compile(re.escape(PUBLIC_URL) + r"/l/u/[A-Za-z0-9_.-]+")


async def define(s: Scenario, *journeys: str) -> None:
    await s.policy(POLICY)
    for template in TEMPLATES:
        await s.apply("template", template)
    await s.apply("segment", SMS_SHOPPERS)
    for journey in journeys:
        await s.apply_file("journey", EXAMPLES / f"s6-{journey}.yaml")


def text_of(mail: email.message.EmailMessage) -> str:
    part = mail.get_body(("plain",))
    assert part is not None, mail
    return str(part.get_content()).rstrip("\r\n")


async def one_click(s: Scenario, url: str) -> None:
    """What a mail client (RFC 8058) or the SMS link's page does: POST, one click."""
    response = await s.follow(
        url,
        "POST",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text


def mail_unsubscribe(mail: email.message.EmailMessage) -> str:
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = str(mail["List-Unsubscribe"]).strip("<>")
    assert UNSUBSCRIBE_LINK.fullmatch(url), url
    return url


def sms_unsubscribe(text: dict[str, str]) -> str:
    [url] = UNSUBSCRIBE_LINK.findall(text["Body"])
    return str(url)


def verdict(reason: str) -> str:
    """The gate's reason code (``topic_unsubscribed: she unsubscribed from 'x'``)."""
    return reason.partition(":")[0]


async def consent(s: Scenario, user: str, category: str) -> bool | None:
    found = (await s.profile(user))["consent"].get(category)
    return None if found is None else bool(found["granted"])


async def test_confirmations_by_email_delivery_alerts_by_sms_when_she_opted_in(
    scenario: Scenario,
) -> None:
    s = scenario
    await define(s, "order-confirmation", "delivery-alert")
    # Sara opted in to SMS; Emma gave a phone but said no to SMS; Nora gave no phone;
    # Vera gave a phone and never said yes to SMS.
    await s.customer(
        "sara",
        {"email": "sara@example.com", "phone": "+15550100111", "first_name": "Sara"},
        consent={"sms": True},
    )
    await s.customer(
        "emma",
        {"email": "emma@example.com", "phone": "+15550100222", "first_name": "Emma"},
        consent={"sms": False},
    )
    await s.customer("nora", {"email": "nora@example.com", "first_name": "Nora"})
    await s.customer(
        "vera", {"email": "vera@example.com", "phone": "+15550100333", "first_name": "Vera"}
    )

    orders = (("sara", "o-1"), ("emma", "o-2"), ("nora", "o-3"), ("vera", "o-7"))
    for user, order in orders:
        await s.track(user, "Order Completed", {"order_id": order, "total": 89}, server=True)
    # Confirmations go by email, to all of them (Sara's SMS opt-in changes nothing).
    assert s.texts() == []
    for user, order in orders:
        [confirmation] = s.mails(f"{user}@example.com")
        assert confirmation["Subject"] == f"Order {order} confirmed"
        assert confirmation["To"] == f"{user}@example.com"
        assert f"Thank you, {user.title()}! We received order {order} (89 EUR)." in text_of(
            confirmation
        )
        [sent] = await s.sent(user)
        assert (sent.channels, sent.channel, sent.category, sent.topic) == (
            ("email",),
            "email",
            "transactional",
            "orders",
        )

    await s.advance(timedelta(days=1))
    for user, order in orders:
        await s.track(
            user,
            "Order Out For Delivery",
            {"order_id": order, "window": "14:00-16:00"},
            server=True,
        )

    # Sara: by SMS, from the SMS template, with the unsubscribe link in the text.
    [alert] = s.texts("+15550100111")
    assert alert["From"] == "+15550001111"
    assert alert["Body"].startswith("Rapport Shop: order o-1 arrives today, 14:00-16:00.")
    assert len(s.mails("sara@example.com")) == 1, "no email besides the SMS"
    # Emma (SMS consent withdrawn), Nora (no phone) and Vera (never opted in to SMS):
    # by email, from the email template.
    assert s.texts("+15550100222") == [] and s.texts("+15550100333") == []
    for user, order in (("emma", "o-2"), ("nora", "o-3"), ("vera", "o-7")):
        [_, mail] = s.mails(f"{user}@example.com")
        assert mail["Subject"] == f"Order {order} arrives today"
        assert text_of(mail) == "Your parcel arrives today between 14:00-16:00."
    assert len(s.texts()) == 1
    [sara_alert] = [m for m in await s.sent("sara") if m.template == "delivery-alert"]
    assert (sara_alert.channels, sara_alert.channel, sara_alert.address) == (
        ("sms", "email"),
        "sms",
        "+15550100111",
    )
    [emma_alert] = [m for m in await s.sent("emma") if m.template == "delivery-alert"]
    assert (emma_alert.channel, emma_alert.address) == ("email", "emma@example.com")
    [vera_alert] = [m for m in await s.messages("vera") if m["journey"]["id"] == "delivery-alert"]
    assert (vera_alert["channel"], vera_alert["address"]) == ("email", "vera@example.com")
    [skipped] = [c for c in vera_alert["gate"]["checks"] if c.get("channel") == "sms"]
    assert skipped["detail"] == "channel_not_opted_in: 'sms' consent never granted"
    [why] = [m for m in await s.messages("sara") if m["journey"]["id"] == "delivery-alert"]
    assert (why["status"], why["channel"], why["address"]) == ("sent", "sms", "+15550100111")

    # Every message: one-click unsubscribe from its own topic, and it sticks.
    await one_click(s, mail_unsubscribe(s.mails("nora@example.com")[0]))
    assert await consent(s, "nora", "topic:orders") is False
    assert await consent(s, "nora", "topic:delivery") is None, "only the message's topic"
    await one_click(s, mail_unsubscribe(s.mails("emma@example.com")[1]))
    assert await consent(s, "emma", "topic:delivery") is False
    sms_link = sms_unsubscribe(alert)
    page = await s.follow(sms_link)
    assert page.status_code == 200 and 'name="topic:delivery" value=on checked' in page.text
    assert await consent(s, "sara", "topic:delivery") is None, "opening the page changes nothing"
    await one_click(s, sms_link)
    assert await consent(s, "sara", "topic:delivery") is False
    assert await consent(s, "sara", "topic:orders") is None

    # The next order: confirmations still go where the topic is on, alerts nowhere.
    await s.advance(timedelta(days=1))
    for user, order in (("sara", "o-4"), ("emma", "o-5"), ("nora", "o-6")):
        await s.track(user, "Order Completed", {"order_id": order, "total": 12}, server=True)
        await s.track(
            user, "Order Out For Delivery", {"order_id": order, "window": "9:00-11:00"}, server=True
        )
    assert len(s.texts()) == 1
    assert [m["Subject"] for m in s.mails("sara@example.com")][1:] == ["Order o-4 confirmed"]
    assert [m["Subject"] for m in s.mails("emma@example.com")][2:] == ["Order o-5 confirmed"]
    assert [m["Subject"] for m in s.mails("nora@example.com")][2:] == ["Order o-6 arrives today"]
    for user, template in (("sara", "delivery-alert"), ("nora", "order-confirmation")):
        dropped = [m for m in await s.effects(user) if m.status == "dropped"]
        assert [(m.template, verdict(m.reason)) for m in dropped] == [
            (template, "topic_unsubscribed")
        ]


async def test_birthday_wishes_only_for_those_who_want_them(scenario: Scenario) -> None:
    s = scenario
    await define(s, "birthday")
    # 6 May, 09:00 in Paris (CEST) is 07:00 UTC.
    lina = {"email": "lina@example.com", "first_name": "Lina", "timezone": "Europe/Paris"}
    await s.customer("lina", {**lina, "birthday": "1992-05-06"}, consent={"topic:birthday": True})
    rosa = {"email": "rosa@example.com", "first_name": "Rosa", "timezone": "Europe/Paris"}
    await s.customer("rosa", {**rosa, "birthday": "1988-05-06"}, consent={"topic:birthday": False})
    ines = {"email": "ines@example.com", "first_name": "Ines", "timezone": "Europe/Paris"}
    await s.customer("ines", {**ines, "birthday": "1990-05-06"})

    await s.advance_to(datetime(2026, 5, 6, 6, 59, tzinfo=UTC))
    assert s.mails() == []
    await s.advance(timedelta(minutes=1))
    [wishes] = s.mails()
    assert wishes["To"] == "lina@example.com"
    assert wishes["Subject"] == "Happy birthday, Lina!"
    assert text_of(wishes).startswith("Happy birthday, Lina: a little something")
    [sent] = await s.sent("lina")
    assert sent.created_at == datetime(2026, 5, 6, 7, 0, tzinfo=UTC)
    assert (sent.topic, sent.category, sent.channel) == ("birthday", "promotional", "email")
    # Rosa said no, Ines never said yes: the gate drops theirs and says why.
    [rosa_wishes] = await s.effects("rosa")
    assert (rosa_wishes.status, rosa_wishes.reason) == (
        "dropped",
        "topic_unsubscribed: she unsubscribed from 'birthday'",
    )
    [ines_wishes] = await s.effects("ines")
    assert ines_wishes.status == "dropped"
    assert verdict(ines_wishes.reason) == "topic_not_subscribed", ines_wishes.reason
    assert s.mails("rosa@example.com") == [] and s.mails("ines@example.com") == []

    # Lina has had enough: one click, and next year there are no wishes.
    await one_click(s, mail_unsubscribe(wishes))
    assert await consent(s, "lina", "topic:birthday") is False
    await s.advance_to(datetime(2027, 5, 6, 8, 0, tzinfo=UTC))
    assert len(s.mails()) == 1
    [_, second] = await s.effects("lina")
    assert second.created_at == datetime(2027, 5, 6, 7, 0, tzinfo=UTC)
    assert (second.status, verdict(second.reason)) == ("dropped", "topic_unsubscribed")


async def test_a_promotional_sms_waits_for_nine_in_her_own_time_zone(scenario: Scenario) -> None:
    s = scenario
    await define(s, "flash-sale")
    await s.customer(
        "maya",
        {"phone": "+15550100199", "first_name": "Maya", "timezone": "America/New_York"},
        consent={"sms": True},
    )
    await s.customer(
        "kei",
        {"phone": "+81312345678", "first_name": "Kei", "timezone": "Asia/Tokyo"},
        consent={"sms": True},
    )

    # Tuesday 06:00 UTC: 08:00 in Paris, 02:00 in New York, 15:00 in Tokyo.
    await s.advance_to(datetime(2026, 5, 5, 6, 0, tzinfo=UTC))
    [kei_text] = s.texts("+81312345678")
    assert kei_text["Body"].startswith("Kei, 20% off rain jackets for 24 hours. Stop offers: ")
    assert s.texts("+15550100199") == [], "nothing reaches her at 02:00"
    [held] = await s.effects("maya")
    assert (held.gate, held.status, held.channel) == ("defer", "pending", "sms")
    assert "deferred to 2026-05-05T09:00:00-04:00" in held.reason, held.reason

    await s.advance_to(datetime(2026, 5, 5, 12, 59, 59, tzinfo=UTC))  # 08:59:59 in New York
    assert s.texts("+15550100199") == []
    await s.advance(timedelta(seconds=1))  # 09:00 in New York
    [maya_text] = s.texts("+15550100199")
    assert maya_text["Body"].startswith("Maya, 20% off rain jackets for 24 hours. Stop offers: ")
    [sent] = await s.effects("maya")
    assert sent.status == "sent"
    assert len(s.texts()) == 2, "deferred, not sent twice"

    # Her SMS's link: the preference page, and one click unsubscribes her from offers.
    link = sms_unsubscribe(maya_text)
    assert link != sms_unsubscribe(kei_text)
    page = await s.follow(link)
    assert page.status_code == 200 and 'name="topic:offers" value=on checked' in page.text
    await one_click(s, link)
    assert await consent(s, "maya", "topic:offers") is False
    assert await consent(s, "kei", "topic:offers") is None
