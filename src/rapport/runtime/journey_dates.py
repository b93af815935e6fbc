"""Date triggers: one timer per (profile, journey trigger), kept in step with her date trait.

The processor's journey part (``journey_effects.JourneyWork.on_event``)
calls ``date_rows`` for every event it hands the engine. For each date
trigger of the journeys taking entries, the timer is computed again when
the event concerns it:

* the event wrote the trait (or the time zone trait) -- its ``message_id``
  is the one the trait value records -- or merged profiles;
* it is that trigger's own ``Journey Date Reached`` event (a yearly trigger
  then gets next year's instant, another one none);
* it is a ``Journey Date Sync`` for that journey (sent to existing profiles
  when the journey is published, ``journey_triggers``).

The timer is a scheduled row keyed ``journey-date:<journey>:<trigger>:<profile>``
holding a ``Journey Date Reached`` event addressed to her (source
``rapport:journeys``, properties journey, version, trigger and the trait
value it was computed from); a changed value replaces the row, a removed
one (or an instant already past) deletes it. The engine lets her in when it
arrives if the value is still hers (``engine._fires``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from rapport.core.journeys.compiled import CompiledJourney
from rapport.core.journeys.model import DateTrigger
from rapport.core.journeys.triggers import (
    DATE_REACHED,
    DATE_SYNC,
    JOURNEY_SOURCE,
    addressed,
    date_trigger_instant,
    trait_value,
)
from rapport.core.model import Event, Profile, ScheduledEvent

KEY_PREFIX = "journey-date:"

Row = tuple[str, ScheduledEvent | None]
"""``(key, row)``: the row to store under ``key``, or None to delete it."""


def date_key(journey_id: str, index: int, profile_id: str) -> str:
    return f"{KEY_PREFIX}{journey_id}:{index}:{profile_id}"


def date_rows(
    ws: str,
    journeys: Iterable[CompiledJourney],
    profile: Profile,
    event: Event,
    now: datetime,
    *,
    losers: Sequence[str] = (),
) -> list[Row]:
    """The date timers ``event`` (applied to ``profile``) makes her have (see the module doc).

    ``losers``: profiles the event merged into her; their timers are deleted
    and hers computed again from the merged traits.
    """
    rows: list[Row] = []
    values: dict[str, object] | None = None
    for journey in journeys:
        if not journey.entry or journey.status != "published":
            continue
        definition = journey.journey
        for index, trigger in enumerate(definition.triggers):
            if not isinstance(trigger, DateTrigger):
                continue
            rows.extend((date_key(journey.id, index, loser), None) for loser in losers)
            if not (losers or _concerns(journey, index, trigger, profile, event)):
                continue
            if values is None:
                values = {name: trait.value for name, trait in profile.traits.items()}
            value = trait_value(values, trigger.trait)
            zone = values.get(definition.time_zone.trait)
            instant = date_trigger_instant(trigger, value, zone, definition.time_zone, now)
            key = date_key(journey.id, index, profile.id)
            if instant is None:
                rows.append((key, None))
                continue
            due = Event(
                workspace_id=ws,
                message_id=(
                    f"journey-date:{journey.id}:v{journey.version}:{index}:{profile.id}"
                    f":{instant.isoformat()}"
                ),
                type="track",
                event=DATE_REACHED,
                timestamp=instant,
                received_at=instant,
                source=JOURNEY_SOURCE,
                properties={
                    "journey_id": journey.id,
                    "version": journey.version,
                    "trigger": index,
                    "value": value,
                },
                profile_id=profile.id,
            )
            rows.append((key, ScheduledEvent(workspace_id=ws, key=key, due_at=instant, event=due)))
    return rows


def _concerns(
    journey: CompiledJourney, index: int, trigger: DateTrigger, profile: Profile, event: Event
) -> bool:
    if event.source == JOURNEY_SOURCE and event.event == DATE_SYNC:
        return event.properties.get("journey_id") == journey.id
    if addressed(event, DATE_REACHED, journey.id, journey.version, index):
        return True
    for name in (trigger.trait.split(".")[0], journey.journey.time_zone.trait):
        trait = profile.traits.get(name)
        if trait is not None and trait.message_id == event.message_id:
            return True
    return False
