"""Validation of condition definitions, with errors that name the wrong node.

Every problem is collected (not just the first), each with the JSON path of
the node or field at fault: ``$.all[2].op: unknown operator 'equalz'``.
Accepts and rejects the same definitions as ``schema.CONDITION_SCHEMA``
(checked by the tests), plus the few rules a schema cannot express.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from rapport.core.conditions.aggregates import AGGREGATES
from rapport.core.conditions.comparisons import MEMBERSHIP_OPS, OPERATORS, ORDER_OPS
from rapport.core.conditions.fields import FIELD_PATTERN, TRAIT_PATTERN
from rapport.core.conditions.instants import is_duration, parse_timestamp
from rapport.core.conditions.schema import MAX_DEPTH, NODE_KINDS

MAX_VALUE_DEPTH = 64
"""Deepest nesting inside a compared value (a list of objects of lists...)."""

_TRAIT = re.compile(TRAIT_PATTERN)
_FIELD = re.compile(FIELD_PATTERN)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_LEAF_FIELDS = {
    "trait": ("trait", "op", "value"),
    "event": ("event", "where", "aggregate", "of", "window", "key", "op", "value"),
    "in_segment": ("in_segment",),
    "consent": ("consent", "granted"),
    "all": ("all",),
    "any": ("any",),
    "not": ("not",),
}
_FILTER_FIELDS = ("field", "op", "value")
_RELATIVE_ONLY = frozenset(("within",))


@dataclass(frozen=True, slots=True)
class ConditionError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidCondition(ValueError):
    """A definition with one or more errors; ``errors`` lists them all."""

    def __init__(self, errors: list[ConditionError]) -> None:
        super().__init__("; ".join(str(error) for error in errors))
        self.errors = errors


def validate_condition(tree: Any) -> list[ConditionError]:
    """Every error in ``tree``, in document order; empty if it is a valid condition."""
    errors: list[ConditionError] = []
    _Walker(errors).node(tree, "$", 1)
    return errors


def child_path(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if isinstance(key, str) and _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(str(key))}]"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__} (not a JSON value)"


class _Walker:
    def __init__(self, errors: list[ConditionError]) -> None:
        self.errors = errors

    def error(self, path: str, message: str) -> None:
        self.errors.append(ConditionError(path, message))

    def node(self, node: Any, path: str, depth: int) -> None:
        if not isinstance(node, dict):
            self.error(path, f"expected a condition object, got {_type_name(node)}")
            return
        kinds = [kind for kind in NODE_KINDS if kind in node]
        if not kinds:
            found = ", ".join(repr(key) for key in node) or "an empty object"
            self.error(path, f"expected one of {', '.join(NODE_KINDS)}; found {found}")
            return
        if len(kinds) > 1:
            both = " and ".join(repr(kind) for kind in kinds)
            self.error(
                path, f"a condition holds exactly one of {', '.join(NODE_KINDS)}; found {both}"
            )
            return
        kind = kinds[0]
        self.unknown_fields(node, path, _LEAF_FIELDS[kind])
        if kind in ("all", "any"):
            self.combination(node[kind], child_path(path, kind), depth)
        elif kind == "not":
            self.nested(node["not"], child_path(path, "not"), depth)
        elif kind == "trait":
            self.pattern(
                node, path, "trait", _TRAIT, "a trait name such as 'plan' or 'address.city'"
            )
            self.comparison(node, path, relative=True)
        elif kind == "event":
            self.event(node, path)
        elif kind == "in_segment":
            self.non_empty_string(node, path, "in_segment")
        else:
            self.non_empty_string(node, path, "consent")
            if "granted" not in node:
                self.error(path, "missing field 'granted' (true or false)")
            elif not isinstance(node["granted"], bool):
                self.error(child_path(path, "granted"), "must be true or false")

    def nested(self, node: Any, path: str, depth: int) -> None:
        if depth >= MAX_DEPTH:
            self.error(path, f"conditions nest at most {MAX_DEPTH} levels deep")
            return
        self.node(node, path, depth + 1)

    def combination(self, children: Any, path: str, depth: int) -> None:
        if not isinstance(children, list):
            self.error(path, f"must be an array of conditions, got {_type_name(children)}")
            return
        if not children:
            self.error(path, "must hold at least one condition")
        for index, child in enumerate(children):
            self.nested(child, child_path(path, index), depth)

    def unknown_fields(self, node: dict[Any, Any], path: str, allowed: tuple[str, ...]) -> None:
        for key in node:
            if key not in allowed:
                self.error(
                    child_path(path, key),
                    f"unknown field {key!r} (allowed here: {', '.join(allowed)})",
                )

    def non_empty_string(self, node: dict[str, Any], path: str, name: str) -> None:
        value = node[name]
        if not isinstance(value, str) or not value:
            self.error(child_path(path, name), "must be a non-empty string")

    def pattern(
        self, node: dict[str, Any], path: str, name: str, pattern: re.Pattern[str], what: str
    ) -> None:
        value = node[name]
        if not isinstance(value, str) or pattern.search(value) is None:
            self.error(child_path(path, name), f"must be {what}")

    def event(self, node: dict[str, Any], path: str) -> None:
        self.non_empty_string(node, path, "event")
        aggregate = node.get("aggregate", "count")
        if aggregate not in AGGREGATES:
            self.error(
                child_path(path, "aggregate"),
                f"unknown aggregate {aggregate!r} (expected one of: {', '.join(AGGREGATES)})",
            )
        for name in ("of", "key"):
            if name in node:
                self.pattern(node, path, name, _FIELD, "an event field such as 'properties.price'")
        if aggregate == "count" and "of" in node:
            self.error(child_path(path, "of"), "'count' counts events and takes no 'of'")
        elif aggregate in AGGREGATES and aggregate != "count" and "of" not in node:
            self.error(path, f"missing field 'of': the event field that {aggregate!r} aggregates")
        if "window" in node:
            window = node["window"]
            if not isinstance(window, str) or not is_duration(window):
                self.error(
                    child_path(path, "window"),
                    "must be a duration such as '30s', '15m', '1h', '30d' or '2w'",
                )
        if "where" in node:
            self.filters(node["where"], child_path(path, "where"))
        self.comparison(node, path, relative=True)

    def filters(self, where: Any, path: str) -> None:
        if not isinstance(where, list):
            self.error(path, f"must be an array of field filters, got {_type_name(where)}")
            return
        for index, item in enumerate(where):
            item_path = child_path(path, index)
            if not isinstance(item, dict):
                self.error(item_path, f"expected a field filter object, got {_type_name(item)}")
                continue
            self.unknown_fields(item, item_path, _FILTER_FIELDS)
            if "field" not in item:
                self.error(item_path, "missing field 'field'")
            else:
                self.pattern(
                    item, item_path, "field", _FIELD, "an event field such as 'properties.price'"
                )
            self.comparison(item, item_path, relative=False)

    def comparison(self, node: dict[str, Any], path: str, relative: bool) -> None:
        if "op" not in node:
            self.error(path, "missing field 'op'")
            return
        op = node["op"]
        op_path = child_path(path, "op")
        if not isinstance(op, str) or op not in OPERATORS:
            self.error(
                op_path, f"unknown operator {op!r} (expected one of: {', '.join(OPERATORS)})"
            )
            return
        if not relative and op in _RELATIVE_ONLY:
            self.error(op_path, f"{op!r} compares with the current time; event filters cannot")
            return
        value_path = child_path(path, "value")
        if op == "exists":
            if "value" in node:
                self.error(value_path, "'exists' takes no value")
            return
        if "value" not in node:
            self.error(path, f"missing field 'value' for operator {op!r}")
            return
        value = node["value"]
        if op in MEMBERSHIP_OPS:
            if not isinstance(value, list):
                self.error(value_path, f"{op!r} needs an array, got {_type_name(value)}")
                return
        elif op == "contains":
            if not isinstance(value, str | int | float) or (
                isinstance(value, float) and not math.isfinite(value)
            ):
                self.error(
                    value_path,
                    f"'contains' needs a string, number or boolean, got {_type_name(value)}",
                )
                return
        elif op in ORDER_OPS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.error(value_path, f"{op!r} needs a number, got {_type_name(value)}")
                return
        elif op in ("before", "after"):
            self.moment(value, value_path, relative)
            return
        elif op == "within":
            self.span(value, value_path)
            return
        self.json_value(value, value_path, 0)

    def moment(self, value: Any, path: str, relative: bool) -> None:
        if isinstance(value, str):
            try:
                parse_timestamp(value)
            except ValueError as error:
                self.error(path, str(error))
            return
        if relative and isinstance(value, dict) and len(value) == 1:
            ((name, duration),) = value.items()
            if name in ("ago", "from_now"):
                self.duration(duration, child_path(path, name))
                return
        if relative:
            self.error(path, 'must be a timestamp, {"ago": duration} or {"from_now": duration}')
        else:
            self.error(
                path, "event filters compare with a fixed timestamp such as '2026-01-31T09:00:00Z'"
            )

    def span(self, value: Any, path: str) -> None:
        if isinstance(value, dict) and len(value) == 1:
            ((name, duration),) = value.items()
            if name in ("last", "next"):
                self.duration(duration, child_path(path, name))
                return
        self.error(path, 'must be {"last": duration} or {"next": duration}')

    def duration(self, value: Any, path: str) -> None:
        if not isinstance(value, str) or not is_duration(value):
            self.error(path, "must be a duration such as '30s', '15m', '1h', '30d' or '2w'")

    def json_value(self, value: Any, path: str, depth: int) -> None:
        if depth > MAX_VALUE_DEPTH:
            self.error(path, f"values nest at most {MAX_VALUE_DEPTH} levels deep")
        elif isinstance(value, float):
            if not math.isfinite(value):
                self.error(path, "must be a finite number")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.json_value(item, child_path(path, index), depth + 1)
        elif isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    self.error(path, f"object keys must be strings, got {key!r}")
                else:
                    self.json_value(item, child_path(path, key), depth + 1)
        elif value is not None and not isinstance(value, str | int | bool):
            self.error(path, f"must be a JSON value, got {_type_name(value)}")
