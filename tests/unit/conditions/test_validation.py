"""Validation: every error found, each naming the JSON path of the wrong node; curated
valid and invalid definitions, checked against the published JSON Schema too."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest

from rapport.core.conditions import (
    CONDITION_SCHEMA,
    InvalidCondition,
    compile_condition,
    validate_condition,
)
from rapport.core.conditions.schema import MAX_DEPTH

SCHEMA = jsonschema.Draft202012Validator(CONDITION_SCHEMA)
GOLD = {"trait": "plan", "op": "equals", "value": "gold"}


def messages(tree: Any) -> list[str]:
    return [str(error) for error in validate_condition(tree)]


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(CONDITION_SCHEMA)
    assert CONDITION_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_an_unknown_operator_is_named_by_its_path() -> None:
    tree = {"all": [GOLD, GOLD, {"trait": "plan", "op": "equalz", "value": "gold"}]}
    (error,) = messages(tree)
    assert error.startswith("$.all[2].op: unknown operator 'equalz'")


def test_all_errors_are_collected_in_document_order() -> None:
    tree = {
        "any": [
            {"trait": "", "op": "equals", "value": 1},
            {"not": {"event": "Viewed", "aggregate": "avg", "op": "gte", "value": "3"}},
            {"in_segment": 7},
            {"consent": "email"},
            {"event": "Viewed", "window": "1 hour", "op": "exists", "value": True, "color": "red"},
        ]
    }
    assert messages(tree) == [
        "$.any[0].trait: must be a trait name such as 'plan' or 'address.city'",
        "$.any[1].not.aggregate: unknown aggregate 'avg' (expected one of: "
        "count, sum, min, max, first, last, distinct_count)",
        "$.any[1].not.value: 'gte' needs a number, got a string",
        "$.any[2].in_segment: must be a non-empty string",
        "$.any[3]: missing field 'granted' (true or false)",
        "$.any[4].color: unknown field 'color' (allowed here: "
        "event, where, aggregate, of, window, key, op, value)",
        "$.any[4].window: must be a duration such as '30s', '15m', '1h', '30d' or '2w'",
        "$.any[4].value: 'exists' takes no value",
    ]


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        ("plan = gold", "$: expected a condition object, got a string"),
        (
            {},
            "$: expected one of all, any, not, trait, event, in_segment, consent; "
            "found an empty object",
        ),
        ({"trait": "a", "event": "b", "op": "exists"}, "$: a condition holds exactly one of"),
        ({"all": []}, "$.all: must hold at least one condition"),
        ({"any": GOLD}, "$.any: must be an array of conditions, got an object"),
        ({"not": [GOLD]}, "$.not: expected a condition object, got an array"),
        ({"trait": "plan", "value": 1}, "$: missing field 'op'"),
        ({"trait": "plan", "op": "equals"}, "$: missing field 'value' for operator 'equals'"),
        (
            {"trait": "plan", "op": "in", "value": "gold"},
            "$.value: 'in' needs an array, got a string",
        ),
        (
            {"trait": "plan", "op": "contains", "value": None},
            "$.value: 'contains' needs a string, number or boolean",
        ),
        (
            {"trait": "age", "op": "gt", "value": True},
            "$.value: 'gt' needs a number, got a boolean",
        ),
        ({"trait": "age", "op": "gt", "value": float("inf")}, "$.value: must be a finite number"),
        ({"trait": "a..b", "op": "exists"}, "$.trait: must be a trait name"),
        (
            {"trait": "d", "op": "before", "value": "yesterday"},
            "$.value: not a timestamp: 'yesterday'",
        ),
        ({"trait": "d", "op": "before", "value": "2026-02-30T00:00:00Z"}, "$.value: "),
        (
            {"trait": "d", "op": "before", "value": "2026-01-01T00:00:00"},
            "$.value: not a timestamp",
        ),
        ({"trait": "d", "op": "after", "value": {"ago": "0d"}}, "$.value.ago: must be a duration"),
        (
            {"trait": "d", "op": "after", "value": {"since": "1d"}},
            '$.value: must be a timestamp, {"ago"',
        ),
        (
            {"trait": "d", "op": "within", "value": {"last": "1d", "next": "1d"}},
            '$.value: must be {"last"',
        ),
        (
            {"trait": "d", "op": "within", "value": {"last": "1 d"}},
            "$.value.last: must be a duration",
        ),
        (
            {"trait": "d", "op": "within", "value": {"last": "1d\n"}},
            "$.value.last: must be a duration",
        ),
        ({"trait": "x", "op": "equals", "value": {1: "a"}}, "$.value: object keys must be strings"),
        (
            {"trait": "x", "op": "equals", "value": datetime(2026, 1, 1, tzinfo=UTC)},
            "$.value: must be a JSON value",
        ),
        (
            {"trait": "x", "op": "in", "value": [1, {"a": {1, 2}}]},
            "$.value[1].a: must be a JSON value",
        ),
        ({"event": "", "op": "exists"}, "$.event: must be a non-empty string"),
        ({"event": "V", "aggregate": "sum", "op": "gt", "value": 1}, "$: missing field 'of'"),
        (
            {"event": "V", "of": "properties.a", "op": "gt", "value": 1},
            "$.of: 'count' counts events",
        ),
        (
            {"event": "V", "aggregate": "max", "of": "price", "op": "gt", "value": 1},
            "$.of: must be an event field",
        ),
        (
            {"event": "V", "key": "properties.", "op": "gt", "value": 1},
            "$.key: must be an event field",
        ),
        (
            {"event": "V", "where": {}, "op": "gt", "value": 1},
            "$.where: must be an array of field filters",
        ),
        (
            {"event": "V", "where": [7], "op": "gt", "value": 1},
            "$.where[0]: expected a field filter object",
        ),
        (
            {"event": "V", "where": [{"op": "equals", "value": 1}], "op": "gt", "value": 1},
            "$.where[0]: missing field 'field'",
        ),
        (
            {
                "event": "V",
                "where": [{"field": "properties.d", "op": "within", "value": {"last": "1d"}}],
                "op": "exists",
            },
            "$.where[0].op: 'within' compares with the current time; event filters cannot",
        ),
        (
            {
                "event": "V",
                "where": [{"field": "properties.d", "op": "after", "value": {"ago": "1d"}}],
                "op": "exists",
            },
            "$.where[0].value: event filters compare with a fixed timestamp",
        ),
        ({"consent": "email", "granted": "yes"}, "$.granted: must be true or false"),
        ({"trait": "plan", "op": "exists", "weird key": 1}, '$["weird key"]: unknown field'),
    ],
)
def test_errors(tree: Any, expected: str) -> None:
    found = messages(tree)
    assert found and found[0].startswith(expected), found
    if is_json(tree) and "2026-02-30" not in str(tree):  # a day the schema's pattern lets by
        assert not SCHEMA.is_valid(tree)


def is_json(value: Any) -> bool:
    try:
        return json.loads(json.dumps(value, allow_nan=False)) == value
    except (TypeError, ValueError):
        return False


def test_depth_is_limited() -> None:
    tree: dict[str, Any] = GOLD
    for _ in range(MAX_DEPTH - 1):
        tree = {"not": tree}
    assert validate_condition(tree) == []
    (error,) = messages({"all": [tree]})
    assert f"conditions nest at most {MAX_DEPTH} levels deep" in error


def test_compile_refuses_invalid_definitions_with_every_error() -> None:
    with pytest.raises(InvalidCondition) as raised:
        compile_condition({"all": [{"trait": "plan"}, {"in_segment": ""}]})
    assert [str(e) for e in raised.value.errors] == [
        "$.all[0]: missing field 'op'",
        "$.all[1].in_segment: must be a non-empty string",
    ]
    assert "$.all[0]: missing field 'op'" in str(raised.value)


VALID = [
    GOLD,
    {"trait": "email", "op": "exists"},
    {"trait": "tags", "op": "contains", "value": "vip"},
    {"trait": "address.city", "op": "in", "value": ["Lyon", "Paris", None, 3, [1]]},
    {"trait": "signed_up_at", "op": "within", "value": {"last": "30d"}},
    {"trait": "renewal_at", "op": "within", "value": {"next": "2h"}},
    {"trait": "renewal_at", "op": "before", "value": {"from_now": "1w2d"}},
    {"trait": "last_login", "op": "after", "value": "2026-01-31T09:00:00.123+01:00"},
    {"not": {"any": [{"in_segment": "vip"}, {"consent": "marketing", "granted": False}]}},
    {
        "event": "Product Viewed",
        "where": [
            {"field": "properties.category", "op": "equals", "value": "jackets"},
            {"field": "context.campaign.source", "op": "exists"},
            {"field": "properties.released", "op": "before", "value": "2026-01-01T00:00:00Z"},
        ],
        "aggregate": "count",
        "window": "1h",
        "key": "properties.product_id",
        "op": "gte",
        "value": 3,
    },
    {
        "event": "Order Completed",
        "aggregate": "sum",
        "of": "properties.revenue",
        "op": "gt",
        "value": 500.5,
    },
    {
        "event": "Order Completed",
        "aggregate": "last",
        "of": "properties.delivery",
        "op": "within",
        "value": {"next": "2d"},
    },
]


@pytest.mark.parametrize("tree", VALID)
def test_valid_definitions(tree: Any) -> None:
    assert validate_condition(tree) == []
    assert SCHEMA.is_valid(tree)
    compile_condition(tree)
