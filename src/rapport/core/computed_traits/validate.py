"""Validation of what a computed trait computes, with errors naming the JSON path.

Paths are relative to the ``compute`` object (``$.window``,
``$.where[0].op``, ``$.weights.visit_days``). The ``aggregate`` kind is the
event part of a condition (docs/conditions.md) without ``op``/``value``, so
it is checked by the condition validator itself: the two can never disagree
on what an aggregate is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rapport.core.computed_traits import typical_lead, usual_time
from rapport.core.computed_traits.definitions import (
    AGGREGATE,
    ENGAGEMENT_SCORE,
    TYPICAL_LEAD,
    USUAL_TIME,
)
from rapport.core.computed_traits.engagement import (
    COMPONENTS,
    DAY_US,
    DEFAULT_ACTIVE_TARGET,
    DEFAULT_DAYS_TARGET,
    DEFAULT_UNIT,
    DEFAULT_WINDOW,
    MAX_ACTIVITY_EVENTS,
    MAX_CORE_ACTIONS,
    MAX_DAYS_TARGET,
    MAX_UNITS,
)
from rapport.core.conditions import ConditionError, validate_condition
from rapport.core.conditions.instants import is_duration, parse_duration
from rapport.core.conditions.validate import child_path

AGGREGATE_FIELDS: Final = ("event", "where", "aggregate", "of", "window", "key")
ENGAGEMENT_FIELDS: Final = (
    "window",
    "activity",
    "active_time",
    "visit_days",
    "core_actions",
    "weights",
)
_SECTION_FIELDS: Final = {
    "activity": ("events", "pages"),
    "active_time": ("unit", "target"),
    "visit_days": ("target",),
    "core_actions": ("events",),
    "weights": COMPONENTS,
}
_DURATION_HINT: Final = "must be a duration such as '30s', '15m', '1h', '30d' or '2w'"


class InvalidComputedTrait(ValueError):
    """A definition with one or more errors; ``errors`` lists them all."""

    def __init__(self, errors: list[ConditionError]) -> None:
        super().__init__("; ".join(str(error) for error in errors))
        self.errors = errors


def validate_compute(kind: str, compute: Any) -> list[ConditionError]:
    """Every error in the ``compute`` object of a definition of ``kind``, in document order."""
    if not isinstance(compute, dict):
        return [ConditionError("$", "must be an object")]
    if kind == AGGREGATE:
        return _aggregate(compute)
    if kind == ENGAGEMENT_SCORE:
        return _Engagement(compute).errors
    if kind == USUAL_TIME:
        return _usual_time(compute)
    if kind == TYPICAL_LEAD:
        return _typical_lead(compute)
    raise ValueError(f"unknown computed trait kind {kind!r}")


def _unknown(node: dict[str, Any], path: str, allowed: tuple[str, ...]) -> list[ConditionError]:
    return [
        ConditionError(
            child_path(path, key), f"unknown field {key!r} (allowed here: {', '.join(allowed)})"
        )
        for key in node
        if key not in allowed
    ]


def _aggregate(compute: dict[str, Any]) -> list[ConditionError]:
    errors = _unknown(compute, "$", AGGREGATE_FIELDS)
    if "event" not in compute:
        errors.append(ConditionError("$", "missing field 'event': the event name to aggregate"))
        return errors
    # The event node of a condition, compared with nothing: ``exists`` takes no value.
    node = {key: value for key, value in compute.items() if key in AGGREGATE_FIELDS}
    errors += validate_condition({**node, "op": "exists"})
    return errors


class _Engagement:
    def __init__(self, compute: dict[str, Any]) -> None:
        self.errors = _unknown(compute, "$", ENGAGEMENT_FIELDS)
        sections: dict[str, dict[str, Any]] = {}
        for name, allowed in _SECTION_FIELDS.items():
            if name not in compute:
                sections[name] = {}
                continue
            section = compute[name]
            path = child_path("$", name)
            if not isinstance(section, dict):
                self.errors.append(ConditionError(path, "must be an object"))
                sections[name] = {}
                continue
            self.errors += _unknown(section, path, allowed)
            sections[name] = section
        window = self.duration(compute, "$", "window", DEFAULT_WINDOW)
        self.weights(sections["weights"])
        self.activity(sections["activity"])
        unit = self.duration(sections["active_time"], "$.active_time", "unit", DEFAULT_UNIT)
        target = self.duration(
            sections["active_time"], "$.active_time", "target", DEFAULT_ACTIVE_TARGET
        )
        if unit is not None and target is not None:
            if unit > target:
                self.error("$.active_time.unit", "must not be longer than the target")
            elif -(-target // unit) > MAX_UNITS:
                self.error(
                    "$.active_time.target",
                    f"at most {MAX_UNITS} units: use a longer unit or a shorter target",
                )
            if window is not None and target > window:
                self.error("$.active_time.target", "must not be longer than the window")
        self.visit_days(sections["visit_days"], window)
        self.core_actions(compute, sections["core_actions"])

    def error(self, path: str, message: str) -> None:
        self.errors.append(ConditionError(path, message))

    def duration(self, node: dict[str, Any], path: str, name: str, default: str) -> int | None:
        value = node.get(name, default)
        if not isinstance(value, str) or not is_duration(value):
            self.error(child_path(path, name), _DURATION_HINT)
            return None
        return parse_duration(value)

    def weights(self, weights: dict[str, Any]) -> None:
        total = 0.0
        valid = True
        for name in COMPONENTS:
            value = weights.get(name, 1)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                self.error(f"$.weights.{name}", "must be a number at least 0")
                valid = False
            else:
                total += value
        if valid and total <= 0:
            self.error("$.weights", "at least one weight must be more than 0")

    def names(
        self, node: dict[str, Any], path: str, limit: int, check: Callable[[list[str]], None]
    ) -> None:
        """``node["events"]``: an array of distinct event names."""
        events = node["events"]
        path = child_path(path, "events")
        if not isinstance(events, list):
            self.error(path, "must be an array of event names")
            return
        if len(events) > limit:
            self.error(path, f"at most {limit} event names")
        seen: set[str] = set()
        for index, name in enumerate(events):
            if not isinstance(name, str) or not name:
                self.error(child_path(path, index), "must be a non-empty string")
            elif name in seen:
                self.error(child_path(path, index), f"{name!r} is listed twice")
            else:
                seen.add(name)
        check(events)

    def activity(self, activity: dict[str, Any]) -> None:
        pages = activity.get("pages", True)
        if not isinstance(pages, bool):
            self.error("$.activity.pages", "must be true or false")
        if "events" in activity:

            def some_activity(events: list[str]) -> None:
                if not events and pages is False:
                    self.error("$.activity", "nothing would count as activity")

            self.names(activity, "$.activity", MAX_ACTIVITY_EVENTS, some_activity)

    def visit_days(self, visit_days: dict[str, Any], window: int | None) -> None:
        target = visit_days.get("target", DEFAULT_DAYS_TARGET)
        path = "$.visit_days.target"
        if isinstance(target, bool) or not isinstance(target, int) or target < 1:
            self.error(path, "must be a whole number of days, at least 1")
        elif target > MAX_DAYS_TARGET:
            self.error(path, f"must be at most {MAX_DAYS_TARGET}")
        elif window is not None and target > -(-window // DAY_US) + 1:
            # A window touches at most ceil(window / 1 day) + 1 calendar days.
            self.error(path, "can never be reached within the window")

    def core_actions(self, compute: dict[str, Any], core_actions: dict[str, Any]) -> None:
        weight = compute.get("weights", {})
        weight = weight.get("core_actions", 1) if isinstance(weight, dict) else 1
        if "events" in core_actions:
            self.names(core_actions, "$.core_actions", MAX_CORE_ACTIONS, lambda events: None)
            if core_actions["events"] == [] and weight:
                self.error("$.core_actions.events", "must list at least one event")
        elif weight:
            path = "$" if "core_actions" not in compute else "$.core_actions"
            what = "core_actions" if path == "$" else "events"
            self.error(
                path,
                f"missing field {what!r}: the core action events (or give weights.core_actions 0)",
            )


USUAL_TIME_FIELDS: Final = ("events", "pages", "window", "bucket", "time_zone")


def _usual_time(compute: dict[str, Any]) -> list[ConditionError]:
    errors = _unknown(compute, "$", USUAL_TIME_FIELDS)
    for name, default in (
        ("window", usual_time.DEFAULT_WINDOW),
        ("bucket", usual_time.DEFAULT_BUCKET),
    ):
        value = compute.get(name, default)
        if not isinstance(value, str) or not is_duration(value):
            errors.append(ConditionError(child_path("$", name), _DURATION_HINT))
    bucket = compute.get("bucket", usual_time.DEFAULT_BUCKET)
    if isinstance(bucket, str) and is_duration(bucket):
        micros = parse_duration(bucket)
        minutes = micros // usual_time.MINUTE_US
        if micros % usual_time.MINUTE_US or minutes < 1 or usual_time.DAY_MINUTES % minutes:
            errors.append(
                ConditionError(
                    "$.bucket", "must be whole minutes that divide a day (15m, 30m, 1h, 2h...)"
                )
            )
    pages = compute.get("pages", True)
    if not isinstance(pages, bool):
        errors.append(ConditionError("$.pages", "must be true or false"))
    if "events" in compute:
        events = compute["events"]
        if not isinstance(events, list):
            errors.append(ConditionError("$.events", "must be an array of event names"))
        else:
            if len(events) > usual_time.MAX_EVENTS:
                errors.append(
                    ConditionError("$.events", f"at most {usual_time.MAX_EVENTS} event names")
                )
            for index, name in enumerate(events):
                if not isinstance(name, str) or not name:
                    errors.append(
                        ConditionError(child_path("$.events", index), "must be a non-empty string")
                    )
            if not events and pages is False:
                errors.append(ConditionError("$", "nothing would count as activity"))
    zone = compute.get("time_zone", "UTC")
    if not isinstance(zone, str) or not _is_zone(zone):
        errors.append(
            ConditionError("$.time_zone", "must be an IANA time zone name such as 'Europe/Paris'")
        )
    return errors


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


TYPICAL_LEAD_FIELDS: Final = ("event", "where", "reference", "window", "round", "keep")


def _typical_lead(compute: dict[str, Any]) -> list[ConditionError]:
    errors = _unknown(compute, "$", TYPICAL_LEAD_FIELDS)
    for name, what in (
        ("event", "the reaction event"),
        ("reference", "the field holding the moment"),
    ):
        if name not in compute:
            errors.append(ConditionError("$", f"missing field {name!r}: {what}"))
    if "event" in compute:
        # The event part of a condition checks ``event`` and ``where`` exactly as aggregates do.
        node = {"event": compute["event"], "op": "exists"}
        if "where" in compute:
            node["where"] = compute["where"]
        errors += validate_condition(node)
    reference = compute.get("reference")
    if "reference" in compute and (
        not isinstance(reference, str)
        or not reference.startswith(("properties.", "context."))
        or reference.endswith(".")
    ):
        errors.append(
            ConditionError(
                "$.reference", "must be an event field path such as 'properties.appointment_at'"
            )
        )
    for name, default in (
        ("window", typical_lead.DEFAULT_WINDOW),
        ("round", typical_lead.DEFAULT_ROUND),
    ):
        value = compute.get(name, default)
        if not isinstance(value, str) or not is_duration(value):
            errors.append(ConditionError(child_path("$", name), _DURATION_HINT))
    keep = compute.get("keep", typical_lead.DEFAULT_KEEP)
    if (
        isinstance(keep, bool)
        or not isinstance(keep, int)
        or not 1 <= keep <= typical_lead.MAX_KEEP
    ):
        errors.append(
            ConditionError("$.keep", f"must be a whole number from 1 to {typical_lead.MAX_KEEP}")
        )
    return errors
