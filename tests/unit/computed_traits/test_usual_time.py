"""The usual time of day a customer is active, learned from her events (S8: "evening, for her")."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from rapport.core.computed_traits import validate_compute
from rapport.core.model import Event
from tests.unit.computed_traits.helpers import T0, WS, catalog, page, profile, step, values

PARIS = ZoneInfo("Europe/Paris")


def visit(n: int, at: datetime, zone: str | None = "Europe/Paris") -> Event:
    return Event(
        workspace_id=WS,
        message_id=f"v{n}",
        type="page",
        name="Home",
        timestamp=at,
        received_at=at,
        source="write_key:k",
        context={"timezone": zone} if zone else {},
    )


def local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=PARIS)


def test_the_busiest_local_hour_wins_in_her_own_zone() -> None:
    built = catalog(usual_visit=("usual_time", {"window": "30d"}))
    current = profile()
    visits = [local(1, 12, 30), local(2, 19, 10), local(3, 19, 45), local(4, 19, 5), local(5, 8)]
    for n, at in enumerate(visits):
        current = step(built, current, visit(n, at), at)
    # 19:xx Paris time three times: 18:xx UTC, but she lives in Paris.
    assert values(current)["usual_visit"] == "19:00"


def test_ties_go_to_the_most_recent_habit_and_old_visits_age_out() -> None:
    built = catalog(usual=("usual_time", {"window": "7d", "bucket": "30m"}))
    current = profile()
    current = step(built, current, visit(1, local(1, 9, 10)), local(1, 9, 10))
    current = step(built, current, visit(2, local(2, 21, 40)), local(2, 21, 40))
    assert values(current)["usual"] == "21:30"
    # Ten days later only the new habit is in the window.
    later = local(12, 7, 50)
    current = step(built, current, visit(3, later), later)
    assert values(current)["usual"] == "07:30"


def test_events_without_a_zone_use_the_definition_zone() -> None:
    built = catalog(
        usual=(
            "usual_time",
            {"time_zone": "America/New_York", "pages": False, "events": ["App Opened"]},
        )
    )
    current = profile()
    at = T0 + timedelta(hours=3)  # 12:00 UTC = 07:00 in New York (March 2nd, before DST)
    opened = Event(
        workspace_id=WS,
        message_id="o1",
        type="track",
        event="App Opened",
        timestamp=at,
        received_at=at,
        source="write_key:k",
    )
    current = step(built, current, opened, at)
    current = step(built, current, page(2, at), at)  # pages do not count here
    assert values(current)["usual"] == "07:00"


@pytest.mark.parametrize(
    ("compute", "path"),
    [
        ({"bucket": "7m"}, "$.bucket"),
        ({"window": "soon"}, "$.window"),
        ({"time_zone": "Mars/Olympus"}, "$.time_zone"),
        ({"events": "Order"}, "$.events"),
        ({"events": [], "pages": False}, "$"),
        ({"colour": "blue"}, "$.colour"),
    ],
)
def test_invalid_definitions_name_the_path(compute: dict[str, object], path: str) -> None:
    errors = validate_compute("usual_time", compute)
    assert [e.path for e in errors] == [path]
