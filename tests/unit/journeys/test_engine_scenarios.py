"""The journey parts of the customer stories, run through the pure engine with a virtual now."""

from __future__ import annotations

from datetime import UTC, datetime

from rapport.core.journeys.instances import describe
from tests.unit.journeys.engine_harness import Harness, compile_doc, days, hours

PROMO = {"channel": "email", "topic": "offers", "category": "promotional"}

JACKET = {
    "id": "jacket-offer",
    "name": "Jacket offer",
    "triggers": [{"segment_entered": "jacket-lookers"}],
    "exit_when": [{"event": "Order Completed"}],
    "reentry": {"after": "7d"},
    "start": "pause",
    "steps": {
        "pause": {"wait": {"for": "10m"}, "next": "offer"},
        "offer": {"message": {**PROMO, "template": "coat-discount"}},
    },
}


def segment_entered(h: Harness, segment: str) -> None:
    h.track("Segment Entered", segment_id=segment)


def test_s2_segment_entry_sends_the_offer_after_the_wait() -> None:
    h = Harness(compile_doc(JACKET))
    h.track("Segment Entered", segment_id="other-segment")
    assert h.instances == {}
    segment_entered(h, "jacket-lookers")
    assert h.sent == []
    h.advance(hours(1))
    assert h.sent == ["coat-discount"]
    send = next(iter(h.outbox.values()))
    assert (send.journey_id, send.version, send.step_id, send.category) == (
        "jacket-offer",
        1,
        "offer",
        "promotional",
    )
    assert h.only().status == "completed"
    assert h.timers == {}


def test_s2_purchase_before_the_send_exits_and_nothing_is_sent() -> None:
    h = Harness(compile_doc(JACKET))
    segment_entered(h, "jacket-lookers")
    h.advance(hours(0.05))
    h.track("Order Completed", order_id="o1")
    instance = h.only()
    assert instance.status == "exited"
    assert instance.end_reason == "exit criterion 0 matched event Order Completed"
    assert h.timers == {}
    h.advance(days(2))
    assert h.sent == []
    assert h.metrics[("jacket-offer", "pause", "exited")] == 1


def test_s2_cap_period_is_the_reentry_cooldown() -> None:
    h = Harness(compile_doc(JACKET))
    segment_entered(h, "jacket-lookers")
    h.advance(hours(1))
    for _ in range(3):
        segment_entered(h, "jacket-lookers")
        h.advance(days(1))
    assert h.sent == ["coat-discount"]
    h.advance(days(4))
    segment_entered(h, "jacket-lookers")
    h.advance(hours(1))
    assert h.sent == ["coat-discount", "coat-discount"]
    assert len(h.outbox) == 2  # two instances, two keys


OPEN_TICKET = {"trait": "open_support_tickets", "op": "gt", "value": 0}

SALE = {
    "id": "spring-sale",
    "name": "Spring sale",
    "triggers": [{"segment_entered": "spring"}],
    "hold": {"while": OPEN_TICKET, "max_age": "2d", "messages": "promotional"},
    "start": "sale",
    "steps": {
        "sale": {"message": {**PROMO, "template": "spring-sale"}, "next": "later"},
        "later": {"wait": {"for": "3d"}, "next": "reminder"},
        "reminder": {"message": {**PROMO, "template": "spring-reminder"}},
    },
}

AFTER_TICKET = {
    "id": "after-ticket",
    "name": "Sorry, then a survey",
    "triggers": [{"event": "Ticket Closed"}],
    "hold": {"while": OPEN_TICKET, "max_age": "7d", "messages": "all"},
    "reentry": "always",
    "start": "hour",
    "steps": {
        "hour": {"wait": {"for": "1h"}, "next": "gift"},
        "gift": {
            "message": {
                "channel": "email",
                "template": "apology-gift",
                "category": "transactional",
            },
            "next": "day",
        },
        "day": {"wait": {"for": "1d"}, "next": "survey"},
        "survey": {"message": {**PROMO, "topic": "surveys", "template": "satisfaction"}},
    },
}


def test_s4_promotions_hold_while_a_ticket_is_open_and_resume_after() -> None:
    h = Harness(compile_doc(SALE), compile_doc(AFTER_TICKET))
    h.set_traits(open_support_tickets=1)
    segment_entered(h, "spring")
    sale = h.only("spring-sale")
    assert sale.status == "held"
    assert h.sent == []
    h.advance(days(1))
    assert h.sent == []
    h.set_traits(open_support_tickets=0)
    h.track("Ticket Closed", ticket_id="t1")
    assert h.sent == ["spring-sale"]  # held a day, younger than max_age 2d
    h.advance(hours(1))
    assert h.sent == ["spring-sale", "apology-gift"]
    h.advance(days(1))
    assert h.sent == ["spring-sale", "apology-gift", "satisfaction"]
    assert any(
        "released: hold condition false after 1 day" in line
        for line in describe(h.only("spring-sale"))
    )


