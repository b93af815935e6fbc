"""validate_compute: every error, each with its path inside ``compute``."""

from __future__ import annotations

from typing import Any

import pytest

from rapport.core.computed_traits import validate_compute


def errors(kind: str, compute: Any) -> list[str]:
    return [str(error) for error in validate_compute(kind, compute)]


def test_valid_aggregates() -> None:
    for compute in (
        {"event": "Order Completed"},
        {"event": "Order Completed", "aggregate": "sum", "of": "properties.revenue"},
        {"event": "Product Viewed", "window": "1h", "key": "properties.product_id"},
        {
            "event": "Product Viewed",
            "aggregate": "distinct_count",
            "of": "properties.category",
            "where": [{"field": "context.page.path", "op": "contains", "value": "/shop"}],
            "window": "1w",
        },
    ):
        assert errors("aggregate", compute) == [], compute


def test_aggregate_errors_come_from_the_condition_validator_with_their_paths() -> None:
    compute = {
        "event": "Order Completed",
        "aggregate": "sum",
        "window": "1 hour",
        "where": [{"field": "revenue", "op": "within", "value": {"last": "1h"}}],
        "op": "gt",
        "value": 3,
    }
    assert errors("aggregate", compute) == [
        "$.op: unknown field 'op' (allowed here: event, where, aggregate, of, window, key)",
        "$.value: unknown field 'value' (allowed here: event, where, aggregate, of, window, key)",
        "$: missing field 'of': the event field that 'sum' aggregates",
        "$.window: must be a duration such as '30s', '15m', '1h', '30d' or '2w'",
        "$.where[0].field: must be an event field such as 'properties.price'",
        "$.where[0].op: 'within' compares with the current time; event filters cannot",
    ]
    assert errors("aggregate", {"aggregate": "count"}) == [
        "$: missing field 'event': the event name to aggregate"
    ]
    assert errors("aggregate", {"event": "", "aggregate": "median", "of": "x"}) == [
        "$.event: must be a non-empty string",
        "$.aggregate: unknown aggregate 'median' (expected one of: count, sum, min, max,"
        " first, last, distinct_count)",
        "$.of: must be an event field such as 'properties.price'",
    ]
    assert errors("aggregate", ["event"]) == ["$: must be an object"]


def test_engagement_defaults_need_only_the_core_actions() -> None:
    assert errors("engagement_score", {"core_actions": {"events": ["Order Completed"]}}) == []
    assert errors("engagement_score", {"weights": {"core_actions": 0}}) == []
    assert errors("engagement_score", {}) == [
        "$: missing field 'core_actions': the core action events (or give weights.core_actions 0)"
    ]
    assert errors("engagement_score", {"core_actions": {}}) == [
        "$.core_actions: missing field 'events': the core action events"
        " (or give weights.core_actions 0)"
    ]


def test_engagement_errors_name_their_paths() -> None:
    compute = {
        "window": "7d",
        "activity": {"events": ["Viewed", "Viewed", 3], "pages": "yes", "extra": 1},
        "active_time": {"unit": "3h", "target": "2h"},
        "visit_days": {"target": 9},
        "core_actions": {"events": []},
        "weights": {"active_time": -1, "visit_days": True},
        "bonus": 1,
    }
    assert errors("engagement_score", compute) == [
        "$.bonus: unknown field 'bonus' (allowed here: window, activity, active_time,"
        " visit_days, core_actions, weights)",
        "$.activity.extra: unknown field 'extra' (allowed here: events, pages)",
        "$.weights.active_time: must be a number at least 0",
        "$.weights.visit_days: must be a number at least 0",
        "$.activity.pages: must be true or false",
        "$.activity.events[1]: 'Viewed' is listed twice",
        "$.activity.events[2]: must be a non-empty string",
        "$.active_time.unit: must not be longer than the target",
        "$.visit_days.target: can never be reached within the window",
        "$.core_actions.events: must list at least one event",
    ]


@pytest.mark.parametrize(
    ("compute", "expected"),
    [
        ({"window": "1 month"}, "$.window: must be a duration"),
        ({"active_time": {"unit": "1s", "target": "2h"}}, "$.active_time.target: at most 1000"),
        ({"window": "1h"}, "$.active_time.target: must not be longer than the window"),
        ({"visit_days": {"target": 0}}, "$.visit_days.target: must be a whole number"),
        ({"visit_days": {"target": 2.5}}, "$.visit_days.target: must be a whole number"),
        ({"visit_days": {"target": 400}, "window": "500d"}, "$.visit_days.target: must be at most"),
        (
            {"weights": dict.fromkeys(("active_time", "visit_days", "core_actions"), 0)},
            "$.weights: at least",
        ),
        ({"activity": {"events": [], "pages": False}}, "$.activity: nothing would count"),
        ({"activity": []}, "$.activity: must be an object"),
        (
            {"core_actions": {"events": "Order Completed"}},
            "$.core_actions.events: must be an array",
        ),
    ],
)
def test_engagement_rules(compute: dict[str, Any], expected: str) -> None:
    compute.setdefault("core_actions", {"events": ["Order Completed"]})
    if compute.get("weights", {}).get("core_actions", 1) == 0:
        del compute["core_actions"]
    found = errors("engagement_score", compute)
    assert any(error.startswith(expected) for error in found), found


def test_a_window_of_a_week_can_touch_eight_days() -> None:
    compute = {"window": "7d", "visit_days": {"target": 8}, "weights": {"core_actions": 0}}
    assert errors("engagement_score", compute) == []
