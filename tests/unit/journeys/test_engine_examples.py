"""The story journeys of examples/journeys, as published, run through the engine."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from rapport.core.journeys import compile_journey, describe, parse_document, parse_journey
from rapport.core.journeys.compiled import CompiledJourney
from tests.unit.journeys.engine_harness import Harness, days, hours

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "journeys"


def example(name: str) -> CompiledJourney:
    document = parse_document((EXAMPLES / name).read_text(), "yaml")
    return compile_journey(parse_journey(document), 1)


def test_s4_ticket_recovery_gift_then_survey_never_while_a_ticket_is_open() -> None:
    h = Harness(example("s4-ticket-recovery.yaml"))
    h.track("Ticket Closed", ticket_id="t1", topic="billing")
    assert h.instances == {}
    h.track("Ticket Closed", ticket_id="t2", topic="lost_package")
    h.advance(hours(1))
    assert h.sent == ["apology-gift"]
    h.set_traits(open_support_tickets=1)
    h.advance(days(2))
    assert h.sent == ["apology-gift"]
    h.set_traits(open_support_tickets=0)
    assert h.sent == ["apology-gift", "satisfaction-survey"]
    assert h.only().correlation_key == "t2"


def test_s4_reopened_ticket_ends_the_recovery() -> None:
    h = Harness(example("s4-ticket-recovery.yaml"))
    h.track("Ticket Closed", ticket_id="t2", topic="lost_package")
    h.track("Ticket Reopened", ticket_id="t9")
    h.track("Ticket Reopened", ticket_id="t2")
    h.advance(days(3))
    assert h.sent == []
    assert h.only().end_reason == "exit criterion 0 matched event Ticket Reopened"


def test_s5_welcome_series_example() -> None:
    h = Harness(example("s5-welcome-series.yaml"))  # signs up on Monday 09:00 UTC
    h.track("Signed Up")
    h.advance(days(8) + hours(1))
    sends = list(h.outbox.values())
    assert [s.template for s in sends] == ["welcome-1", "welcome-2-picks", "welcome-3-picks"]
    assert sends[1].data == {"featured": "clicked-category"}
    times = [i.at for i in h.only().trace if i.what == "sent"]
    assert times == [
        datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        datetime(2026, 3, 4, 9, 0, tzinfo=UTC),
        datetime(2026, 3, 10, 9, 0, tzinfo=UTC),  # the next 09:00 after 5 days
    ]


def test_s5_buying_during_the_series_converts() -> None:
    h = Harness(example("s5-welcome-series.yaml"))
    h.track("Signed Up")
    h.advance(days(3))
    h.track("Order Completed", order_id="o1")
    h.advance(days(10))
    assert h.sent == ["welcome-1", "welcome-2-picks"]
    assert h.only().status == "converted"


def test_s8_basket_reminder_at_her_evening_unless_she_buys() -> None:
    h = Harness(example("s8-basket-reminder.yaml"))
    h.set_traits(basket=["sku-1"], usual_return_time="20:00")
    h.track("Product Added", sku="sku-1")
    h.advance(hours(12))
    assert h.sent == ["basket-reminder"]
    (send,) = h.outbox.values()
    assert send.channels == ("push", "email")
    assert any(
        "timeout: no 'Order Completed' within 2:00:00" in line for line in describe(h.only())
    )

    buyer = Harness(example("s8-basket-reminder.yaml"))
    buyer.track("Product Added", sku="sku-1")
    buyer.advance(hours(1))
    buyer.track("Order Completed")
    buyer.advance(days(1))
    assert buyer.sent == []
    assert (buyer.only().status, buyer.only().goals_reached) == ("converted", ["basket-bought"])
