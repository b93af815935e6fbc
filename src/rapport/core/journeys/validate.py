"""Validation of journey definitions: every error, each with the JSON path of the wrong node.

``validate_journey(document)`` returns all the errors of a decoded JSON/YAML
document, in document order, structural ones (which the published JSON
Schema also finds) first, then the reference rules between parts (see
``graph``). Embedded conditions are checked by the condition language's own
validator, so a wrong branch reads ``$.steps.route.branch[0].when.all[1].op:
unknown operator 'equalz'``.
"""

from __future__ import annotations

from typing import Any

from rapport.core.conditions.validate import child_path
from rapport.core.journeys.checks import (
    REFERENCE,
    InvalidJourney,
    JourneyError,
)
from rapport.core.journeys.graph import check_graph
from rapport.core.journeys.schema import (
    EXIT_KINDS,
    FAN_OUT_KINDS,
    HOLD_SCOPES,
    MAX_CRITERIA,
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PRIORITY,
    MAX_TRIGGERS,
    REENTRY_MODES,
    SCHEDULE_EVERY,
    TRIGGER_KINDS,
    WEEKDAYS,
)
from rapport.core.journeys.validate_steps import StepChecker

__all__ = ["InvalidJourney", "JourneyError", "check_journey", "validate_journey"]

_ROOT_FIELDS = (
    "id",
    "name",
    "description",
    "priority",
    "triggers",
    "correlation_key",
    "reentry",
    "time_zone",
    "exit_when",
    "goals",
    "hold",
    "start",
    "steps",
)
_ROOT_REQUIRED = ("id", "name", "triggers", "start", "steps")
_TRIGGER_FIELDS: dict[str, tuple[str, ...]] = {
    "event": ("event", "where", "condition"),
    "segment_entered": ("segment_entered", "condition"),
    "segment_exited": ("segment_exited", "condition"),
    "date": ("date", "before", "after", "at", "yearly", "condition"),
    "schedule": ("schedule", "segment", "catch_up", "condition"),
    "business_event": ("business_event", "where", "to", "condition"),
}
_TRIGGER_REQUIRED: dict[str, tuple[str, ...]] = {
    "schedule": ("segment",),
    "business_event": ("to",),
}
_SCHEDULE_FIELDS: dict[str, tuple[str, ...]] = {
    "day": ("every", "at", "time_zone", "until"),
    "week": ("every", "days", "at", "time_zone", "until"),
    "month": ("every", "day", "at", "time_zone", "until"),
}
_FAN_OUT_FIELDS: dict[str, tuple[str, ...]] = {
    "identifier": ("identifier", "from"),
    "event": ("event", "where", "match", "window"),
    "segment": ("segment",),
}
_GOAL_FIELDS = ("name", "event", "where", "correlate", "condition", "within", "exit")
_EVENT_KEYED = frozenset(("event", "business_event"))
"""Triggers that carry an event, from which a ``correlation_key`` can be read."""


def validate_journey(document: Any) -> list[JourneyError]:
    """Every error in ``document``, structural first; empty if it is a valid journey."""
    errors: list[JourneyError] = []
    _JourneyChecker(errors).journey(document)
    return errors


def check_journey(document: Any) -> None:
    """Raise ``InvalidJourney`` (listing every error) unless ``document`` is valid."""
    errors = validate_journey(document)
    if errors:
        raise InvalidJourney(errors)


