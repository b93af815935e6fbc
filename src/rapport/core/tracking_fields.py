"""Small value rules of the Segment spec: ids, timestamps, merges, error paths."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import msgspec

_SAFE_INTEGER = 2**53
"""Beyond this a float no longer holds an exact integer (JavaScript's limit too)."""


def coerce_id(value: str | int | float | None) -> str | None:
    """An identifier as a string, the way Segment coerces it; ``None`` if blank.

    Numbers become their decimal text (``42`` and ``42.0`` both give ``"42"``,
    as JavaScript's ``String()`` would). An empty or whitespace-only string is
    no identifier at all.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value if value and not value.isspace() else None
    if isinstance(value, bool):
        raise TypeError("a boolean is not an identifier")
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < _SAFE_INTEGER:
        return str(int(value))
    return repr(value)


def parse_timestamp(value: str) -> datetime | None:
    """An ISO-8601 date-time, aware (UTC if no offset given); ``None`` if invalid."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed


def deep_merge(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` with ``own`` laid over it; nested objects merge, ``own`` wins."""
    merged = dict(defaults)
    for key, value in own.items():
        base = merged.get(key)
        if isinstance(value, dict) and isinstance(base, dict):
            merged[key] = deep_merge(base, value)
        else:
            merged[key] = value
    return merged


_MSGSPEC_ERROR = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def field_error(exc: msgspec.ValidationError) -> tuple[str, str]:
    """``(dotted path, readable message)`` from a msgspec validation error.

    ``Expected `object | null`, got `array` - at `$.batch[2].properties` ``
    becomes ``("batch.2.properties", "batch.2.properties: expected object | null,
    got array")``. The path is empty when the document itself has the wrong type.
    """
    found = _MSGSPEC_ERROR.match(str(exc))
    message = found.group("message") if found else str(exc)
    raw_path = (found.group("path") if found else None) or ""
    path = ".".join(m.group(1) or m.group(2) for m in _PATH_PART.finditer(raw_path))
    message = message.replace("`", "")
    if message.startswith("Expected"):
        message = "e" + message[1:]
    return path, f"{path}: {message}" if path else message


def nesting_exceeds(value: Any, limit: int) -> bool:
    """True if ``value`` nests objects/arrays more than ``limit`` levels deep.

    Iterative, so a hostile document cannot exhaust the interpreter's stack here.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, dict):
            children: Any = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
