"""A business event's fan-out: the customers it concerns, one copy addressed to each.

A business event (``POST /v1/business-events``, ``api.business_events``) is
logged once, by its message id, with source ``rapport:business`` and no
profile: the processor leaves it alone. The journey-trigger consumer
(``journey_triggers``) hands it to ``fan_out``, which, for every journey
taking entries whose ``business_event`` trigger names it (and whose
``where`` it passes), finds the customers the trigger's ``to`` names:

* ``identifier``: the owner of identifier ``(type, value of field)``, as the
  identity graph knows it (the value normalised like an incoming one);
* ``event``: everyone whose timeline holds an event ``event`` (passing
  ``where``, no older than ``window`` before the business event) whose
  ``match`` fields equal the business event's -- read page by page in time
  order through ``Storage.events_by_name``;
* ``segment``: every current member, page by page from the membership index.

Each gets a copy: the business event's name, timestamp and properties,
source ``rapport:journeys``, addressed to her, with message id
``business:<message id>:<journey>:<profile>`` (a fan-out walked again after
a crash appends nothing twice) and the journey in its context. The
processor delivers it in her order; the engine lets her in (``engine._fires``)
and her waits and exits see it like her own events. Memory stays bounded:
one page at a time, plus the ids already reached by an event fan-out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import msgspec

from rapport.core.conditions.fields import event_field, key_text
from rapport.core.identity import IdentityRules, parse_identifier
from rapport.core.journeys.compiled import CompiledJourney, event_filter
from rapport.core.journeys.model import (
    BusinessEventTrigger,
    EventFanOut,
    IdentifierFanOut,
    SegmentFanOut,
)
from rapport.core.journeys.triggers import BUSINESS_SOURCE, FAN_OUT_CONTEXT, JOURNEY_SOURCE
from rapport.core.model import Event, Identifier
from rapport.storage.base import EventLog, Storage

PAGE_SIZE = 1000

_decode_event = msgspec.json.Decoder(Event).decode


def is_business_event(event: Event) -> bool:
    """The logged business event itself (not a copy addressed to a customer)."""
    return event.source == BUSINESS_SOURCE and event.profile_id is None


async def fan_out(
    storage: Storage,
    log: EventLog,
    rules: IdentityRules,
    journeys: Sequence[CompiledJourney],
    event: Event,
    now: datetime,
    page_size: int = PAGE_SIZE,
) -> int:
    """Append a copy of ``event`` for each customer each journey's trigger names.

    Returns how many copies were new in the log.
    """
    appended = 0
    for journey in journeys:
        if not journey.entry or journey.status != "published":
            continue
        for index, trigger in enumerate(journey.journey.triggers):
            if not isinstance(trigger, BusinessEventTrigger) or trigger.event != event.event:
                continue
            if not journey.passes(f"$.triggers[{index}].where", event):
                continue
            async for page in _concerned(storage, rules, trigger, event, page_size):
                copies = [_copy(event, journey.id, profile_id, now) for profile_id in page]
                if copies:
                    appended += sum(await log.append(copies))
            break  # one copy per customer and journey, whichever trigger found her
    return appended


async def _concerned(
    storage: Storage,
    rules: IdentityRules,
    trigger: BusinessEventTrigger,
    event: Event,
    page_size: int,
) -> AsyncIterator[list[str]]:
    ws = event.workspace_id
    to = trigger.to
    if isinstance(to, IdentifierFanOut):
        value = key_text(event_field(to.field)(event))
        if value is None:
            return
        identifier = parse_identifier(to.identifier_type, value, rules)
        if not isinstance(identifier, Identifier):
            return
        owners = await storage.find_profile_ids(ws, [identifier])
        yield sorted(set(owners.values()))
    elif isinstance(to, SegmentFanOut):
        after: str | None = None
        while True:
            members = await storage.list_segment_members(ws, to.segment, page_size, after)
            ids = [m.profile_id for m in members.members]
            if ids:
                yield ids
            if members.next_after is None:
                return
            after = members.next_after
    elif isinstance(to, EventFanOut):
        async for ids in _event_fan_out(storage, to, event, page_size):
            yield ids


async def _event_fan_out(
    storage: Storage, to: EventFanOut, event: Event, page_size: int
) -> AsyncIterator[list[str]]:
    wanted = [
        (event_field(theirs), key_text(event_field(ours)(event))) for theirs, ours in to.match
    ]
    if any(value is None for _, value in wanted):
        return  # the business event lacks a field to match: it concerns nobody
    passes = event_filter(to.where) if to.where else None
    since = None if to.window is None else event.timestamp - to.window
    reached: set[str] = set()
    cursor: tuple[datetime, int] | None = None
    while True:
        rows = await storage.events_by_name(event.workspace_id, to.event, since, cursor, page_size)
        page: list[str] = []
        for row in rows:
            if row.profile_id in reached:
                continue
            theirs = _decode_event(row.body)
            if passes is not None and not passes(theirs):
                continue
            if all(key_text(read(theirs)) == value for read, value in wanted):
                reached.add(row.profile_id)
                page.append(row.profile_id)
        if page:
            yield page
        if len(rows) < page_size:
            return
        cursor = (rows[-1].timestamp, rows[-1].offset)


def _copy(event: Event, journey_id: str, profile_id: str, now: datetime) -> Event:
    return Event(
        workspace_id=event.workspace_id,
        message_id=f"business:{event.message_id}:{journey_id}:{profile_id}",
        type="track",
        event=event.event,
        timestamp=event.timestamp,
        received_at=now,
        source=JOURNEY_SOURCE,
        properties=event.properties,
        context={
            FAN_OUT_CONTEXT: {
                "journeys": [journey_id],
                "message_id": event.message_id,
                "by": event.context.get("rapport_sent_by"),
            }
        },
        profile_id=profile_id,
    )
