"""When date and schedule triggers fire, and the internal events that carry an entry.

Date and schedule triggers, and business events fanned out to a customer,
reach the engine as ordinary events addressed to one profile, so every
entry happens in that profile's order (``rapport.runtime.journey_triggers``
writes them). This module names those events, reads who they are meant
for, and computes the instants (pure arithmetic, the customer's zone):

* ``date_trigger_instant``: the next instant a date trigger gives after now;
* ``next_run``: the next run of a schedule strictly after an instant.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rapport.core.journeys.model import DateTrigger, Schedule, TimeZoneRule
from rapport.core.journeys.timing import date_instant, local_instant, zone_of
from rapport.core.model import Event

JOURNEY_SOURCE = "rapport:journeys"
"""Source of the events journeys address to a profile (timers, updates, entries)."""
BUSINESS_SOURCE = "rapport:business"
"""Source of a business event's copy addressed to one customer it concerns."""
DATE_REACHED = "Journey Date Reached"
"""A date trigger's instant came for her (properties: journey_id, version, trigger, value)."""
SCHEDULED_ENTRY = "Journey Scheduled Entry"
"""A schedule ran and she is in its audience (properties: journey_id, version, trigger, run_at)."""
DATE_SYNC = "Journey Date Sync"
"""Compute her date-trigger timers (sent to existing profiles when a journey is published)."""
RESUMED = "Journey Resumed"
"""The journey was resumed: give her paused instances their timers back (``on_resume``)."""
FAN_OUT_CONTEXT = "rapport_fan_out"
"""Key of a business event copy's context: ``{"journeys": [ids], "message_id": original}``."""


def addressed(event: Event, name: str, journey_id: str, version: int, index: int) -> bool:
    """Whether ``event`` is the internal event ``name`` for this trigger of this version."""
    props = event.properties
    return (
        event.source == JOURNEY_SOURCE
        and event.event == name
        and props.get("journey_id") == journey_id
        and props.get("version") == version
        and props.get("trigger") == index
    )


def business_copy_for(event: Event, journey_id: str) -> bool:
    """Whether ``event`` is a business event's copy fanned out for journey ``journey_id``."""
    if event.source != JOURNEY_SOURCE or event.profile_id is None:
        return False
    fan_out = event.context.get(FAN_OUT_CONTEXT)
    return isinstance(fan_out, dict) and journey_id in (fan_out.get("journeys") or ())


def trait_value(traits: dict[str, Any], path: str) -> Any:
    """The value at a dotted trait path (``subscription.renews_at``), or None."""
    head, *rest = path.split(".")
    value = traits.get(head)
    for part in rest:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def date_trigger_instant(
    trigger: DateTrigger, value: Any, zone_trait: Any, rule: TimeZoneRule, now: datetime
) -> datetime | None:
    """The instant the trigger fires for a trait ``value``, if one is strictly after ``now``."""
    instant = date_instant(
        value,
        now=now,
        zone=zone_of(zone_trait, rule),
        at=trigger.at,
        yearly=trigger.yearly,
        offset=trigger.offset,
    )
    return instant if instant is not None and instant > now else None


def next_run(schedule: Schedule, after: datetime, default_zone: str) -> datetime | None:
    """The first run of ``schedule`` strictly after ``after``; None when it runs no more."""
    if schedule.once is not None:
        return schedule.once if schedule.once > after else None
    zone = zone_of(schedule.time_zone, TimeZoneRule(default=default_zone))
    at = schedule.at or time(0)
    today = after.astimezone(zone).date()
    found: datetime | None = None
    if schedule.every == "day":
        found = _first_after(after, (today + timedelta(days=d) for d in range(3)), at, zone)
    elif schedule.every == "week":
        days = (today + timedelta(days=d) for d in range(9))
        allowed = set(schedule.days) or set(range(7))
        found = _first_after(after, (d for d in days if d.weekday() in allowed), at, zone)
    elif schedule.every == "month":
        wanted = schedule.day or 1
        months = [_add_months(today.replace(day=1), m) for m in range(3)]
        found = _first_after(after, (_day_in_month(m, wanted) for m in months), at, zone)
    if found is None or (schedule.until is not None and found > schedule.until):
        return None
    return found


def _first_after(after: datetime, days: Any, at: time, zone: ZoneInfo) -> datetime | None:
    for day in days:
        candidate = local_instant(day, at, zone)
        if candidate > after:
            return candidate
    return None


def _add_months(first: date, months: int) -> date:
    index = first.month - 1 + months
    return date(first.year + index // 12, index % 12 + 1, 1)


def _day_in_month(first: date, day: int) -> date:
    """Day ``day`` of the month of ``first``; a shorter month gives its last day."""
    last = calendar.monthrange(first.year, first.month)[1]
    return first.replace(day=min(day, last))