class _JourneyChecker(StepChecker):
    def journey(self, document: Any) -> None:
        root = self.obj(document, "$", "a journey")
        if root is None:
            return
        self.fields(root, "$", _ROOT_FIELDS, _ROOT_REQUIRED)
        if "id" in root:
            self.slug(root["id"], "$.id")
        if "name" in root:
            self.text(root["name"], "$.name", MAX_NAME_LENGTH)
        if "description" in root:
            description = root["description"]
            if not isinstance(description, str):
                self.error("$.description", "must be a string")
            elif len(description) > MAX_DESCRIPTION_LENGTH:
                self.error("$.description", f"must be at most {MAX_DESCRIPTION_LENGTH} characters")
        if "priority" in root:
            self.integer(root["priority"], "$.priority", 0, MAX_PRIORITY)
        triggers = (
            self.array(root["triggers"], "$.triggers", 1, MAX_TRIGGERS, "triggers")
            if "triggers" in root
            else []
        )
        for index, trigger in enumerate(triggers):
            self.trigger(trigger, f"$.triggers[{index}]")
        if "correlation_key" in root:
            self.field(root["correlation_key"], "$.correlation_key")
        if "reentry" in root:
            self.reentry(root["reentry"], "$.reentry")
        if "time_zone" in root:
            self.journey_time_zone(root["time_zone"], "$.time_zone")
        if "exit_when" in root:
            criteria = self.array(root["exit_when"], "$.exit_when", 0, MAX_CRITERIA, "criteria")
            for index, criterion in enumerate(criteria):
                self.exit_criterion(criterion, f"$.exit_when[{index}]")
        if "goals" in root:
            goals = self.array(root["goals"], "$.goals", 0, MAX_CRITERIA, "goals")
            for index, goal in enumerate(goals):
                self.goal(goal, f"$.goals[{index}]")
        if "hold" in root:
            self.hold(root["hold"], "$.hold")
        if "start" in root:
            self.slug(root["start"], "$.start")
        if "steps" in root:
            self.steps(root["steps"], "$.steps")
        self.correlation_rules(root, triggers)
        check_graph(root, self.errors)

    # -- triggers --------------------------------------------------------------
    def trigger(self, value: Any, path: str) -> None:
        node = self.obj(value, path, "a trigger")
        if node is None:
            return
        kind = self.kind(node, path, TRIGGER_KINDS, "a trigger")
        if kind is None:
            return
        self.fields(node, path, _TRIGGER_FIELDS[kind], _TRIGGER_REQUIRED.get(kind, ()))
        subject = node[kind]
        subject_path = child_path(path, kind)
        if kind in ("event", "business_event"):
            self.non_empty(subject, subject_path)
            if "where" in node:
                self.filters(node["where"], child_path(path, "where"))
        elif kind in ("segment_entered", "segment_exited"):
            self.slug(subject, subject_path)
        elif kind == "date":
            self.date_reference(node, path, "date")
        else:
            self.schedule(subject, subject_path)
            if "segment" in node:
                self.slug(node["segment"], child_path(path, "segment"))
            if "catch_up" in node:
                self.duration(node["catch_up"], child_path(path, "catch_up"))
        if kind == "business_event" and "to" in node:
            self.fan_out(node["to"], child_path(path, "to"))
        if "condition" in node:
            self.condition(node["condition"], child_path(path, "condition"))

    def schedule(self, value: Any, path: str) -> None:
        node = self.obj(value, path, "a schedule")
        if node is None:
            return
        if "once" in node and "every" in node:
            self.error(path, "a schedule holds either 'once' (one run) or 'every' (recurring)")
            return
        if "once" in node:
            self.fields(node, path, ("once",))
            self.timestamp(node["once"], child_path(path, "once"))
            return
        if "every" not in node:
            self.error(path, "missing field 'once' (one run) or 'every' (day, week or month)")
            return
        every = node["every"]
        if not self.choice(every, child_path(path, "every"), SCHEDULE_EVERY):
            return
        required = {"day": ("at",), "week": ("days", "at"), "month": ("day", "at")}[every]
        self.fields(node, path, _SCHEDULE_FIELDS[every], required)
        if "at" in node:
            self.time_of_day(node["at"], child_path(path, "at"))
        if "days" in node and every == "week":
            self.unique_choices(node["days"], child_path(path, "days"), WEEKDAYS, "weekdays")
        if "day" in node and every == "month":
            self.integer(node["day"], child_path(path, "day"), 1, 31)
        if "time_zone" in node:
            self.time_zone(node["time_zone"], child_path(path, "time_zone"))
        if "until" in node:
            self.timestamp(node["until"], child_path(path, "until"))

    def fan_out(self, value: Any, path: str) -> None:
        node = self.obj(value, path, "a fan-out ('to')")
        if node is None:
            return
        kind = self.kind(node, path, FAN_OUT_KINDS, "a fan-out")
        if kind is None:
            return
        required = {"identifier": ("from",), "event": ("match",), "segment": ()}[kind]
        self.fields(node, path, _FAN_OUT_FIELDS[kind], required)
        if kind == "identifier":
            self.non_empty(node["identifier"], child_path(path, "identifier"))
            if "from" in node:
                self.field(node["from"], child_path(path, "from"))
        elif kind == "segment":
            self.slug(node["segment"], child_path(path, "segment"))
        else:
            self.non_empty(node["event"], child_path(path, "event"))
            if "where" in node:
                self.filters(node["where"], child_path(path, "where"))
            if "window" in node:
                self.duration(node["window"], child_path(path, "window"))
            if "match" in node:
                self.match(node["match"], child_path(path, "match"))

    def match(self, value: Any, path: str) -> None:
        node = self.obj(value, path, "a field-to-field match")
        if node is None:
            return
        if not node:
            self.error(path, "must match at least one field")
        for theirs, ours in node.items():
            item_path = child_path(path, theirs)
            self.field(theirs, item_path)
            self.field(ours, item_path)

    # -- journey-wide rules ----------------------------------------------------
    def reentry(self, value: Any, path: str) -> None:
        if isinstance(value, str):
            self.choice(value, path, REENTRY_MODES)
            return
        if isinstance(value, dict) and "after" in value:
            self.fields(value, path, ("after",))
            self.duration(value["after"], child_path(path, "after"))
            return
        self.error(path, "must be 'never', 'always' or {after: duration}")

    def journey_time_zone(self, value: Any, path: str) -> None:
        node = self.obj(value, path, "a time zone")
        if node is None:
            return
        self.fields(node, path, ("trait", "default"))
        if "trait" in node:
            self.trait(node["trait"], child_path(path, "trait"))
        if "default" in node:
            self.time_zone(node["default"], child_path(path, "default"))

    def exit_criterion(self, value: Any, path: str) -> None:
        node = self.obj(value, path, "an exit criterion")
        if node is None:
            return
        kind = self.kind(node, path, EXIT_KINDS, "an exit criterion")
        if kind == "condition":
            self.fields(node, path, ("condition",))
            self.condition(node["condition"], child_path(path, "condition"))
        elif kind == "event":
            self.fields(node, path, ("event", "where", "correlate"))
            self.event_match(node, path)

    def goal(self, value: Any, path: str) -> None:
        node = self.obj(value, path, "a goal")
        if node is None:
            return
        self.fields(node, path, _GOAL_FIELDS, ("name", "within"))
        if "name" in node:
            self.slug(node["name"], child_path(path, "name"))
        if "within" in node:
            self.duration(node["within"], child_path(path, "within"))
        if "exit" in node:
            self.boolean(node["exit"], child_path(path, "exit"))
        if "event" in node and "condition" in node:
            self.error(path, "a goal is reached by an 'event' or by a 'condition', not both")
        elif "event" in node:
            self.event_match(node, path)
        elif "condition" in node:
            self.condition(node["condition"], child_path(path, "condition"))
            for name in ("where", "correlate"):
                if name in node:
                    self.error(child_path(path, name), f"{name!r} needs a goal 'event'")
        else:
            self.error(path, "missing field 'event' or 'condition' (what reaches the goal)")

    def hold(self, value: Any, path: str) -> None:
        node = self.obj(value, path, "a hold")
        if node is None:
            return
        self.fields(node, path, ("while", "max_age", "messages"), ("while", "max_age"))
        if "while" in node:
            self.condition(node["while"], child_path(path, "while"))
        if "max_age" in node:
            self.duration(node["max_age"], child_path(path, "max_age"))
        if "messages" in node:
            self.choice(node["messages"], child_path(path, "messages"), HOLD_SCOPES)

    def correlation_rules(self, root: dict[str, Any], triggers: list[Any]) -> None:
        """``correlate`` needs a journey key; a key needs every trigger to carry an event."""
        if "correlation_key" in root:
            for index, trigger in enumerate(triggers):
                if isinstance(trigger, dict) and not _EVENT_KEYED & trigger.keys():
                    self.error(
                        f"$.triggers[{index}]",
                        "a journey with a correlation_key is entered by events only"
                        " ('event' or 'business_event' triggers): this trigger has no key",
                        REFERENCE,
                    )
            return
        for path in _correlate_paths(root):
            self.error(
                path,
                "'correlate' compares with the instance's correlation key:"
                " the journey needs a 'correlation_key'",
                REFERENCE,
            )


def _correlate_paths(root: dict[str, Any]) -> list[str]:
    """Paths of every ``correlate`` field in exits, goals and waits."""
    found: list[str] = []
    for section in ("exit_when", "goals"):
        items = root.get(section)
        if isinstance(items, list):
            for index, item in enumerate(items):
                if isinstance(item, dict) and "correlate" in item:
                    found.append(f"$.{section}[{index}].correlate")
    steps = root.get("steps")
    if isinstance(steps, dict):
        for step_id, step in steps.items():
            wait = step.get("wait") if isinstance(step, dict) else None
            if isinstance(wait, dict) and "correlate" in wait:
                found.append(child_path(child_path("$.steps", step_id), "wait") + ".correlate")
    return found
