"""The condition language as a JSON Schema (draft 2020-12), published by the API.

Runtime validation does not use this schema (``validate.py`` walks the tree
itself to name the path of every wrong node); the test suite checks that the
two accept and reject the same definitions. Beyond the schema, the validator
also refuses timestamps of days that do not exist (``2026-02-30``), numbers
that are not finite and trees nested deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

from typing import Any

from rapport.core.conditions.aggregates import AGGREGATES
from rapport.core.conditions.comparisons import EQUALITY_OPS, MEMBERSHIP_OPS, ORDER_OPS
from rapport.core.conditions.fields import FIELD_PATTERN, TRAIT_PATTERN
from rapport.core.conditions.instants import DURATION_PATTERN, TIMESTAMP_PATTERN

SCHEMA_ID = "urn:rapport:schema:condition"
MAX_DEPTH = 32
"""Deepest nesting of ``all``/``any``/``not`` accepted (evaluation recurses)."""

NODE_KINDS = ("all", "any", "not", "trait", "event", "in_segment", "consent")
"""Each node is an object holding exactly one of these keys."""

_NON_EMPTY = {"type": "string", "minLength": 1}
_DURATION = {"type": "string", "pattern": DURATION_PATTERN}
_TIMESTAMP = {"type": "string", "pattern": TIMESTAMP_PATTERN}


def _only(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An object with exactly one property."""
    return {
        "type": "object",
        "properties": {name: schema},
        "required": [name],
        "additionalProperties": False,
    }


def _comparison(relative_times: bool) -> dict[str, Any]:
    """``op``/``value`` pairs; without relative times for event filters."""
    if relative_times:
        moment: dict[str, Any] = {
            "oneOf": [_TIMESTAMP, _only("ago", _DURATION), _only("from_now", _DURATION)]
        }
    else:
        moment = _TIMESTAMP
    branches: list[dict[str, Any]] = [
        {"properties": {"op": {"enum": list(EQUALITY_OPS)}, "value": True}},
        {"properties": {"op": {"enum": list(MEMBERSHIP_OPS)}, "value": {"type": "array"}}},
        {
            "properties": {
                "op": {"const": "contains"},
                "value": {"type": ["string", "number", "boolean"]},
            }
        },
        {"properties": {"op": {"enum": list(ORDER_OPS)}, "value": {"type": "number"}}},
        {"properties": {"op": {"enum": ["before", "after"]}, "value": moment}},
    ]
    for branch in branches:
        branch["required"] = ["op", "value"]
    branches.append(
        {
            "properties": {"op": {"const": "exists"}},
            "required": ["op"],
            "not": {"required": ["value"]},
        }
    )
    if relative_times:
        branches.append(
            {
                "properties": {
                    "op": {"const": "within"},
                    "value": {"oneOf": [_only("last", _DURATION), _only("next", _DURATION)]},
                },
                "required": ["op", "value"],
            }
        )
    return {"oneOf": branches}


def _leaf(subject: dict[str, Any], comparison: str, **more: Any) -> dict[str, Any]:
    """An object with its own properties plus a comparison, and nothing else."""
    return {
        "type": "object",
        "properties": subject,
        "required": [*more.pop("required"), "op"],
        "allOf": [{"$ref": f"#/$defs/{comparison}"}, *more.pop("allOf", [])],
        "unevaluatedProperties": False,
    }


CONDITION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "Rapport condition",
    "description": (
        "A condition over one profile: combinators all/any/not over trait comparisons, "
        "event aggregates over time windows, segment membership and consent."
    ),
    "$ref": "#/$defs/condition",
    "$defs": {
        "condition": {"oneOf": [{"$ref": f"#/$defs/{kind}"} for kind in NODE_KINDS]},
        "all": _only(
            "all", {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/condition"}}
        ),
        "any": _only(
            "any", {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/condition"}}
        ),
        "not": _only("not", {"$ref": "#/$defs/condition"}),
        "trait": _leaf(
            {"trait": {"type": "string", "pattern": TRAIT_PATTERN}},
            "comparison",
            required=["trait"],
        ),
        "event": _leaf(
            {
                "event": _NON_EMPTY,
                "where": {"type": "array", "items": {"$ref": "#/$defs/filter"}},
                "aggregate": {"enum": list(AGGREGATES)},
                "of": {"$ref": "#/$defs/field"},
                "window": _DURATION,
                "key": {"$ref": "#/$defs/field"},
            },
            "comparison",
            required=["event"],
            allOf=[
                {
                    "if": {
                        "properties": {"aggregate": {"not": {"const": "count"}}},
                        "required": ["aggregate"],
                    },
                    "then": {"required": ["of"]},
                    "else": {"not": {"required": ["of"]}},
                }
            ],
        ),
        "in_segment": _only("in_segment", _NON_EMPTY),
        "consent": {
            "type": "object",
            "properties": {"consent": _NON_EMPTY, "granted": {"type": "boolean"}},
            "required": ["consent", "granted"],
            "additionalProperties": False,
        },
        "filter": _leaf(
            {"field": {"$ref": "#/$defs/field"}}, "fixed_comparison", required=["field"]
        ),
        "field": {"type": "string", "pattern": FIELD_PATTERN},
        "comparison": _comparison(relative_times=True),
        "fixed_comparison": _comparison(relative_times=False),
    },
}
