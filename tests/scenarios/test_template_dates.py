"""Today's date in a template is the runtime's clock: on the stories' virtual clock a
message says the virtual date, the day it is actually sent, never the machine's.

A confirmation mail prints ``{{ "now" | date: ... }}``; the order comes in on
the story's first day and again two weeks later (the clock moved, the machine's
did not), and the preview, rendered by the same clock, says the same.
"""

from __future__ import annotations

import email.message
from datetime import timedelta

from tests.scenarios.harness import Scenario

TEMPLATE = {
    "id": "order-dated",
    "name": "Order confirmation, dated",
    "channel": "email",
    "subject": 'Order {{ event.properties.order_id }} of {{ "now" | date: "%A %-d %B %Y" }}',
    "text": 'Received {{ "today" | date: "%Y-%m-%d" }} at {{ "now" | date: "%H:%M" }} UTC.',
}

JOURNEY = """
id: order-dated
name: Dated order confirmation
triggers:
  - event: Order Completed
correlation_key: properties.order_id
reentry: always
start: confirm
steps:
  confirm:
    message:
      channel: email
      template: order-dated
      topic: orders
      category: transactional
"""


def text_of(mail: email.message.EmailMessage) -> str:
    part = mail.get_body(("plain",))
    assert part is not None, mail
    return str(part.get_content()).rstrip("\r\n")


async def test_a_message_shows_the_virtual_date_it_is_sent(scenario: Scenario) -> None:
    s = scenario
    await s.apply("template", TEMPLATE)
    await s.apply("journey", JOURNEY)
    await s.customer("dana", {"email": "dana@example.com", "first_name": "Dana"})

    await s.track("dana", "Order Completed", {"order_id": "o-1"}, server=True)
    await s.advance(timedelta(days=15, hours=2, minutes=30))
    await s.track("dana", "Order Completed", {"order_id": "o-2"}, server=True)

    first, second = s.mails("dana@example.com")
    # The stories start on Monday 4 May 2026 at 09:00 UTC.
    assert first["Subject"] == "Order o-1 of Monday 4 May 2026"
    assert text_of(first) == "Received 2026-05-04 at 09:00 UTC."
    assert second["Subject"] == "Order o-2 of Tuesday 19 May 2026"
    assert text_of(second) == "Received 2026-05-19 at 11:30 UTC."

    body = {"profile": "user_id:dana", "event": {"properties": {"order_id": "o-3"}}}
    preview = await s.client.post("/api/templates/order-dated/preview", json=body, headers=s.admin)
    assert preview.json()["parts"] == {
        "subject": "Order o-3 of Tuesday 19 May 2026",
        "text": "Received 2026-05-19 at 11:30 UTC.",
    }
