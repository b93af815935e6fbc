"""The journey definition language as a JSON Schema (draft 2020-12), published by the API.

The condition language is embedded whole (``$defs.condition_language``, with
its own ``$id``), so a journey's branches, exits, goals, holds and event
filters are checked by exactly the schema ``GET /api/schemas/condition``
publishes.

Like the condition schema, this one is not what validates definitions at
run time: ``validate.py`` walks the document itself, to name the path of
every wrong node. The test suite checks that the two agree on every
*structural* rule. The schema cannot express the *reference* rules between
parts of a journey, which only the validator checks: step targets that name
no step, steps unreachable from ``start``, loops that never wait,
``correlate`` without a journey ``correlation_key``, a ``correlation_key``
with triggers that carry no event, names used twice, time zones that do not
exist. Nor, as for conditions, numbers that are not finite and values nested
too deep.
"""

from __future__ import annotations

from typing import Any, Final

from rapport.core.conditions import CONDITION_SCHEMA
from rapport.core.conditions.fields import FIELD_PATTERN, TRAIT_PATTERN
from rapport.core.conditions.instants import DURATION_PATTERN, TIMESTAMP_PATTERN
from rapport.core.conditions.schema import SCHEMA_ID as CONDITION_SCHEMA_ID

SCHEMA_ID: Final = "urn:rapport:schema:journey"

SLUG_PATTERN: Final = r"^[a-z0-9](?:[a-z0-9_-]{0,98}[a-z0-9])?$(?!\n)"
"""Ids of journeys, steps, segments, templates, topics, goals and variants: the segment id rule."""
TIME_OF_DAY_PATTERN: Final = r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$(?!\n)"
"""``HH:MM`` on a 24-hour clock."""
TIME_ZONE_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*$(?!\n)"
"""The shape of an IANA time zone name; the validator also checks that it exists."""
WRITE_TRAIT_PATTERN: Final = r"^[^.]+$"
"""A top-level trait name (``update`` writes whole traits, not parts of object traits)."""
URL_PATTERN: Final = r"^https?://[^\s/?#]+[^\s]*$(?!\n)"
HEADER_PATTERN: Final = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$(?!\n)"
"""An HTTP header name (an RFC 9110 token)."""
NON_BLANK_PATTERN: Final = r"\S"

TRIGGER_KINDS: Final = (
    "event",
    "segment_entered",
    "segment_exited",
    "date",
    "schedule",
    "business_event",
)
"""Each trigger is an object holding exactly one of these keys."""
STEP_KINDS: Final = ("message", "wait", "branch", "split", "update", "webhook", "goal", "exit")
"""Each step is an object holding exactly one of these keys."""
FAN_OUT_KINDS: Final = ("identifier", "event", "segment")
WAIT_KINDS: Final = ("for", "until_time", "until_date", "event")
EXIT_KINDS: Final = ("event", "condition")

CHANNELS: Final = ("email", "sms", "push", "in_app")
CATEGORIES: Final = ("promotional", "transactional")
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SCHEDULE_EVERY: Final = ("day", "week", "month")
REENTRY_MODES: Final = ("never", "always")
HOLD_SCOPES: Final = ("all", "promotional")
HTTP_METHODS: Final = ("POST", "PUT", "PATCH", "GET", "DELETE")

MAX_NAME_LENGTH: Final = 200
MAX_DESCRIPTION_LENGTH: Final = 2000
MAX_TRIGGERS: Final = 20
MAX_STEPS: Final = 500
MAX_CRITERIA: Final = 20
"""Most ``exit_when`` criteria, and most ``goals``."""
MAX_CASES: Final = 50
MAX_VARIANTS: Final = 20
MAX_WEIGHT: Final = 10_000
MAX_PRIORITY: Final = 100

