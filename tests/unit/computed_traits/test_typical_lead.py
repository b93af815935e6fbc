"""How long before a moment a customer engages, learned from her reactions (S7)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from rapport.core.computed_traits import validate_compute
from rapport.core.computed_traits.typical_lead import duration_text
from rapport.core.model import Event
from tests.unit.computed_traits.helpers import T0, WS, catalog, profile, step, values

LEAD = {
    "event": "Email Opened",
    "where": [{"field": "properties.topic", "op": "equals", "value": "reminders"}],
    "reference": "properties.data.appointment_at",
}


def opened(n: int, at: datetime, appointment: datetime | None, topic: str = "reminders") -> Event:
    data = {} if appointment is None else {"appointment_at": appointment.isoformat()}
    return Event(
        workspace_id=WS,
        message_id=f"o{n}",
        type="track",
        event="Email Opened",
        properties={"topic": topic, "data": data},
        timestamp=at,
        received_at=at,
        source="rapport:channels",
    )


def learn(opens: list[tuple[int, int]], compute: dict[str, object] = LEAD) -> object:
    """``opens``: (day, minutes before that day's 18:00 appointment she opened)."""
    built = catalog(reminder_lead=("typical_lead", compute))
    current = profile()
    for n, (day, before) in enumerate(opens):
        appointment = T0 + timedelta(days=day, hours=9)
        at = appointment - timedelta(minutes=before)
        current = step(built, current, opened(n, at, appointment), at)
    return values(current).get("reminder_lead")


def test_the_median_of_her_engagement_leads_rounded() -> None:
    # One customer opens about an hour ahead, another a quarter of an hour.
    assert learn([(1, 58), (8, 63), (15, 61)]) == "1h"
    assert learn([(1, 14), (8, 17), (15, 240)]) == "15m"


def test_other_topics_and_opens_without_a_moment_teach_nothing() -> None:
    built = catalog(reminder_lead=("typical_lead", LEAD))
    current = profile()
    at = T0 + timedelta(days=1)
    current = step(built, current, opened(1, at, at + timedelta(hours=2), topic="promotions"), at)
    current = step(built, current, opened(2, at, None), at)
    assert "reminder_lead" not in values(current)


def test_late_engagement_counts_as_the_smallest_lead_and_old_habits_age_out() -> None:
    compute = {**LEAD, "window": "30d", "round": "5m"}
    assert learn([(1, -20)], compute) == "5m"
    # Forty days later only the recent opens count.
    assert learn([(1, 120), (45, 30)], compute) == "30m"


def test_duration_text() -> None:
    assert [duration_text(m * 60_000_000) for m in (5, 60, 90, 1500)] == [
        "5m",
        "1h",
        "1h30m",
        "1d1h",
    ]


@pytest.mark.parametrize(
    ("compute", "path"),
    [
        ({"reference": "properties.at"}, "$"),
        ({"event": "Email Opened"}, "$"),
        ({**LEAD, "reference": "userId"}, "$.reference"),
        ({**LEAD, "keep": 0}, "$.keep"),
        ({**LEAD, "round": "soon"}, "$.round"),
        (
            {**LEAD, "where": [{"field": "properties.topic", "op": "equalz", "value": 1}]},
            "$.where[0].op",
        ),
    ],
)
def test_invalid_definitions_name_the_path(compute: dict[str, object], path: str) -> None:
    assert [e.path for e in validate_compute("typical_lead", compute)] == [path]
