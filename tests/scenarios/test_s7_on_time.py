"""S7 — on time for each person.

Appointment reminders reach each customer at her own best lead time. The
published ``examples/journeys/s7-appointment-reminder.yaml`` (applied as it
is) waits until ``appointment_at`` minus her ``reminder_lead``, a
``typical_lead`` computed trait learned from her ``Email Opened`` events: the
open pixel of each reminder she received reports the message's data
(``properties.data.appointment_at``, which the message step snapshots from
her trait), so each open is one observation of how long before the
appointment she engaged. Ana opens hers about an hour ahead, Cleo about a
quarter of an hour ahead; after three appointments the next reminder reaches
Ana an hour before and Cleo fifteen minutes before, as the SMTP server
records on the virtual clock. Dev, a newcomer, gets the default hour. The
mail carries the directions to the location (a trait the booking system
sets, snapshotted into the message), and its directions link works.
"""

from __future__ import annotations

import email.message
import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.scenarios.conftest import EXAMPLES
from tests.scenarios.harness import PUBLIC_URL, Scenario

JOURNEY = "appointment-reminder"
MAPS = "https://maps.example/dir/riverside-clinic"
RIVERSIDE: dict[str, Any] = {
    "name": "Riverside Clinic",
    "address": "12 Quai Claude Bernard, Lyon",
    "directions_url": MAPS,
}

LEAD: dict[str, Any] = {
    "id": "reminder_lead",
    "kind": "typical_lead",
    "description": "How long before an appointment she usually opens its reminder",
    "compute": {
        "event": "Email Opened",
        "where": [{"field": "properties.journey_id", "op": "equals", "value": JOURNEY}],
        "reference": "properties.data.appointment_at",
    },
}

TEMPLATE: dict[str, Any] = {
    "id": "appointment-reminder",
    "name": "Your appointment is coming up",
    "channel": "email",
    "subject": "Soon: your appointment at {{ journey.location.name }}",
    "html": "<html><body><p>See you soon at {{ journey.location.name }}, "
    "{{ journey.location.address }}.</p>"
    '<p><a href="{{ journey.location.directions_url }}">Directions</a></p></body></html>',
    "text": "See you soon at {{ journey.location.name }}, {{ journey.location.address }}.\n"
    "Directions: {{ journey.location.directions_url }}",
}

PIXEL = re.compile(r'<img src="([^"]+/l/o/[^"]+\.gif)"')
LINK = re.compile(r'<a href="([^"]+)">Directions</a>')


class Arrivals:
    """When (on the virtual clock) each mail reached the SMTP server."""

    def __init__(self, s: Scenario) -> None:
        self.s = s
        self.log: list[tuple[datetime, list[str], email.message.EmailMessage]] = []
        sink = s.smtp.sink
        accept = sink.handle_DATA

        async def handle_data(server: SMTP, session: Session, envelope: Envelope) -> str:
            answer = await accept(server, session, envelope)
            received = sink.received[-1]
            self.log.append((s.clock.now(), received.rcpt_tos, received.message))
            return answer

        sink.handle_DATA = handle_data  # type: ignore[method-assign]

    def to(self, user: str) -> list[tuple[datetime, email.message.EmailMessage]]:
        return [(at, mail) for at, tos, mail in self.log if f"{user}@example.com" in tos]


def html_of(mail: email.message.EmailMessage) -> str:
    part = mail.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def text_of(mail: email.message.EmailMessage) -> str:
    part = mail.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


async def define(s: Scenario) -> None:
    await s.apply("computed_trait", LEAD)
    await s.apply("template", TEMPLATE)
    await s.apply_file("journey", EXAMPLES / "s7-appointment-reminder.yaml")


async def book(s: Scenario, user: str, appointment: datetime, ident: str) -> None:
    """What the booking system does: the appointment on her profile, then the event."""
    await s.identify(
        user,
        {"appointment_at": appointment.isoformat(), "appointment_location": RIVERSIDE},
        server=True,
    )
    await s.track(
        user, "Appointment Booked", {"appointment_id": ident, "location": "riverside"}, server=True
    )


async def open_at(s: Scenario, mail: email.message.EmailMessage, when: datetime) -> None:
    """Her mail client shows the mail at ``when``: it loads the open pixel."""
    await s.advance_to(when)
    [pixel] = PIXEL.findall(html_of(mail))
    response = await s.follow(html.unescape(pixel))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"


def day(n: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 5, n, hour, minute, tzinfo=UTC)