_STRING: dict[str, Any] = {"type": "string"}
_NON_EMPTY: dict[str, Any] = {"type": "string", "minLength": 1}
_SLUG: dict[str, Any] = {"type": "string", "pattern": SLUG_PATTERN}
_DURATION: dict[str, Any] = {"type": "string", "pattern": DURATION_PATTERN}
_TIMESTAMP: dict[str, Any] = {"type": "string", "pattern": TIMESTAMP_PATTERN}
_TIME_OF_DAY: dict[str, Any] = {"type": "string", "pattern": TIME_OF_DAY_PATTERN}
_TIME_ZONE: dict[str, Any] = {"type": "string", "pattern": TIME_ZONE_PATTERN}
_TRAIT: dict[str, Any] = {"type": "string", "pattern": TRAIT_PATTERN}
_FIELD: dict[str, Any] = {"type": "string", "pattern": FIELD_PATTERN}
_CONDITION: dict[str, Any] = {"$ref": CONDITION_SCHEMA_ID}
_FILTERS: dict[str, Any] = {
    "type": "array",
    "items": {"$ref": f"{CONDITION_SCHEMA_ID}#/$defs/filter"},
}
_TARGET: dict[str, Any] = {"$ref": "#/$defs/step_id"}
_DAYS: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "uniqueItems": True,
    "items": {"enum": list(WEEKDAYS)},
}
_NOT_BOTH_OFFSETS: dict[str, Any] = {"not": {"required": ["before", "after"]}}
_PER_CUSTOMER_DURATION: dict[str, Any] = {
    "oneOf": [
        _DURATION,
        {
            "type": "object",
            "properties": {"trait": _TRAIT, "default": _DURATION},
            "required": ["trait", "default"],
            "additionalProperties": False,
        },
    ]
}
"""A fixed duration, or one read from a trait (``default`` when she has none usable)."""


def _text(limit: int) -> dict[str, Any]:
    return {"type": "string", "pattern": NON_BLANK_PATTERN, "maxLength": limit}


def _object(properties: dict[str, Any], required: list[str], **more: Any) -> dict[str, Any]:
    """An object with these properties and no others."""
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        **more,
    }


def _kinds(names: tuple[str, ...], prefix: str) -> dict[str, Any]:
    """An object holding exactly one of ``names``, checked by the definition of that kind.

    Discriminated with ``if``/``then`` rather than a ``oneOf`` over the kinds:
    an editor then reports what is wrong with *this* step rather than "not
    valid under any of the given schemas", and checking is several times faster.
    """
    return {
        "type": "object",
        "oneOf": [{"required": [name]} for name in names],
        "allOf": [
            {"if": {"required": [name]}, "then": {"$ref": f"#/$defs/{prefix}{name}"}}
            for name in names
        ],
    }


def _trigger(subject: dict[str, Any], required: list[str], **more: Any) -> dict[str, Any]:
    """A trigger: its own fields plus an optional profile ``condition``."""
    return _object({**subject, "condition": _CONDITION}, required, **more)


