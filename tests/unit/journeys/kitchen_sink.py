"""One journey that uses every trigger, step kind and journey-wide rule at least once."""

from __future__ import annotations

from typing import Any

KITCHEN_SINK: dict[str, Any] = {
    "id": "kitchen-sink",
    "name": "Every feature",
    "description": "Not a real journey: it holds one of everything.",
    "priority": 70,
    "correlation_key": "properties.order_id",
    "reentry": {"after": "7d"},
    "time_zone": {"trait": "tz", "default": "Europe/Paris"},
    "triggers": [
        {
            "event": "Order Completed",
            "where": [{"field": "properties.total", "op": "gte", "value": 50}],
            "condition": {"consent": "email", "granted": True},
        },
        {
            "business_event": "Shipment Delayed",
            "where": [{"field": "properties.days", "op": "gt", "value": 1}],
            "to": {
                "event": "Order Completed",
                "match": {"properties.order_id": "properties.order_id"},
                "where": [{"field": "properties.channel", "op": "equals", "value": "web"}],
                "window": "90d",
            },
            "condition": {"in_segment": "customers"},
        },
        {
            "business_event": "Order Updated",
            "to": {"identifier": "email", "from": "properties.customer_email"},
        },
    ],
    "exit_when": [
        {"event": "Order Cancelled", "where": [], "correlate": "properties.order_id"},
        {"condition": {"trait": "do_not_contact", "op": "equals", "value": True}},
    ],
    "goals": [
        {
            "name": "reviewed",
            "event": "Review Submitted",
            "where": [{"field": "properties.stars", "op": "gte", "value": 4}],
            "correlate": "properties.order_id",
            "within": "30d",
            "exit": False,
        },
        {"name": "vip", "condition": {"in_segment": "vip"}, "within": "30d"},
    ],
    "hold": {
        "while": {"trait": "open_tickets", "op": "gt", "value": 0},
        "max_age": "2d",
        "messages": "promotional",
    },
    "start": "route",
    "steps": {
        "route": {
            "branch": [
                {"when": {"trait": "plan", "op": "equals", "value": "gold"}, "next": "ab"},
                {"when": {"in_segment": "vip"}, "next": "ab"},
            ],
            "otherwise": "delivered",
        },
        "ab": {
            "split": [
                {"name": "sms-first", "weight": 45, "next": "notify"},
                {"name": "email-first", "weight": 45, "next": "notify", "holdout": False},
                {"name": "control", "weight": 10, "holdout": True},
            ]
        },
        "notify": {
            "message": {
                "channel": ["sms", "email"],
                "template": "order-news",
                "topic": "orders",
                "category": "transactional",
                "data": {"tone": "apologetic", "codes": [1, 2]},
            },
            "next": "delivered",
        },
        "delivered": {
            "wait": {
                "event": "Order Delivered",
                "where": [{"field": "properties.carrier", "op": "exists"}],
                "correlate": "properties.order_id",
                "timeout": "30d",
                "on_timeout": "sorry",
            },
            "next": "settle",
        },
        "settle": {"wait": {"for": "1h30m"}, "next": "evening"},
        "evening": {
            "wait": {
                "until_time": {"trait": "usual_time", "default": "19:00"},
                "days": ["mon", "tue", "wed", "thu", "fri"],
            },
            "next": "ask",
        },
        "ask": {
            "message": {
                "channel": "email",
                "template": "review-request",
                "topic": "reviews",
                "category": "promotional",
            },
            "next": "reward",
        },
        "reward": {
            "update": {
                "set": {"last_review_request": "sent", "prefs": {"email": True}},
                "unset": ["review_pending"],
                "increment": {"loyalty_points": 500, "score": 0.5},
                "add_tags": ["reviewer"],
                "remove_tags": ["new"],
            },
            "next": "crm",
        },
        "crm": {
            "webhook": {
                "url": "https://crm.example.com/hooks/rapport?src=journey",
                "method": "PUT",
                "headers": {"X-Api-Key": "k-123"},
                "body": {"event": "review requested"},
            },
            "next": "birthday",
        },
        "birthday": {
            "wait": {
                "until_date": "birthday",
                "before": "1d",
                "at": "09:00",
                "yearly": True,
                "missed": "done",
            },
            "next": "converted",
        },
        "converted": {"goal": "reviewed", "next": "done"},
        "sorry": {"message": {"channel": "sms", "template": "sorry", "category": "transactional"}},
        "done": {"exit": "finished"},
    },
}

SCHEDULED: dict[str, Any] = {
    "id": "scheduled",
    "name": "Scheduled and dated triggers",
    "triggers": [
        {"schedule": {"once": "2026-06-01T09:00:00Z"}, "segment": "newsletter"},
        {
            "schedule": {
                "every": "week",
                "days": ["mon", "thu"],
                "at": "09:30",
                "time_zone": "America/New_York",
                "until": "2026-12-31T00:00:00Z",
            },
            "segment": "newsletter",
            "condition": {"consent": "email", "granted": True},
        },
        {"schedule": {"every": "day", "at": "08:00"}, "segment": "daily-digest"},
        {"schedule": {"every": "month", "day": 31, "at": "10:00"}, "segment": "monthly"},
        {"date": "birthday", "at": "09:00", "yearly": True},
        {"date": "renewal_at", "before": "7d"},
        {"date": "reservation.at", "after": "2h"},
        {"segment_entered": "vip", "condition": {"trait": "plan", "op": "exists"}},
        {"segment_exited": "cart-open"},
        {"business_event": "Back In Stock", "to": {"segment": "waitlist"}},
    ],
    "reentry": "always",
    "start": "hello",
    "steps": {
        "hello": {
            "message": {"channel": "push", "template": "hello", "category": "transactional"},
            "next": "bye",
        },
        "bye": {"wait": {"until_time": "09:00"}},
    },
}


def _part(name: str, *step_ids: str, journey_wide: bool = False) -> dict[str, Any]:
    """A slice of the kitchen sink: a few of its steps, with or without its journey-wide rules.

    Small documents keep the exhaustive edge-case test fast (checking a document
    against the JSON Schema costs time in proportion to its size).
    """
    minimal = ("id", "name", "triggers", "start")
    part = {key: value for key, value in KITCHEN_SINK.items() if journey_wide or key in minimal}
    part["id"] = f"kitchen-sink-{name}"
    if not journey_wide:
        part["triggers"] = [{"event": "Order Completed"}]
    part["steps"] = {step_id: KITCHEN_SINK["steps"][step_id] for step_id in step_ids}
    return part


BASES = (
    _part("journey-wide", "done", journey_wide=True),
    _part("routing", "route", "ab", "converted", "done"),
    _part("messages", "notify", "ask", "sorry", "crm"),
    _part("waits", "delivered", "settle", "evening", "birthday"),
    _part("updates", "reward"),
    SCHEDULED,
)
