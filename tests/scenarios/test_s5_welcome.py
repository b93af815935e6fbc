"""S5 — welcome, then listen.

A brand-new sign-up enters the welcome series (the published
``examples/journeys/s5-welcome-series.yaml``, applied as it is): three
emails over a week. Between them she only clicks running shoes, through the
tracked links of the mails she received: the click redirect records
``Email Link Clicked`` with the target url, and the computed trait
``last_clicked_url`` keeps the latest. The second and third mails read it and
feature athletic gear, not dress shoes. A customer who clicked dress shoes
gets dress shoes, one who clicked nothing the bestsellers.

"No history": the trigger's condition reads ``orders``, a computed trait
counting ``Order Completed``, so a customer who already bought does not
enter. Buying during the series is the goal: it ends the series and no
further mail comes.
"""

from __future__ import annotations

import email.message
import html
import re
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.scenarios.conftest import EXAMPLES
from tests.scenarios.harness import Scenario

SHOP = "https://shop.example"

COMPUTED: list[dict[str, Any]] = [
    {
        "id": "orders",
        "description": "How many orders she ever completed",
        "compute": {"event": "Order Completed"},
    },
    {
        "id": "last_clicked_url",
        "description": "The target of the last link she clicked in a message",
        "compute": {"event": "Email Link Clicked", "aggregate": "last", "of": "properties.url"},
    },
]

# What she clicked decides the picks; the url paths name the shop's sections.
PICKS_TEXT = (
    "{% assign clicked = profile.traits.last_clicked_url | default: '' %}"
    "{% if clicked contains '/running/' %}Athletic gear picked for you: "
    "trail runners, running tights."
    "{% elsif clicked contains '/dress/' %}Dress shoes picked for you: oxfords, loafers."
    "{% else %}Our bestsellers.{% endif %}"
)
PICKS_HTML = (
    "<html><body>{% assign clicked = profile.traits.last_clicked_url | default: '' %}"
    "{% if clicked contains '/running/' %}<p>Athletic gear picked for you</p>"
    f'<a href="{SHOP}/c/running/trail-runners">Trail runners</a> '
    f'<a href="{SHOP}/c/running/tights">Running tights</a>'
    "{% elsif clicked contains '/dress/' %}<p>Dress shoes picked for you</p>"
    f'<a href="{SHOP}/c/dress/oxfords">Oxfords</a>'
    f'{{% else %}}<p>Our bestsellers</p><a href="{SHOP}/bestsellers">Shop</a>'
    "{% endif %}</body></html>"
)

WELCOME: dict[str, Any] = {
    "id": "welcome-1",
    "name": "Welcome",
    "channel": "email",
    "subject": "Welcome, {{ profile.traits.first_name }}!",
    "text": f"Welcome! Running shoes: {SHOP}/c/running/shoes Dress shoes: {SHOP}/c/dress/shoes",
    "html": "<html><body><p>Welcome, {{ profile.traits.first_name }}!</p>"
    f'<a href="{SHOP}/c/running/shoes">Running shoes</a> '
    f'<a href="{SHOP}/c/dress/shoes">Dress shoes</a></body></html>',
    "variables": {"profile.traits.first_name": "friend"},
}


def picks(ident: str, subject: str) -> dict[str, Any]:
    return {
        "id": ident,
        "name": ident,
        "channel": "email",
        "subject": subject,
        "text": PICKS_TEXT,
        "html": PICKS_HTML,
    }


async def define(s: Scenario) -> None:
    for trait in COMPUTED:
        await s.apply("computed_trait", trait)
    await s.apply("template", WELCOME)
    await s.apply("template", picks("welcome-2-picks", "Picked for you"))
    await s.apply("template", picks("welcome-3-picks", "More for you"))
    await s.apply_file("journey", EXAMPLES / "s5-welcome-series.yaml")


async def sign_up(s: Scenario, user: str) -> None:
    """The shop's backend creates her account (her address is trusted) and says so."""
    await s.customer(user, {"email": f"{user}@example.com", "first_name": user.title()})
    await s.track(user, "Signed Up", server=True)


def text_of(mail: email.message.EmailMessage) -> str:
    part = mail.get_body(("plain",))
    assert part is not None, mail
    return str(part.get_content()).rstrip("\r\n")


def html_of(mail: email.message.EmailMessage) -> str:
    part = mail.get_body(("html",))
    assert part is not None, mail
    return str(part.get_content()).rstrip("\r\n")


def tracked_link(mail: email.message.EmailMessage, target: str) -> str:
    """The href of the mail's HTML that redirects to ``target`` (the signed click link)."""
    for href in re.findall(r'href="([^"]+)"', html_of(mail)):
        url = html.unescape(href)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        if "/l/c/" in url and query.get("u") == [target]:
            return url
    raise AssertionError(f"no tracked link to {target} in {html_of(mail)}")


async def click(s: Scenario, mail: email.message.EmailMessage, target: str) -> None:
    """She clicks the link to ``target`` in the mail: the redirect takes her there."""
    response = await s.follow(tracked_link(mail, target))
    assert response.status_code == 302, response.text
    assert response.headers["location"] == target


