"""Structural checks of a journey's steps (the graph between them is ``graph.py``'s)."""

from __future__ import annotations

import math
import re
from typing import Any

from rapport.core.conditions.validate import child_path
from rapport.core.journeys.checks import DURATION_RULE, Checker, is_number
from rapport.core.journeys.schema import (
    CATEGORIES,
    CHANNELS,
    HEADER_PATTERN,
    HTTP_METHODS,
    MAX_CASES,
    MAX_NAME_LENGTH,
    MAX_STEPS,
    MAX_VARIANTS,
    MAX_WEIGHT,
    SLUG_PATTERN,
    STEP_KINDS,
    URL_PATTERN,
    WAIT_KINDS,
    WEEKDAYS,
    WRITE_TRAIT_PATTERN,
)

_SLUG = re.compile(SLUG_PATTERN)
_WRITE_TRAIT = re.compile(WRITE_TRAIT_PATTERN)
_URL = re.compile(URL_PATTERN)
_HEADER = re.compile(HEADER_PATTERN)

STEP_FIELDS: dict[str, tuple[str, ...]] = {
    "message": ("message", "next"),
    "wait": ("wait", "next"),
    "branch": ("branch", "otherwise"),
    "split": ("split",),
    "update": ("update", "next"),
    "webhook": ("webhook", "next"),
    "goal": ("goal", "next"),
    "exit": ("exit",),
}
"""The fields of each kind of step; ``next`` and ``otherwise`` name other steps."""
_MESSAGE_FIELDS = ("channel", "template", "topic", "category", "data")
_WAIT_FIELDS: dict[str, tuple[str, ...]] = {
    "for": ("for",),
    "until_time": ("until_time", "days"),
    "until_date": ("until_date", "before", "after", "at", "yearly", "missed"),
    "event": ("event", "where", "correlate", "timeout", "on_timeout"),
}
_UPDATE_FIELDS = ("set", "unset", "increment", "add_tags", "remove_tags")
_WRITE_TRAIT_RULE = "a top-level trait name (no '.')"


def is_trait_reference(value: Any) -> bool:
    """A message ``data`` value that reads a trait: an object whose only key is ``trait``."""
    return isinstance(value, dict) and len(value) == 1 and "trait" in value


