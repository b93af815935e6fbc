"""Validation of policy documents: every error, each with the JSON path at fault.

``$.caps[1].window: expected a rolling window ("7d", "24h", "90m") or one of
calendar_day, calendar_week``. ``parse_policy`` returns the document or
the list of errors, never raises on bad input.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from rapport.core.conditions.validate import child_path
from rapport.core.policy.document import (
    CALENDAR_WINDOWS,
    CATEGORIES,
    CHANNELS,
    IN_APP,
    PolicyDocument,
    parse_window,
)

MAX_TOPICS = 200
MAX_CAPS = 50
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,98}[a-z0-9])?")
_TRAIT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}")
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")

_FIELDS: dict[str, tuple[str, ...]] = {
    "$": ("topics", "consent", "caps", "quiet_hours", "timezone", "addresses", "confirmation"),
    "topic": ("id", "name", "category", "default_subscribed"),
    "consent": ("channels", "opt_in", "marketing", "topic_prefix"),
    "cap": ("id", "max", "window", "category", "channel", "topic"),
    "quiet_hours": ("start", "end", "channels"),
    "timezone": ("trait", "default"),
    "confirmation": ("channels", "template"),
}


@dataclass(frozen=True, slots=True)
class PolicyError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def as_json(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


def parse_policy(raw: Any) -> PolicyDocument | list[PolicyError]:
    """The document ``raw`` describes, or every error in it."""
    errors = validate_policy(raw)
    if errors:
        return errors
    return msgspec.convert(raw, PolicyDocument)


def validate_policy(raw: Any) -> list[PolicyError]:
    """Every error in ``raw``, in document order; empty for a valid policy."""
    walker = _Walker()
    walker.document(raw)
    return walker.errors


def is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


class _Walker:
    def __init__(self) -> None:
        self.errors: list[PolicyError] = []
        self.topic_ids: set[str] = set()

    def error(self, path: str, message: str) -> None:
        self.errors.append(PolicyError(path, message))

    def obj(self, value: Any, path: str, kind: str) -> Mapping[str, Any] | None:
        if not isinstance(value, dict):
            self.error(path, "expected an object")
            return None
        for name in value:
            if name not in _FIELDS[kind]:
                self.error(
                    child_path(path, name),
                    f"unknown field; expected one of {', '.join(_FIELDS[kind])}",
                )
        return value

    def array(self, value: Any, path: str, limit: int) -> list[Any]:
        if not isinstance(value, list):
            self.error(path, "expected an array")
            return []
        if len(value) > limit:
            self.error(path, f"at most {limit} items")
        return value

    def string(
        self,
        node: Mapping[str, Any],
        name: str,
        path: str,
        pattern: re.Pattern[str] | None = None,
        what: str = "",
    ) -> str | None:
        value = node[name]
        at = child_path(path, name)
        if not isinstance(value, str) or not value:
            self.error(at, "expected a non-empty string")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.error(at, f"expected {what}")
            return None
        return value

    def choice(
        self, node: Mapping[str, Any], name: str, path: str, choices: Collection[str]
    ) -> None:
        value = node[name]
        if value not in choices or not isinstance(value, str):
            self.error(child_path(path, name), f"expected one of {', '.join(choices)}")

    def channels(self, node: Mapping[str, Any], name: str, path: str) -> None:
        at = child_path(path, name)
        items = self.array(node[name], at, len(CHANNELS))
        seen: set[str] = set()
        for i, item in enumerate(items):
            if not isinstance(item, str) or item not in CHANNELS:
                self.error(child_path(at, i), f"expected one of {', '.join(CHANNELS)}")
            elif item in seen:
                self.error(child_path(at, i), f"channel {item!r} is listed twice")
            else:
                seen.add(item)

    def document(self, raw: Any) -> None:
        node = self.obj(raw, "$", "$")
        if node is None:
            return
        if "topics" in node:
            for i, item in enumerate(self.array(node["topics"], "$.topics", MAX_TOPICS)):
                self.topic(item, f"$.topics[{i}]")
        if "consent" in node:
            self.consent(node["consent"], "$.consent")
        if "caps" in node:
            for i, item in enumerate(self.array(node["caps"], "$.caps", MAX_CAPS)):
                self.cap(item, f"$.caps[{i}]")
        if "quiet_hours" in node and node["quiet_hours"] is not None:
            self.quiet_hours(node["quiet_hours"], "$.quiet_hours")
        if "timezone" in node:
            self.timezone(node["timezone"], "$.timezone")
        if "addresses" in node:
            self.addresses(node["addresses"], "$.addresses")
        if "confirmation" in node:
            self.confirmation(node["confirmation"], "$.confirmation")

    def topic(self, raw: Any, path: str) -> None:
        node = self.obj(raw, path, "topic")
        if node is None:
            return
        for required in ("id", "name"):
            if required not in node:
                self.error(path, f"{required!r} is required")
        if "id" in node:
            topic_id = self.string(
                node, "id", path, _SLUG, "a slug (lowercase letters, digits, '-', '_')"
            )
            if topic_id is not None:
                if topic_id in self.topic_ids:
                    self.error(child_path(path, "id"), f"topic {topic_id!r} is declared twice")
                self.topic_ids.add(topic_id)
        if "name" in node:
            self.string(node, "name", path)
        if "category" in node:
            self.choice(node, "category", path, CATEGORIES)
        if "default_subscribed" in node and not isinstance(node["default_subscribed"], bool):
            self.error(child_path(path, "default_subscribed"), "expected true or false")

    def consent(self, raw: Any, path: str) -> None:
        node = self.obj(raw, path, "consent")
        if node is None:
            return
        if "channels" in node:
            at = child_path(path, "channels")
            mapping = node["channels"]
            if not isinstance(mapping, dict):
                self.error(at, "expected an object of channel -> consent category")
            else:
                for channel in mapping:
                    if channel not in CHANNELS:
                        self.error(
                            child_path(at, channel), f"expected a channel: {', '.join(CHANNELS)}"
                        )
                    else:
                        self.string(mapping, channel, at)
        if "opt_in" in node:
            self.channels(node, "opt_in", path)
        for name in ("marketing", "topic_prefix"):
            if name in node:
                self.string(node, name, path)

    def cap(self, raw: Any, path: str) -> None:
        node = self.obj(raw, path, "cap")
        if node is None:
            return
        for required in ("max", "window"):
            if required not in node:
                self.error(path, f"{required!r} is required")
        if "max" in node:
            value = node["max"]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                self.error(child_path(path, "max"), "expected a whole number, 0 or more")
        if "window" in node:
            window = node["window"]
            if not isinstance(window, str) or (
                window not in CALENDAR_WINDOWS and parse_window(window) is None
            ):
                self.error(
                    child_path(path, "window"),
                    'expected a rolling window ("7d", "24h", "90m") or one of '
                    + ", ".join(CALENDAR_WINDOWS),
                )
        if node.get("category") is not None:
            self.choice(node, "category", path, CATEGORIES)
        if node.get("channel") is not None:
            self.choice(node, "channel", path, CHANNELS)
        if node.get("topic") is not None:
            topic = self.string(node, "topic", path, _SLUG, "a topic id")
            if topic is not None and self.topic_ids and topic not in self.topic_ids:
                self.error(
                    child_path(path, "topic"), f"unknown topic {topic!r}; declare it in topics"
                )
        if node.get("id") is not None:
            self.string(node, "id", path)

    def quiet_hours(self, raw: Any, path: str) -> None:
        node = self.obj(raw, path, "quiet_hours")
        if node is None:
            return
        times = []
        for name in ("start", "end"):
            if name in node:
                times.append(self.string(node, name, path, _CLOCK, 'a 24-hour time "HH:MM"'))
        if len(times) == 2 and times[0] is not None and times[0] == times[1]:
            self.error(child_path(path, "end"), "start and end must differ")
        if "channels" in node:
            self.channels(node, "channels", path)

    def timezone(self, raw: Any, path: str) -> None:
        node = self.obj(raw, path, "timezone")
        if node is None:
            return
        if "trait" in node:
            self.string(node, "trait", path, _TRAIT, "a trait name")
        if "default" in node:
            zone = self.string(node, "default", path)
            if zone is not None and not is_zone(zone):
                self.error(
                    child_path(path, "default"),
                    f"unknown time zone {zone!r} (an IANA name such as Europe/Paris)",
                )

    def addresses(self, raw: Any, path: str) -> None:
        if not isinstance(raw, dict):
            self.error(path, "expected an object of channel -> address trait")
            return
        for channel in raw:
            at = child_path(path, channel)
            if channel == IN_APP:
                self.error(at, "the in-app inbox is addressed by the profile id, not a trait")
            elif channel not in CHANNELS:
                self.error(at, f"expected a channel: {', '.join(CHANNELS)}")
            else:
                self.string(raw, channel, path, _TRAIT, "a trait name")

    def confirmation(self, raw: Any, path: str) -> None:
        node = self.obj(raw, path, "confirmation")
        if node is None:
            return
        if "channels" in node:
            self.channels(node, "channels", path)
            listed = node["channels"]
            if isinstance(listed, list) and IN_APP in listed:
                self.error(
                    child_path(child_path(path, "channels"), listed.index(IN_APP)),
                    "the in-app inbox has no address to confirm",
                )
        if "template" in node:
            self.string(node, "template", path, _SLUG, "a template id")
