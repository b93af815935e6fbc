"""The checks every part of a journey is made of, each reporting errors with a JSON path.

``Checker`` collects errors instead of stopping at the first, so a client
fixing a definition sees every problem at once. Each primitive mirrors one
construct of ``schema.JOURNEY_SCHEMA`` (the tests keep the two in
agreement); conditions and event filters are handed to the condition
language's own validator, their paths prefixed with where they sit.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from rapport.core.conditions import validate_condition
from rapport.core.conditions.fields import FIELD_PATTERN, TRAIT_PATTERN
from rapport.core.conditions.instants import is_duration, parse_timestamp
from rapport.core.conditions.validate import child_path
from rapport.core.journeys.schema import (
    NON_BLANK_PATTERN,
    SLUG_PATTERN,
    TIME_OF_DAY_PATTERN,
    TIME_ZONE_PATTERN,
)

STRUCTURE: Final = "structure"
"""An error the published JSON Schema also finds."""
REFERENCE: Final = "reference"
"""An error between parts of a journey (targets, loops, names...), beyond the schema."""

MAX_VALUE_DEPTH: Final = 64
"""Deepest nesting inside a literal value (message data, trait values, webhook bodies)."""

_SLUG = re.compile(SLUG_PATTERN)
_TRAIT = re.compile(TRAIT_PATTERN)
_FIELD = re.compile(FIELD_PATTERN)
_TIME_OF_DAY = re.compile(TIME_OF_DAY_PATTERN)
_TIME_ZONE = re.compile(TIME_ZONE_PATTERN)
_NON_BLANK = re.compile(NON_BLANK_PATTERN)
_FILTER_PREFIX = "$.where"

SLUG_RULE: Final = (
    "1-100 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit"
)
DURATION_RULE: Final = "a duration such as '30s', '15m', '1h', '30d' or '2w'"


@dataclass(frozen=True, slots=True)
class JourneyError:
    path: str
    """JSON path of the wrong node, e.g. ``$.steps.welcome.message.topic``."""
    message: str
    kind: str = STRUCTURE
    """``structure`` (the JSON Schema finds it too) or ``reference`` (only the validator)."""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidJourney(ValueError):
    """A definition with one or more errors; ``errors`` lists them all."""

    def __init__(self, errors: list[JourneyError]) -> None:
        super().__init__("; ".join(str(error) for error in errors))
        self.errors = errors


def type_name(value: Any) -> str:
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


def is_integer(value: Any) -> bool:
    """An integer as JSON Schema counts them: ``3`` and ``3.0``, not ``true``."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@lru_cache(maxsize=1)
def known_time_zones() -> frozenset[str]:
    """IANA zone names this machine's time zone database holds."""
    return frozenset(zoneinfo.available_timezones())