class StepChecker(Checker):
    def steps(self, value: Any, path: str) -> None:
        steps = self.obj(value, path, "a steps")
        if steps is None:
            return
        if not steps:
            self.error(path, "must hold at least one step")
        if len(steps) > MAX_STEPS:
            self.error(path, f"must hold at most {MAX_STEPS} steps")
        for step_id, step in steps.items():
            step_path = child_path(path, step_id)
            if not isinstance(step_id, str) or _SLUG.search(step_id) is None:
                self.error(step_path, "a step id is 1-100 lowercase letters, digits, '-' or '_'")
            self.step(step, step_path)

    def step(self, value: Any, path: str) -> None:
        node = self.obj(value, path, "a step")
        if node is None:
            return
        kind = self.kind(node, path, STEP_KINDS, "a step")
        if kind is None:
            return
        self.fields(node, path, STEP_FIELDS[kind], ("otherwise",) if kind == "branch" else ())
        for target in ("next", "otherwise"):
            if target in node:
                self.slug(node[target], child_path(path, target))
        value_path = child_path(path, kind)
        getattr(self, f"_{kind}")(node[kind], value_path)

    # -- one method per kind of step ------------------------------------------
    def _message(self, value: Any, path: str) -> None:
        node = self.obj(value, path, "a message")
        if node is None:
            return
        self.fields(node, path, _MESSAGE_FIELDS, ("channel", "template", "category"))
        if "channel" in node:
            channel = node["channel"]
            channel_path = child_path(path, "channel")
            if isinstance(channel, list):
                self.unique_choices(channel, channel_path, CHANNELS, "channels")
            elif isinstance(channel, str):
                self.choice(channel, channel_path, CHANNELS)
            else:
                self.error(
                    channel_path,
                    f"must be a channel ({', '.join(CHANNELS)}) or an array of channels"
                    " in order of preference",
                )
        for name in ("template", "topic"):
            if name in node:
                self.slug(node[name], child_path(path, name))
        if "category" in node:
            category = node["category"]
            if (
                self.choice(category, child_path(path, "category"), CATEGORIES)
                and category == "promotional"
                and "topic" not in node
            ):
                self.error(
                    path, "a promotional message needs a 'topic': what its unsubscribe link stops"
                )
        if "data" in node and self.obj(node["data"], child_path(path, "data"), "a data"):
            self.json_value(node["data"], child_path(path, "data"))
            for key, item in node["data"].items():
                # {trait: NAME}: her trait's value when the step runs (docs: "Message").
                if is_trait_reference(item):
                    item_path = child_path(child_path(path, "data"), key)
                    self.trait(item["trait"], child_path(item_path, "trait"))

    def _wait(self, value: Any, path: str) -> None:
        node = self.obj(value, path, "a wait")
        if node is None:
            return
        kind = self.kind(node, path, WAIT_KINDS, "a wait")
        if kind is None:
            return
        self.fields(node, path, _WAIT_FIELDS[kind], ("timeout",) if kind == "event" else ())
        if kind == "for":
            self.duration(node["for"], child_path(path, "for"))
        elif kind == "until_time":
            self.until_time(node["until_time"], child_path(path, "until_time"))
            if "days" in node:
                self.unique_choices(node["days"], child_path(path, "days"), WEEKDAYS, "weekdays")
        elif kind == "until_date":
            self.date_reference(node, path, "until_date", per_customer=True)
            if "missed" in node:
                self.slug(node["missed"], child_path(path, "missed"))
        else:
            self.event_match(node, path)
            if "timeout" in node:
                self.duration(node["timeout"], child_path(path, "timeout"))
            if "on_timeout" in node:
                self.slug(node["on_timeout"], child_path(path, "on_timeout"))

    def _branch(self, value: Any, path: str) -> None:
        for index, case in enumerate(self.array(value, path, 1, MAX_CASES, "cases")):
            case_path = child_path(path, index)
            node = self.obj(case, case_path, "a branch case")
            if node is None:
                continue
            self.fields(node, case_path, ("when", "next"), ("when", "next"))
            if "when" in node:
                self.condition(node["when"], child_path(case_path, "when"))
            if "next" in node:
                self.slug(node["next"], child_path(case_path, "next"))

    def _split(self, value: Any, path: str) -> None:
        for index, variant in enumerate(self.array(value, path, 2, MAX_VARIANTS, "variants")):
            variant_path = child_path(path, index)
            node = self.obj(variant, variant_path, "a split variant")
            if node is None:
                continue
            self.fields(
                node, variant_path, ("name", "weight", "next", "holdout"), ("name", "weight")
            )
            if "name" in node:
                self.slug(node["name"], child_path(variant_path, "name"))
            if "weight" in node:
                self.integer(node["weight"], child_path(variant_path, "weight"), 1, MAX_WEIGHT)
            if "holdout" in node:
                self.boolean(node["holdout"], child_path(variant_path, "holdout"))
            if node.get("holdout") is True:
                if "next" in node:
                    self.error(
                        child_path(variant_path, "next"),
                        "a holdout variant takes no step: it has no 'next'",
                    )
            elif "next" not in node:
                self.error(variant_path, "missing field 'next' (or 'holdout: true')")
            else:
                self.slug(node["next"], child_path(variant_path, "next"))

    def _update(self, value: Any, path: str) -> None:
        node = self.obj(value, path, "an update")
        if node is None:
            return
        self.fields(node, path, _UPDATE_FIELDS)
        if not node:
            self.error(path, f"needs at least one of {', '.join(_UPDATE_FIELDS)}")
        if "set" in node:
            traits = self.obj(node["set"], child_path(path, "set"), "a traits")
            for name, trait_value in (traits or {}).items():
                name_path = child_path(child_path(path, "set"), name)
                self.matches(name, name_path, _WRITE_TRAIT, _WRITE_TRAIT_RULE)
                self.json_value(trait_value, name_path)
        if "unset" in node:
            unset_path = child_path(path, "unset")
            for index, name in enumerate(self.array(node["unset"], unset_path, 0, None, "names")):
                self.matches(name, child_path(unset_path, index), _WRITE_TRAIT, _WRITE_TRAIT_RULE)
        if "increment" in node:
            amounts = self.obj(node["increment"], child_path(path, "increment"), "an increment")
            for name, amount in (amounts or {}).items():
                name_path = child_path(child_path(path, "increment"), name)
                self.matches(name, name_path, _WRITE_TRAIT, _WRITE_TRAIT_RULE)
                if not is_number(amount):
                    self.error(name_path, "must be a number")
                elif not math.isfinite(amount):
                    self.error(name_path, "must be a finite number")
        for name in ("add_tags", "remove_tags"):
            if name in node:
                tags_path = child_path(path, name)
                for index, tag in enumerate(self.array(node[name], tags_path, 0, None, "tags")):
                    self.non_empty(tag, child_path(tags_path, index))

    def _webhook(self, value: Any, path: str) -> None:
        node = self.obj(value, path, "a webhook")
        if node is None:
            return
        self.fields(node, path, ("url", "method", "headers", "body"), ("url",))
        if "url" in node:
            self.matches(
                node["url"],
                child_path(path, "url"),
                _URL,
                "an http(s) URL such as 'https://x.io/h'",
            )
        if "method" in node:
            self.choice(node["method"], child_path(path, "method"), HTTP_METHODS)
        if "headers" in node:
            headers_path = child_path(path, "headers")
            headers = self.obj(node["headers"], headers_path, "a headers")
            for name, header in (headers or {}).items():
                name_path = child_path(headers_path, name)
                self.matches(name, name_path, _HEADER, "an HTTP header name")
                if not isinstance(header, str):
                    self.error(name_path, "must be a string")
        if "body" in node:
            self.json_value(node["body"], child_path(path, "body"))

    def _goal(self, value: Any, path: str) -> None:
        self.slug(value, path)

    def _exit(self, value: Any, path: str) -> None:
        self.text(value, path, MAX_NAME_LENGTH)

    # -- shared with triggers and journey-wide rules ---------------------------
    def until_time(self, value: Any, path: str) -> None:
        if isinstance(value, dict):
            self.fields(value, path, ("trait", "default"), ("trait", "default"))
            if "trait" in value:
                self.trait(value["trait"], child_path(path, "trait"))
            if "default" in value:
                self.time_of_day(value["default"], child_path(path, "default"))
        elif isinstance(value, str):
            self.time_of_day(value, path)
        else:
            self.error(path, "must be a time of day 'HH:MM' or {trait: name, default: 'HH:MM'}")

    def date_reference(
        self, node: dict[str, Any], path: str, key: str, *, per_customer: bool = False
    ) -> None:
        """A date trait (``key``), an optional offset and time of day, yearly or not.

        ``per_customer``: the offset may be read from a trait (``{trait, default}``).
        """
        self.trait(node[key], child_path(path, key))
        for name in ("before", "after"):
            if name not in node:
                continue
            offset, offset_path = node[name], child_path(path, name)
            if per_customer and isinstance(offset, dict):
                self.fields(offset, offset_path, ("trait", "default"), ("trait", "default"))
                if "trait" in offset:
                    self.trait(offset["trait"], child_path(offset_path, "trait"))
                if "default" in offset:
                    self.duration(offset["default"], child_path(offset_path, "default"))
            elif per_customer and not isinstance(offset, str):
                self.error(
                    offset_path,
                    f"must be {DURATION_RULE} or {{trait: NAME, default: DURATION}}",
                )
            else:
                self.duration(offset, offset_path)
        if "before" in node and "after" in node:
            self.error(path, "give 'before' or 'after' (the offset from the date), not both")
        if "at" in node:
            self.time_of_day(node["at"], child_path(path, "at"))
        if "yearly" in node:
            self.boolean(node["yearly"], child_path(path, "yearly"))

    def event_match(self, node: dict[str, Any], path: str) -> None:
        """``event``, ``where`` and ``correlate`` of an exit criterion, goal or wait."""
        self.non_empty(node["event"], child_path(path, "event"))
        if "where" in node:
            self.filters(node["where"], child_path(path, "where"))
        if "correlate" in node:
            self.field(node["correlate"], child_path(path, "correlate"))