def _step(
    kind: str, value: dict[str, Any], optional: tuple[str, ...] = (), required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A step: its kind key plus the step-level targets it allows (``next``, ``otherwise``)."""
    targets = dict.fromkeys((*optional, *required), _TARGET)
    return _object({kind: value, **targets}, [kind, *required])


_SCHEDULE_RECURRING: dict[str, Any] = {
    "at": _TIME_OF_DAY,
    "time_zone": _TIME_ZONE,
    "until": _TIMESTAMP,
}

_DEFS: dict[str, Any] = {
    "condition_language": CONDITION_SCHEMA,
    "step_id": _SLUG,
    "trigger": _kinds(TRIGGER_KINDS, "trigger_"),
    "trigger_event": _trigger({"event": _NON_EMPTY, "where": _FILTERS}, ["event"]),
    "trigger_segment_entered": _trigger({"segment_entered": _SLUG}, ["segment_entered"]),
    "trigger_segment_exited": _trigger({"segment_exited": _SLUG}, ["segment_exited"]),
    "trigger_date": _trigger(
        {
            "date": _TRAIT,
            "before": _DURATION,
            "after": _DURATION,
            "at": _TIME_OF_DAY,
            "yearly": {"type": "boolean"},
        },
        ["date"],
        **_NOT_BOTH_OFFSETS,
    ),
    "trigger_schedule": _trigger(
        {"schedule": {"$ref": "#/$defs/schedule"}, "segment": _SLUG, "catch_up": _DURATION},
        ["schedule", "segment"],
    ),
    "trigger_business_event": _trigger(
        {"business_event": _NON_EMPTY, "where": _FILTERS, "to": {"$ref": "#/$defs/fan_out"}},
        ["business_event", "to"],
    ),
    "schedule": {
        "oneOf": [
            _object({"once": _TIMESTAMP}, ["once"]),
            _object({"every": {"const": "day"}, **_SCHEDULE_RECURRING}, ["every", "at"]),
            _object(
                {"every": {"const": "week"}, "days": _DAYS, **_SCHEDULE_RECURRING},
                ["every", "days", "at"],
            ),
            _object(
                {
                    "every": {"const": "month"},
                    "day": {"type": "integer", "minimum": 1, "maximum": 31},
                    **_SCHEDULE_RECURRING,
                },
                ["every", "day", "at"],
            ),
        ]
    },
    "fan_out": _kinds(FAN_OUT_KINDS, "fan_out_"),
    "fan_out_identifier": _object(
        {"identifier": _NON_EMPTY, "from": _FIELD}, ["identifier", "from"]
    ),
    "fan_out_event": _object(
        {
            "event": _NON_EMPTY,
            "where": _FILTERS,
            "match": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": FIELD_PATTERN},
                "additionalProperties": _FIELD,
            },
            "window": _DURATION,
        },
        ["event", "match"],
    ),
    "fan_out_segment": _object({"segment": _SLUG}, ["segment"]),
    "reentry": {"oneOf": [{"enum": list(REENTRY_MODES)}, _object({"after": _DURATION}, ["after"])]},
    "time_zone": _object({"trait": _TRAIT, "default": _TIME_ZONE}, []),
    "exit_criterion": _kinds(EXIT_KINDS, "exit_"),
    "exit_event": _object({"event": _NON_EMPTY, "where": _FILTERS, "correlate": _FIELD}, ["event"]),
    "exit_condition": _object({"condition": _CONDITION}, ["condition"]),
    "goal": _object(
        {
            "name": _SLUG,
            "event": _NON_EMPTY,
            "where": _FILTERS,
            "correlate": _FIELD,
            "condition": _CONDITION,
            "within": _DURATION,
            "exit": {"type": "boolean"},
        },
        ["name", "within"],
        oneOf=[
            {"required": ["event"], "not": {"required": ["condition"]}},
            {
                "required": ["condition"],
                "not": {"required": ["event"]},
                "properties": {"where": False, "correlate": False},
            },
        ],
    ),
    "hold": _object(
        {"while": _CONDITION, "max_age": _DURATION, "messages": {"enum": list(HOLD_SCOPES)}},
        ["while", "max_age"],
    ),
    "step": _kinds(STEP_KINDS, "step_"),
    "step_message": _step("message", {"$ref": "#/$defs/message"}, ("next",)),
    "step_wait": _step("wait", {"$ref": "#/$defs/wait"}, ("next",)),
    "step_branch": _step(
        "branch",
        {"type": "array", "minItems": 1, "maxItems": MAX_CASES, "items": {"$ref": "#/$defs/case"}},
        required=("otherwise",),
    ),
    "step_split": _step(
        "split",
        {
            "type": "array",
            "minItems": 2,
            "maxItems": MAX_VARIANTS,
            "items": {"$ref": "#/$defs/variant"},
        },
    ),
    "step_update": _step("update", {"$ref": "#/$defs/update"}, ("next",)),
    "step_webhook": _step("webhook", {"$ref": "#/$defs/webhook"}, ("next",)),
    "step_goal": _step("goal", _SLUG, ("next",)),
    "step_exit": _step("exit", _text(MAX_NAME_LENGTH)),
    "message": _object(
        {
            "channel": {
                "oneOf": [
                    {"enum": list(CHANNELS)},
                    {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": {"enum": list(CHANNELS)},
                    },
                ]
            },
            "template": _SLUG,
            "topic": _SLUG,
            "category": {"enum": list(CATEGORIES)},
            "data": {
                "type": "object",
                # A value whose only key is ``trait`` reads that trait when the step runs.
                "additionalProperties": {
                    "if": {"type": "object", "required": ["trait"], "maxProperties": 1},
                    "then": {"properties": {"trait": _TRAIT}},
                },
            },
        },
        ["channel", "template", "category"],
        **{
            "if": {"properties": {"category": {"const": "promotional"}}},
            "then": {"required": ["topic"]},
        },
    ),
    "wait": _kinds(WAIT_KINDS, "wait_"),
    "wait_for": _object({"for": _DURATION}, ["for"]),
    "wait_until_time": _object(
        {
            "until_time": {
                "oneOf": [
                    _TIME_OF_DAY,
                    _object({"trait": _TRAIT, "default": _TIME_OF_DAY}, ["trait", "default"]),
                ]
            },
            "days": _DAYS,
        },
        ["until_time"],
    ),
    "wait_until_date": _object(
        {
            "until_date": _TRAIT,
            "before": _PER_CUSTOMER_DURATION,
            "after": _PER_CUSTOMER_DURATION,
            "at": _TIME_OF_DAY,
            "yearly": {"type": "boolean"},
            "missed": _TARGET,
        },
        ["until_date"],
        **_NOT_BOTH_OFFSETS,
    ),
    "wait_event": _object(
        {
            "event": _NON_EMPTY,
            "where": _FILTERS,
            "correlate": _FIELD,
            "timeout": _DURATION,
            "on_timeout": _TARGET,
        },
        ["event", "timeout"],
    ),
    "case": _object({"when": _CONDITION, "next": _TARGET}, ["when", "next"]),
    "variant": _object(
        {
            "name": _SLUG,
            "weight": {"type": "integer", "minimum": 1, "maximum": MAX_WEIGHT},
            "next": _TARGET,
            "holdout": {"type": "boolean"},
        },
        ["name", "weight"],
        **{
            "if": {"properties": {"holdout": {"const": True}}, "required": ["holdout"]},
            "then": {"not": {"required": ["next"]}},
            "else": {"required": ["next"]},
        },
    ),
    "update": _object(
        {
            "set": {"type": "object", "propertyNames": {"pattern": WRITE_TRAIT_PATTERN}},
            "unset": {"type": "array", "items": {"type": "string", "pattern": WRITE_TRAIT_PATTERN}},
            "increment": {
                "type": "object",
                "propertyNames": {"pattern": WRITE_TRAIT_PATTERN},
                "additionalProperties": {"type": "number"},
            },
            "add_tags": {"type": "array", "items": _NON_EMPTY},
            "remove_tags": {"type": "array", "items": _NON_EMPTY},
        },
        [],
        minProperties=1,
    ),
    "webhook": _object(
        {
            "url": {"type": "string", "pattern": URL_PATTERN},
            "method": {"enum": list(HTTP_METHODS)},
            "headers": {
                "type": "object",
                "propertyNames": {"pattern": HEADER_PATTERN},
                "additionalProperties": _STRING,
            },
            "body": True,
        },
        ["url"],
    ),
}

JOURNEY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "Rapport journey",
    "description": (
        "A journey: triggers that let customers in, a graph of steps (message, wait, branch, "
        "split, update, webhook, goal, exit) linked by id, and journey-wide exit criteria, "
        "goals, hold, re-entry and priority. Conditions are the condition language "
        f"({CONDITION_SCHEMA_ID})."
    ),
    **_object(
        {
            "id": _SLUG,
            "name": _text(MAX_NAME_LENGTH),
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION_LENGTH},
            "priority": {"type": "integer", "minimum": 0, "maximum": MAX_PRIORITY},
            "triggers": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_TRIGGERS,
                "items": {"$ref": "#/$defs/trigger"},
            },
            "correlation_key": _FIELD,
            "reentry": {"$ref": "#/$defs/reentry"},
            "time_zone": {"$ref": "#/$defs/time_zone"},
            "exit_when": {
                "type": "array",
                "maxItems": MAX_CRITERIA,
                "items": {"$ref": "#/$defs/exit_criterion"},
            },
            "goals": {
                "type": "array",
                "maxItems": MAX_CRITERIA,
                "items": {"$ref": "#/$defs/goal"},
            },
            "hold": {"$ref": "#/$defs/hold"},
            "start": _SLUG,
            "steps": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": MAX_STEPS,
                "propertyNames": {"pattern": SLUG_PATTERN},
                "additionalProperties": {"$ref": "#/$defs/step"},
            },
        },
        ["id", "name", "triggers", "start", "steps"],
    ),
    "$defs": _DEFS,
}
"""Published at ``GET /api/schemas/journey``; the reference is docs/journeys.md."""
