"""The engagement score: the documented formula, its bounds, and what counts as activity."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from rapport.core.computed_traits.engagement import (
    Engagement,
    EngagementState,
    engagement_score,
    engagement_spec,
)
from rapport.core.conditions.instants import to_micros
from tests.unit.computed_traits.helpers import T0, catalog, page, profile, step, track, values

CORE = ["Order Completed", "Review Written"]


def spec(**compute: Any) -> Any:
    compute.setdefault("core_actions", {"events": CORE})
    return engagement_spec(compute)


def test_the_formula_of_the_docs() -> None:
    defaults = spec()
    # 2h of 5-minute periods, 8 days, 2 core actions, equal weights.
    assert engagement_score(defaults, 0, 0, 0) == 0
    assert engagement_score(defaults, 24, 8, 2) == 100
    assert engagement_score(defaults, 100, 30, 2) == 100, "each component saturates at 1"
    # (12/24 + 2/8 + 1/2) / 3 = 0.41666 -> 42
    assert engagement_score(defaults, 12, 2, 1) == 42
    weighted = spec(weights={"active_time": 1, "visit_days": 0, "core_actions": 3})
    # (1 * 6/24 + 3 * 1/2) / 4 = 0.4375 -> 44 (halves round up)
    assert engagement_score(weighted, 6, 8, 1) == 44
    assert engagement_score(spec(weights={"core_actions": 0}), 24, 8, 0) == 100


@given(
    st.integers(0, 2000),
    st.integers(0, 400),
    st.integers(0, 2),
    st.lists(st.floats(0, 1e9, allow_nan=False), min_size=3, max_size=3).filter(
        lambda w: sum(w) > 0
    ),
)
def test_the_score_is_always_between_0_and_100(
    units: int, days: int, done: int, weights: list[float]
) -> None:
    names = ("active_time", "visit_days", "core_actions")
    score = engagement_score(
        spec(weights=dict(zip(names, weights, strict=True))), units, days, done
    )
    assert isinstance(score, int) and 0 <= score <= 100


def test_activity_periods_days_and_core_actions_over_the_window() -> None:
    built = catalog(engagement=("engagement_score", {"core_actions": {"events": CORE}}))
    p = profile()
    # Three page views in one 5-minute period, one in the next: 2 periods, 1 day.
    for n, minutes in enumerate((0, 1, 4, 5)):
        at = T0 + timedelta(minutes=minutes)
        p = step(built, p, page(n, at), at)
    # (2/24 + 1/8 + 0/2) / 3 = 0.0694 -> 7
    assert values(p) == {"engagement": 7}
    at = T0 + timedelta(days=1)
    p = step(built, p, track(10, "Order Completed", at), at)
    # A core action is activity too: (3/24 + 2/8 + 1/2) / 3 = 0.2916 -> 29
    assert values(p) == {"engagement": 29}
    # 31 days later only the order... is gone too: everything aged out.
    at = T0 + timedelta(days=31, minutes=1)
    p = step(built, p, track(11, "Something", at), at)
    # The new event itself: (1/24 + 1/8 + 0) / 3 = 0.0555 -> 6
    assert values(p) == {"engagement": 6}


def test_only_the_listed_events_are_activity() -> None:
    compute = {
        "activity": {"events": ["Product Viewed"], "pages": False},
        "core_actions": {"events": ["Order Completed"]},
        "weights": {"core_actions": 0},
    }
    built = catalog(engagement=("engagement_score", compute))
    p = step(built, profile(), page(1, T0), T0)
    assert values(p) == {}, "pages do not count here"
    p = step(built, p, track(2, "Order Completed", T0), T0)
    assert values(p) == {}, "a core action weighing 0 is not tracked, nor activity here"
    p = step(built, p, track(3, "Product Viewed", T0), T0)
    # (1/24 + 1/8) / 2 = 0.083 -> 8
    assert values(p) == {"engagement": 8}


def test_the_state_keeps_only_what_can_matter() -> None:
    engagement = Engagement(spec(active_time={"unit": "5m", "target": "15m"}, window="30d"))
    state = EngagementState()
    now = to_micros(T0 + timedelta(days=2))
    for minutes in range(0, 600, 5):
        at = to_micros(T0 + timedelta(minutes=minutes))
        state = engagement.observe(state, track(1, "Viewed", T0), at, now)
    assert len(state.units) == 3, "three periods saturate a 15-minute target"
    assert sorted(state.units) == [(to_micros(T0) // 300_000_000) + i for i in (117, 118, 119)]
    # An older period than every kept one changes nothing.
    older = engagement.observe(state, track(1, "Viewed", T0), to_micros(T0), now)
    assert older is state
    assert engagement.score(state, now) == engagement_score(engagement.spec, 3, 1, 0)
