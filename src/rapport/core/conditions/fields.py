"""Reading values out of profiles' traits and events' bodies by dotted path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rapport.core.model import Event

EVENT_FIELD_ROOTS = ("properties", "context", "traits")
"""The parts of an event a condition may read: ``properties.price``, ``context.page.url``..."""

FIELD_PATTERN = r"^(?:properties|context|traits)(?:\.[^.]+)+$"
TRAIT_PATTERN = r"^[^.]+(?:\.[^.]+)*$"


def walk(value: Any, parts: tuple[str, ...]) -> Any:
    """``value[parts[0]][parts[1]]...``, or ``None`` as soon as a step is not an object."""
    for part in parts:
        if type(value) is not dict:
            return None
        value = value.get(part)
    return value


def event_field(path: str) -> Callable[[Event], Any]:
    """A getter for a validated field path such as ``properties.product.id``."""
    root, *rest = path.split(".")
    if root not in EVENT_FIELD_ROOTS:
        raise ValueError(f"events have no field {root!r}")
    parts = tuple(rest)
    if len(parts) == 1:
        (name,) = parts
        # One lambda per root: ``getattr(event, root)`` would cost a call more.
        if root == "properties":
            return lambda event: event.properties.get(name)
        if root == "context":
            return lambda event: event.context.get(name)
        return lambda event: event.traits.get(name)
    return lambda event: walk(getattr(event, root), parts)


def key_text(value: Any) -> str | None:
    """A value used as a grouping key or a distinct value, as text.

    Keys compare as text so that ``42`` and ``"42"`` are the same product (ids
    travel as numbers from one source and strings from another). Integral
    floats read like integers (``42.0`` -> ``"42"``), booleans as ``true`` /
    ``false``. ``null``, objects and arrays are no key: such an event is not
    counted under any key.
    """
    kind = type(value)
    if kind is str:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return str(int(value)) if value.is_integer() else repr(value)
    return None