def test_s4_survey_never_while_a_ticket_is_open() -> None:
    h = Harness(compile_doc(AFTER_TICKET))
    h.track("Ticket Closed", ticket_id="t1")
    h.advance(hours(2))
    assert h.sent == ["apology-gift"]
    h.set_traits(open_support_tickets=1)  # a new ticket before the survey
    h.advance(days(3))
    assert h.sent == ["apology-gift"]
    assert h.only().status == "held"
    h.set_traits(open_support_tickets=0)
    assert h.sent == ["apology-gift", "satisfaction"]


def test_s4_stale_promotions_are_dropped_and_the_journey_goes_on() -> None:
    h = Harness(compile_doc(SALE))
    h.set_traits(open_support_tickets=1)
    segment_entered(h, "spring")
    h.advance(days(3))
    h.set_traits(open_support_tickets=0)
    assert h.sent == []
    instance = h.only()
    assert instance.status == "waiting" and instance.step_id == "later"
    assert any("dropped: stale: held 3 days" in line for line in describe(instance))
    assert h.metrics[("spring-sale", "sale", "dropped")] == 1
    h.advance(days(3))
    assert h.sent == ["spring-reminder"]


def test_s4_transactional_messages_ignore_a_promotional_hold() -> None:
    document = {
        **SALE,
        "steps": {
            "sale": {"message": {"channel": "sms", "template": "t", "category": "transactional"}}
        },
    }
    h = Harness(compile_doc(document))
    h.set_traits(open_support_tickets=1)
    segment_entered(h, "spring")
    assert h.sent == ["t"]


WELCOME = {
    "id": "welcome-series",
    "name": "Welcome series",
    "triggers": [{"event": "Signed Up"}],
    "goals": [{"name": "first-purchase", "event": "Order Completed", "within": "14d"}],
    "start": "welcome",
    "steps": {
        "welcome": {
            "message": {**PROMO, "topic": "onboarding", "template": "welcome-1"},
            "next": "w1",
        },
        "w1": {"wait": {"for": "3d"}, "next": "pick-2"},
        "pick-2": {
            "branch": [
                {
                    "when": {"trait": "clicked_category", "op": "equals", "value": "running"},
                    "next": "athletic-2",
                }
            ],
            "otherwise": "generic-2",
        },
        "athletic-2": {
            "message": {**PROMO, "topic": "onboarding", "template": "athletic-2"},
            "next": "w2",
        },
        "generic-2": {
            "message": {**PROMO, "topic": "onboarding", "template": "generic-2"},
            "next": "w2",
        },
        "w2": {"wait": {"for": "4d"}, "next": "pick-3"},
        "pick-3": {
            "branch": [
                {
                    "when": {"trait": "clicked_category", "op": "equals", "value": "running"},
                    "next": "athletic-3",
                }
            ],
            "otherwise": "generic-3",
        },
        "athletic-3": {"message": {**PROMO, "topic": "onboarding", "template": "athletic-3"}},
        "generic-3": {"message": {**PROMO, "topic": "onboarding", "template": "generic-3"}},
    },
}


def test_s5_three_messages_over_a_week_following_her_clicks() -> None:
    h = Harness(compile_doc(WELCOME))
    h.track("Signed Up")
    assert h.sent == ["welcome-1"]
    h.advance(days(1))
    h.set_traits(clicked_category="running")
    h.advance(days(2) - hours(1))
    assert h.sent == ["welcome-1"]
    h.advance(hours(1))
    assert h.sent == ["welcome-1", "athletic-2"]
    h.advance(days(4))
    assert h.sent == ["welcome-1", "athletic-2", "athletic-3"]
    instance = h.only()
    assert instance.status == "completed"
    assert instance.ended_at == datetime(2026, 3, 9, 9, 0, tzinfo=UTC)
    trace = describe(instance)
    assert any(
        "[pick-2] branch: case 0 taken to 'athletic-2': "
        "condition $.steps.pick-2.branch[0].when true" in line
        for line in trace
    )


def test_s5_without_clicks_the_branch_takes_otherwise() -> None:
    h = Harness(compile_doc(WELCOME))
    h.track("Signed Up")
    h.advance(days(8))
    assert h.sent == ["welcome-1", "generic-2", "generic-3"]
    assert any("no case held: otherwise to 'generic-2'" in line for line in describe(h.only()))


def test_s5_a_purchase_during_the_series_converts_and_ends_it() -> None:
    h = Harness(compile_doc(WELCOME))
    h.track("Signed Up")
    h.advance(days(4))
    h.track("Order Completed", order_id="o1")
    instance = h.only()
    assert instance.status == "converted"
    assert instance.goals_reached == ["first-purchase"]
    assert h.timers == {}
    h.advance(days(10))
    assert h.sent == ["welcome-1", "generic-2"]
    assert h.metrics[("welcome-series", "w2", "converted")] == 1