async def test_three_mails_over_a_week_featuring_what_she_clicked(scenario: Scenario) -> None:
    s = scenario
    await define(s)
    await s.advance(timedelta(hours=5, minutes=30))  # Monday 14:30 UTC
    signed_up = s.now
    await sign_up(s, "ana")
    [welcome] = await s.sent("ana")
    assert welcome.created_at == signed_up
    assert (welcome.template, welcome.topic, welcome.category) == (
        "welcome-1",
        "onboarding",
        "promotional",
    )
    [first] = s.mails("ana@example.com")
    assert first["Subject"] == "Welcome, Ana!"
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Running shoes" in html_of(first) and "Dress shoes" in html_of(first)

    # Between the first and second mail she clicks running shoes, twice.
    await s.advance(timedelta(hours=20))
    await click(s, first, f"{SHOP}/c/running/shoes")
    await s.advance(timedelta(hours=20))
    await click(s, first, f"{SHOP}/c/running/shoes")
    assert (await s.traits("ana"))["last_clicked_url"] == f"{SHOP}/c/running/shoes"
    await s.advance(timedelta(hours=8))  # two days after signing up
    sent = await s.sent("ana")
    assert [m.template for m in sent] == ["welcome-1", "welcome-2-picks"]
    assert sent[1].created_at == signed_up + timedelta(days=2)
    assert (sent[1].gate, sent[1].address) == ("send", "ana@example.com")
    [_, second] = s.mails("ana@example.com")
    assert second["Subject"] == "Picked for you"
    assert text_of(second) == "Athletic gear picked for you: trail runners, running tights."
    assert "Athletic gear" in html_of(second) and "Dress" not in html_of(second)

    # She clicks trail runners in the second mail.
    await s.advance(timedelta(days=3))
    await click(s, second, f"{SHOP}/c/running/trail-runners")
    await s.advance(timedelta(days=2, hours=18))  # day 8, 08:30
    assert len(s.mails("ana@example.com")) == 2, "the third waits for 09:00 after five days"
    await s.advance(timedelta(minutes=30))
    sent = await s.sent("ana")
    assert [m.template for m in sent] == ["welcome-1", "welcome-2-picks", "welcome-3-picks"]
    # Five days after the second, then the next 09:00 in her zone (UTC).
    assert sent[2].created_at == datetime(2026, 5, 12, 9, 0, tzinfo=UTC)
    assert sent[2].created_at - signed_up < timedelta(days=8)
    mails = s.mails("ana@example.com")
    assert [m["Subject"] for m in mails] == ["Welcome, Ana!", "Picked for you", "More for you"]
    third = mails[2]
    assert "Athletic gear" in text_of(third) and "Dress" not in text_of(third)
    assert "Dress" not in html_of(third)
    assert len({m["Message-ID"] for m in mails}) == 3
    instance = await s.instance("welcome-series", "ana")
    assert instance["status"] == "completed"
    await s.advance(timedelta(days=14))
    assert len(s.mails("ana@example.com")) == 3, "three mails, no more"


async def test_what_she_clicks_decides_the_picks(scenario: Scenario) -> None:
    s = scenario
    await define(s)
    await sign_up(s, "dora")
    await sign_up(s, "ben")
    [welcome] = s.mails("dora@example.com")
    await s.advance(timedelta(hours=3))
    await click(s, welcome, f"{SHOP}/c/dress/shoes")
    await s.advance(timedelta(days=2))

    [_, dora] = s.mails("dora@example.com")
    assert text_of(dora) == "Dress shoes picked for you: oxfords, loafers."
    # A newcomer who clicked nothing gets the bestsellers, not athletic gear.
    [_, ben] = s.mails("ben@example.com")
    assert text_of(ben) == "Our bestsellers."
    assert "last_clicked_url" not in await s.traits("ben")


async def test_a_customer_with_an_order_already_is_not_welcomed(scenario: Scenario) -> None:
    s = scenario
    await define(s)
    # She bought as a guest last week; now she creates an account.
    await s.customer("eve", {"email": "eve@example.com"})
    await s.track("eve", "Order Completed", {"order_id": "o-0", "revenue": 60}, server=True)
    await s.advance(timedelta(days=7))
    await s.track("eve", "Signed Up", server=True)
    await sign_up(s, "fay")
    await s.advance(timedelta(days=9))

    assert (await s.traits("eve"))["orders"] == 1
    assert s.mails("eve@example.com") == []
    profile = await s.profile_id("eve")
    assert [i for i in await s.instances("welcome-series") if i["profile_id"] == profile] == []
    assert len(s.mails("fay@example.com")) == 3


async def test_a_purchase_during_the_series_is_the_goal_and_ends_it(scenario: Scenario) -> None:
    s = scenario
    await define(s)
    await sign_up(s, "cleo")
    [welcome] = s.mails("cleo@example.com")
    await s.advance(timedelta(hours=5))
    await click(s, welcome, f"{SHOP}/c/running/shoes")
    await s.advance(timedelta(hours=19))
    await s.track("cleo", "Order Completed", {"order_id": "o-1", "revenue": 89})
    await s.advance(timedelta(days=10))

    assert [m["Subject"] for m in s.mails("cleo@example.com")] == ["Welcome, Cleo!"]
    assert [m.template for m in await s.effects("cleo")] == ["welcome-1"]
    instance = await s.instance("welcome-series", "cleo")
    assert instance["status"] == "converted"
    assert "first-purchase" in str(instance["goals_reached"])
    response = await s.client.get("/api/journeys/welcome-series/metrics", headers=s.admin)
    assert response.json()["instances"] == {"converted": 1}