async def test_each_reminder_comes_at_her_own_lead_time(scenario: Scenario) -> None:
    s = scenario
    arrivals = Arrivals(s)
    await define(s)
    for user in ("ana", "cleo"):
        await s.customer(user, {"email": f"{user}@example.com", "first_name": user.title()})

    # Three appointments at 14:00, each booked that morning. Ana opens each
    # reminder about an hour ahead; Cleo only about a quarter of an hour ahead.
    ana_opens = [60, 58, 60]  # minutes before the appointment
    cleo_opens = [15, 13, 14]
    cleo_expected_leads = [60, 15, 15]  # a newcomer's hour, then what she taught us
    for n, (ana_lead, cleo_lead) in enumerate(zip(ana_opens, cleo_opens, strict=True)):
        appointment = day(5 + n, 14)
        await s.advance_to(day(5 + n, 9))
        await book(s, "ana", appointment, f"a-{n}")
        await book(s, "cleo", appointment, f"c-{n}")
        await s.advance_to(appointment - timedelta(hours=1))
        arrived_at, ana_mail = arrivals.to("ana")[-1]
        assert arrived_at == appointment - timedelta(hours=1)
        await open_at(s, ana_mail, appointment - timedelta(minutes=ana_lead))
        await s.advance_to(appointment - timedelta(minutes=cleo_expected_leads[n]))
        arrived_at, cleo_mail = arrivals.to("cleo")[-1]
        assert arrived_at == appointment - timedelta(minutes=cleo_expected_leads[n]), n
        await open_at(s, cleo_mail, appointment - timedelta(minutes=cleo_lead))
        await s.advance_to(appointment + timedelta(hours=1))
        assert len(arrivals.to("ana")) == len(arrivals.to("cleo")) == n + 1

    # What her reactions taught: the median lead, rounded to 5 minutes.
    assert (await s.traits("ana"))["reminder_lead"] == "1h"
    assert (await s.traits("cleo"))["reminder_lead"] == "15m"

    # The next appointment, and a newcomer booked for the same time.
    appointment = day(11, 14)
    await s.advance_to(day(11, 8))
    await s.customer("dev", {"email": "dev@example.com"})
    for user in ("ana", "cleo", "dev"):
        await book(s, user, appointment, f"{user}-next")
    cleo = await s.instance(JOURNEY, "cleo")
    assert cleo["status"] == "waiting"
    assert datetime.fromisoformat(cleo["wait"]["until"]) == appointment - timedelta(minutes=15)

    await s.advance_to(appointment - timedelta(minutes=61))
    assert len(arrivals.to("ana")) == 3 and len(arrivals.to("dev")) == 0
    # Stopping at each instant: when advance() passes a due timer and a later one in one
    # call, a single settle may let the clock move on before the due mail is sent.
    await s.advance_to(appointment - timedelta(hours=1))
    await s.advance_to(appointment - timedelta(minutes=15))
    await s.advance_to(appointment)
    [(ana_at, ana_mail)] = arrivals.to("ana")[3:]
    [(cleo_at, cleo_mail)] = arrivals.to("cleo")[3:]
    [(dev_at, dev_mail)] = arrivals.to("dev")
    assert appointment - ana_at == timedelta(hours=1)
    assert appointment - cleo_at == timedelta(minutes=15)
    assert appointment - dev_at == timedelta(hours=1)  # no history: the default

    # The reminder carries the directions to the location.
    for mail in (ana_mail, cleo_mail, dev_mail):
        assert mail["Subject"] == "Soon: your appointment at Riverside Clinic"
        assert "Riverside Clinic, 12 Quai Claude Bernard, Lyon" in text_of(mail)
        assert f"Directions: {MAPS}" in text_of(mail)
    [directions] = LINK.findall(html_of(dev_mail))
    directions = html.unescape(directions)
    assert directions.startswith(f"{PUBLIC_URL}/l/c/")  # tracked, then on to the map
    response = await s.follow(directions)
    assert response.status_code == 302
    assert response.headers["location"] == MAPS

    # What the message was about travels with it (and so with her reactions).
    [reminder] = [m for m in await s.sent("cleo") if m.created_at == cleo_at]
    assert reminder.data == {
        "appointment_at": appointment.isoformat(),
        "location": RIVERSIDE,
    }
    assert (reminder.template, reminder.category, reminder.topic) == (
        "appointment-reminder",
        "transactional",
        "reminders",
    )


async def test_a_cancelled_or_too_close_appointment_gets_no_reminder(scenario: Scenario) -> None:
    s = scenario
    arrivals = Arrivals(s)
    await define(s)
    await s.customer("ana", {"email": "ana@example.com"})
    await s.customer("ben", {"email": "ben@example.com"})
    await book(s, "ana", day(4, 15), "a-1")
    await s.track("ana", "Appointment Cancelled", {"appointment_id": "a-1"}, server=True)
    await book(s, "ben", s.now + timedelta(minutes=30), "b-1")  # inside his hour
    await s.advance(timedelta(days=1))
    assert arrivals.log == [] and s.mails() == []
    ana = await s.instance(JOURNEY, "ana")
    assert ana["status"] == "exited"
    ben = await s.instance(JOURNEY, "ben")
    assert ben["end_reason"] == "exit step: appointment too close or already past"