def test_s5_a_purchase_after_the_goal_window_is_not_a_conversion() -> None:
    document = {**WELCOME, "goals": [{"name": "quick", "event": "Order Completed", "within": "1d"}]}
    h = Harness(compile_doc(document))
    h.track("Signed Up")
    h.advance(days(2))
    h.track("Order Completed")
    assert h.only().status == "waiting"
    assert h.only().goals_reached == []


DELIVERY = {
    "id": "delivery-feedback",
    "name": "Feedback after delivery",
    "triggers": [{"event": "Order Shipped"}],
    "correlation_key": "properties.order_id",
    "reentry": "always",
    "exit_when": [{"event": "Order Cancelled", "correlate": "properties.order_id"}],
    "start": "delivered",
    "steps": {
        "delivered": {
            "wait": {
                "event": "Order Delivered",
                "correlate": "properties.order_id",
                "timeout": "30d",
                "on_timeout": "late",
            },
            "next": "ask",
        },
        "ask": {"message": {**PROMO, "topic": "surveys", "template": "feedback-request"}},
        "late": {
            "message": {
                "channel": "email",
                "template": "delivery-problem",
                "category": "transactional",
            }
        },
    },
}


def test_s8_wait_for_the_correlated_event() -> None:
    h = Harness(compile_doc(DELIVERY))
    h.track("Order Shipped", order_id="A")
    h.track("Order Shipped", order_id=7)
    assert len(h.live()) == 2
    h.advance(days(2))
    h.track("Order Delivered", order_id="B")
    assert h.sent == []
    h.track("Order Delivered", order_id="7")  # keys compare as text
    assert h.sent == ["feedback-request"]
    by_key = {i.correlation_key: i for i in h.instances.values()}
    assert by_key["7"].status == "completed" and by_key["A"].status == "waiting"
    wait = by_key["A"].wait
    assert wait is not None and wait.event == "Order Delivered" and wait.correlation == "A"
    h.advance(days(28))
    assert h.sent == ["feedback-request", "delivery-problem"]
    assert any(
        "timeout: no 'Order Delivered' within 30 days" in line
        for line in describe(h.instances[by_key["A"].id])
    )


def test_s8_correlated_exit_only_ends_its_own_order() -> None:
    h = Harness(compile_doc(DELIVERY))
    h.track("Order Shipped", order_id="A")
    h.track("Order Shipped", order_id="B")
    h.track("Order Cancelled", order_id="A")
    statuses = sorted((i.correlation_key, i.status) for i in h.instances.values())
    assert statuses == [("A", "exited"), ("B", "waiting")]
    h.track("Order Shipped")  # no key: no instance
    assert len(h.instances) == 2


BASKET = {
    "id": "basket-evening",
    "name": "Basket reminder at her usual time",
    "triggers": [{"event": "Cart Abandoned"}],
    "exit_when": [{"event": "Order Completed"}],
    "time_zone": {"trait": "tz", "default": "UTC"},
    "start": "usual-time",
    "steps": {
        "usual-time": {
            "wait": {"until_time": {"trait": "usual_return_time", "default": "19:00"}},
            "next": "remind",
        },
        "remind": {"message": {**PROMO, "topic": "reminders", "template": "basket-reminder"}},
    },
}


def test_s8_basket_reminder_at_her_usual_local_time() -> None:
    h = Harness(compile_doc(BASKET), start=datetime(2026, 3, 2, 11, 30, tzinfo=UTC))
    h.set_traits(tz="Europe/Paris", usual_return_time="20:30")
    h.track("Cart Abandoned", items=["sku-1"])
    (timer,) = h.timers.values()
    assert timer.due_at == datetime(2026, 3, 2, 19, 30, tzinfo=UTC)  # 20:30 in Paris (UTC+1)
    h.advance(hours(8))
    assert h.sent == ["basket-reminder"]


def test_s8_nothing_if_she_buys_first() -> None:
    h = Harness(compile_doc(BASKET))
    h.track("Cart Abandoned")
    h.advance(hours(2))
    h.track("Order Completed")
    h.advance(days(1))
    assert h.sent == []


def test_the_trace_reads_as_a_story() -> None:
    h = Harness(compile_doc(JACKET))
    segment_entered(h, "jacket-lookers")
    h.advance(hours(0.05))
    h.track("Order Completed", order_id="o1")
    assert describe(h.only()) == [
        "2026-03-02T09:00:00+00:00 [pause] entered: trigger 0 fired, version 1"
        " (by event Segment Entered (msg-1))",
        "2026-03-02T09:00:00+00:00 [pause] waiting: for a duration, until 2026-03-02T09:10:00+00:00"
        " (by event Segment Entered (msg-1))",
        "2026-03-02T09:03:00+00:00 [pause] exited: exit criterion 0 matched event Order Completed"
        " (by event Order Completed (msg-2))",
    ]