class Checker:
    """Error collection and the primitive checks; subclasses walk the document."""

    def __init__(self, errors: list[JourneyError]) -> None:
        self.errors = errors

    def error(self, path: str, message: str, kind: str = STRUCTURE) -> None:
        self.errors.append(JourneyError(path, message, kind))

    # -- objects ---------------------------------------------------------------
    def obj(self, value: Any, path: str, what: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.error(path, f"expected {what} object, got {type_name(value)}")
        return None

    def fields(
        self,
        node: dict[str, Any],
        path: str,
        allowed: Collection[str],
        required: Iterable[str] = (),
    ) -> None:
        """Unknown fields, then missing required ones."""
        for key in node:
            if key not in allowed:
                self.error(
                    child_path(path, key),
                    f"unknown field {key!r} (allowed here: {', '.join(allowed)})",
                )
        for name in required:
            if name not in node:
                self.error(path, f"missing field {name!r}")

    def kind(
        self, node: dict[str, Any], path: str, kinds: tuple[str, ...], what: str
    ) -> str | None:
        """The one key of ``kinds`` the node holds, or None (with an error)."""
        present = [kind for kind in kinds if kind in node]
        if len(present) == 1:
            return present[0]
        if not present:
            found = ", ".join(repr(key) for key in node) or "an empty object"
            self.error(path, f"{what} holds one of {', '.join(kinds)}; found {found}")
        else:
            both = " and ".join(repr(kind) for kind in present)
            self.error(path, f"{what} holds exactly one of {', '.join(kinds)}; found {both}")
        return None

    # -- scalars ---------------------------------------------------------------
    def matches(self, value: Any, path: str, pattern: re.Pattern[str], what: str) -> bool:
        if isinstance(value, str) and pattern.search(value) is not None:
            return True
        self.error(path, f"must be {what}")
        return False

    def slug(self, value: Any, path: str) -> None:
        self.matches(value, path, _SLUG, f"an id: {SLUG_RULE}")

    def non_empty(self, value: Any, path: str) -> None:
        if not isinstance(value, str) or not value:
            self.error(path, "must be a non-empty string")

    def text(self, value: Any, path: str, limit: int) -> None:
        if not isinstance(value, str) or _NON_BLANK.search(value) is None:
            self.error(path, "must be a string that is not blank")
        elif len(value) > limit:
            self.error(path, f"must be at most {limit} characters")

    def trait(self, value: Any, path: str) -> None:
        self.matches(value, path, _TRAIT, "a trait name such as 'birthday' or 'address.city'")

    def field(self, value: Any, path: str) -> None:
        self.matches(value, path, _FIELD, "an event field such as 'properties.order_id'")

    def duration(self, value: Any, path: str) -> None:
        if not isinstance(value, str) or not is_duration(value):
            self.error(path, f"must be {DURATION_RULE}")

    def timestamp(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            self.error(path, "must be a timestamp such as '2026-06-01T09:00:00Z'")
            return
        try:
            parse_timestamp(value)
        except ValueError as exc:
            self.error(path, str(exc))

    def time_of_day(self, value: Any, path: str) -> None:
        self.matches(value, path, _TIME_OF_DAY, "a time of day 'HH:MM' such as '09:00' or '19:30'")

    def time_zone(self, value: Any, path: str) -> None:
        if self.matches(value, path, _TIME_ZONE, "a time zone name such as 'Europe/Paris'") and (
            value not in known_time_zones()
        ):
            self.error(path, f"unknown time zone {value!r}", REFERENCE)

    def boolean(self, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            self.error(path, "must be true or false")

    def integer(self, value: Any, path: str, low: int, high: int) -> None:
        if not is_integer(value) or not low <= value <= high:
            self.error(path, f"must be an integer from {low} to {high}")

    def choice(self, value: Any, path: str, choices: tuple[str, ...]) -> bool:
        if isinstance(value, str) and value in choices:
            return True
        self.error(path, f"must be one of {', '.join(choices)}; got {value!r}")
        return False

    def array(self, value: Any, path: str, low: int, high: int | None, what: str) -> list[Any]:
        """``value`` if it is an array (length errors reported); [] otherwise."""
        if not isinstance(value, list):
            self.error(path, f"must be an array of {what}, got {type_name(value)}")
            return []
        if len(value) < low:
            self.error(path, f"must hold at least {low} {what}")
        if high is not None and len(value) > high:
            self.error(path, f"must hold at most {high} {what}")
        return value

    def unique_choices(self, value: Any, path: str, choices: tuple[str, ...], what: str) -> None:
        """A non-empty array of distinct members of ``choices``."""
        items = self.array(value, path, 1, None, what)
        seen: set[str] = set()
        for index, item in enumerate(items):
            if self.choice(item, child_path(path, index), choices):
                if item in seen:
                    self.error(child_path(path, index), f"{item!r} is listed twice")
                seen.add(item)

    # -- embedded languages ----------------------------------------------------
    def condition(self, tree: Any, path: str) -> None:
        """A condition (docs/conditions.md), its errors' paths prefixed with ``path``."""
        for error in validate_condition(tree):
            self.error(path + error.path[1:], error.message)

    def filters(self, where: Any, path: str) -> None:
        """Event field filters, the ``where`` of an event aggregate in a condition."""
        # The condition validator checks filters as part of an event node: wrap
        # them in one whose other fields are valid, keep the filters' errors.
        probe = {"event": "probe", "where": where, "op": "exists"}
        for error in validate_condition(probe):
            if error.path.startswith(_FILTER_PREFIX):
                self.error(path + error.path[len(_FILTER_PREFIX) :], error.message)

    def json_value(self, value: Any, path: str, depth: int = 0) -> None:
        """A literal JSON value: finite numbers, string keys, bounded nesting."""
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
            self.error(path, f"must be a JSON value, got {type_name(value)}")
