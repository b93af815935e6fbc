"""Data that needs consent is not kept without it: checked at ingest, before anything is stored.

Some signals may only be kept with the customer's consent: a geofence entry
or a GPS fix needs location consent. A workspace declares, in settings:

- ``consent_required_events``: track events kept only when the event itself
  carries the consent (``Geofence Entered=location``). Without it the event
  is refused with ``consent_required`` and NOT stored anywhere: not in the
  log, not on the profile, and its rejection record keeps no payload.
- ``consent_required_fields``: fields removed from any event that does not
  carry the consent (``context.location=location``); the rest of the event
  is kept, and ``context.withheld`` lists the paths that were removed.

The consent is read from the event's own
``context.consent.categoryPreferences`` (the Segment consent convention,
which the SDKs' consent plugins stamp on every event): it must be ``true``.
A profile's earlier consent is not enough, because the decision is taken
before the event is stored, and the event is the customer's latest word.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from rapport.core.model import Event, Rejection

CONSENT_REQUIRED = "consent_required"


@dataclass(frozen=True)
class ConsentRules:
    events: Mapping[str, str] = field(default_factory=dict)
    """Track event name -> the consent category it needs."""
    fields: Mapping[str, str] = field(default_factory=dict)
    """Dotted path (``context.location``, ``properties.latitude``) -> category."""

    def __bool__(self) -> bool:
        return bool(self.events or self.fields)


_ROOTS = ("context", "properties", "traits")


def check_rules(rules: ConsentRules) -> None:
    """Raise ``ValueError`` naming a field path Rapport cannot withhold."""
    for path in rules.fields:
        root, _, rest = path.partition(".")
        if root not in _ROOTS or not rest:
            raise ValueError(
                f"consent_required_fields: {path!r} must start with one of {', '.join(_ROOTS)} "
                "and name a field under it"
            )


def granted(event: Event, category: str) -> bool:
    consent = event.context.get("consent")
    if not isinstance(consent, dict):
        return False
    prefs = consent.get("categoryPreferences")
    return isinstance(prefs, dict) and prefs.get(category) is True


def apply_consent_rules(
    events: list[Event], rules: ConsentRules, *, indexes: list[int] | None = None
) -> tuple[list[Event], list[Rejection]]:
    """The events to keep (fields withheld where needed) and the refused ones' rejections.

    ``indexes`` are the events' positions in the request (for the rejection's
    ``index`` and field path); None for a single call.
    """
    if not rules:
        return events, []
    kept: list[Event] = []
    rejections: list[Rejection] = []
    for position, event in enumerate(events):
        needed = rules.events.get(event.event or "") if event.type == "track" else None
        if needed is not None and not granted(event, needed):
            index = None if indexes is None else indexes[position]
            prefix = "" if index is None else f"batch.{index}."
            rejections.append(
                Rejection(
                    workspace_id=event.workspace_id,
                    received_at=event.received_at,
                    code=CONSENT_REQUIRED,
                    message=(
                        f"'{event.event}' is kept only with consent '{needed}' in "
                        "context.consent.categoryPreferences; it was not stored"
                    ),
                    field=f"{prefix}context.consent.categoryPreferences.{needed}",
                    index=index,
                    message_id=event.message_id,
                    source=event.source,
                    payload="",  # what needed consent is not kept, not even here
                )
            )
            continue
        kept.append(_withhold_fields(event, rules.fields))
    return kept, rejections


def _withhold_fields(event: Event, fields: Mapping[str, str]) -> Event:
    withheld: list[str] = []
    roots: dict[str, dict[str, Any]] = {}
    for path, category in fields.items():
        if granted(event, category):
            continue
        root, _, rest = path.partition(".")
        source = roots.get(root, getattr(event, root))
        copy = _without(source, rest.split("."))
        if copy is not None:
            roots[root] = copy
            withheld.append(path)
    if not withheld:
        return event
    context = roots.get("context", event.context)
    context = {**context, "withheld": sorted(withheld)}
    return msgspec.structs.replace(event, **{**roots, "context": context})


def _without(node: dict[str, Any], parts: list[str]) -> dict[str, Any] | None:
    """A copy of ``node`` without the field at ``parts``; None if it has no such field."""
    head, rest = parts[0], parts[1:]
    if head not in node:
        return None
    if not rest:
        return {k: v for k, v in node.items() if k != head}
    child = node[head]
    if not isinstance(child, dict):
        return None
    inner = _without(child, rest)
    return None if inner is None else {**node, head: inner}
