"""What a processing step does for segments besides evaluating them: events and timers.

The core (``core.segments``) says which memberships change and when time
alone may next change one; this module turns that into what the processor
stores with its step (see ``processor`` for the step itself):

* each membership change becomes an internal ``Segment Entered`` /
  ``Segment Exited`` track event (source ``rapport:segments``) addressed to
  the profile, written to the outbox with the step (the relay appends it to
  the log); a merge makes the absorbed profile leave its segments;
* each profile the step changed gets one scheduled row (key
  ``segments:<profile id>``) for the earliest instant time may change one of
  its memberships, moved or deleted when that instant moves; when due, the
  relay delivers it as a ``Segment Timer Due`` track event (source
  ``rapport:timers``), handled by ``on_timer``;
* membership events address their profile by id and carry no identifier:
  ``settled`` tells the processor where one lands without resolving identity;
* in a workspace where nothing reads them (``quiet``), a membership event
  changes nothing but its profile's timeline: the processor places it there
  without loading the profile (``quiet_target``).

Message ids derive from what caused the event (the triggering log offset,
the profile and instant of a timer), so a replayed step emits nothing twice.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
import structlog

from rapport.core.computed_traits import ComputedTraitCatalog, refresh_computed_traits
from rapport.core.identity import EventClaims, Resolution
from rapport.core.model import Event, LogEntry, Profile, ScheduledEvent
from rapport.core.segment_timers import next_membership_change
from rapport.core.segments import (
    MembershipChange,
    SegmentCatalog,
    refresh_memberships,
    update_memberships,
)
from rapport.runtime.journey_catalogs import JourneyCatalog
from rapport.runtime.working_set import WorkspaceState
from rapport.storage.base import ProcessingBatch

log = structlog.get_logger("rapport.processor")

SEGMENT_EVENT_SOURCE = "rapport:segments"
SEGMENT_ENTERED = "Segment Entered"
SEGMENT_EXITED = "Segment Exited"
TIMER_EVENT_SOURCE = "rapport:timers"
SEGMENT_TIMER = "Segment Timer Due"
OUTBOX_KEY_PREFIX = "outbox:"
SEGMENT_TIMER_KEY_PREFIX = "segments:"


def settled(event: Event, claims: EventClaims, state: WorkspaceState) -> Resolution | None:
    """What ``resolve`` decides for an event addressing a known profile by id alone.

    Membership events name their profile and carry no identifier: ``resolve``
    would land them on that profile (or the one it was merged into), attach
    nothing and merge nothing. ``None`` for every other event (and when the
    profile is not in the working set: ``resolve`` then decides).
    """
    if claims.identifiers or claims.profile_id is None or event.type == "alias":
        return None
    profile = state.profiles.get(state.live(claims.profile_id))
    if profile is None:
        return None
    return Resolution(
        profile_id=profile.id, created=False, attached=(), merges=(), refused=claims.refused
    )


def quiet(catalog: SegmentCatalog, journeys: JourneyCatalog) -> bool:
    """Whether membership events can change nothing in the workspace but the timelines.

    Nothing reads them when no aggregate counts them (segments' or running
    journeys') and there is no journey at all (a journey's trigger, waits
    and conditions may name them; instances of any version may be in
    flight). Computed traits never count internal events. The memberships
    themselves are already on the profile: the event records them.

    What the full processing would still do for such an event is left to
    the profile's next event or timer: re-evaluating memberships recorded
    under a definition's older version (a backfill of that definition does
    it too) and an overdue timer's refresh (its own event is on the way).
    """
    counted = catalog.aggregators_by_event
    return not journeys.any_journey and not counted.keys() & (SEGMENT_ENTERED, SEGMENT_EXITED)


def is_membership_event(event: Event, claims: EventClaims) -> bool:
    """A ``Segment Entered`` / ``Exited`` event naming its profile and nothing else."""
    return (
        event.source == SEGMENT_EVENT_SOURCE
        and event.type == "track"
        and event.event in (SEGMENT_ENTERED, SEGMENT_EXITED)
        and claims.profile_id is not None
        and not claims.identifiers
    )


def quiet_target(event: Event, claims: EventClaims, state: WorkspaceState) -> str | None:
    """The live profile a membership event of a quiet workspace lands on, if known to exist.

    ``None`` for any other event, and when the profile is not in the working
    set (loaded or ``present``): the full processing decides then.
    """
    if not is_membership_event(event, claims):
        return None
    profile_id = state.live(claims.profile_id or "")
    if profile_id in state.present or profile_id in state.profiles:
        return profile_id
    return None


def on_timer(
    entry: LogEntry,
    state: WorkspaceState,
    catalog: SegmentCatalog,
    computed: ComputedTraitCatalog | None,
    refreshed: set[str],
    now: datetime,
) -> list[Event]:
    """Handle a profile's timer: bring what time changed up to date; return the membership events.

    Windowed computed traits (``orders_90d``) are refreshed first, and the
    segments reading a trait that changed re-evaluated; then the
    time-dependent segments. The profile is added to ``refreshed`` (its next
    timer is computed in full).
    """
    event = entry.event
    profile = state.profiles.get(state.live(event.profile_id or ""))
    if profile is None:
        # Its profile is gone (erased): nothing to evaluate, nothing to store.
        log.info("timers.unknown_profile", workspace_id=event.workspace_id, offset=entry.offset)
        return []
    changes: list[MembershipChange] = []
    if computed is not None:
        decayed = refresh_computed_traits(computed, profile, now)
        if decayed is not profile:
            profile, changes = update_memberships(catalog, profile, decayed, event, now)
    profile, timed = refresh_memberships(catalog, profile, now)
    changes.extend(timed)
    state.profiles[profile.id] = profile
    state.changed_profiles.add(profile.id)
    refreshed.add(profile.id)
    return [membership_event(entry, profile.id, change, now) for change in changes]


def schedule_timers(
    state: WorkspaceState,
    catalog: SegmentCatalog,
    known: dict[str, Profile],
    batch: ProcessingBatch,
    now: datetime,
    computed: ComputedTraitCatalog | None = None,
) -> None:
    """Move, set or cancel the timer of every profile the step changed.

    One timer per profile: the earliest instant at which time alone may
    change one of its memberships or one of its windowed computed traits.

    ``known``: profiles as the step found them, whose timer was computed
    then (the others -- new, merged, re-evaluated for time -- get a full
    computation).
    """
    ws = state.workspace_id
    for profile_id in sorted(state.changed_profiles):
        profile = state.profiles[profile_id]
        # No computed trait, nothing decays: not asked (it converts ``now`` and
        # reads the profile's due states to find that out).
        decays = computed.next_change(profile, now) if computed else None
        if profile.segment_timer_at is None and not catalog.time_bounds and decays is None:
            continue
        try:
            # ``known`` carries its last answer, a lower bound for the
            # segments unchanged since: still one when it came from a trait.
            due = next_membership_change(
                catalog, profile, now, known.get(profile_id), state.settled_for(profile)
            )
            if decays is not None and (due is None or decays < due):
                due = decays
        except Exception as exc:  # a timer must not cost the step: the old one stays
            log.error(
                "timers.schedule_failed", workspace_id=ws, profile_id=profile_id, exc_info=exc
            )
            continue
        if due == profile.segment_timer_at:
            continue
        state.profiles[profile_id] = msgspec.structs.replace(profile, segment_timer_at=due)
        key = timer_key(profile_id)
        if due is None:
            batch.unscheduled.append((ws, key))
        else:
            timer = timer_event(ws, profile_id, key, due)
            batch.scheduled.append(
                ScheduledEvent(workspace_id=ws, key=key, due_at=due, event=timer)
            )


def membership_event(
    trigger: LogEntry, profile_id: str, change: MembershipChange, now: datetime
) -> Event:
    """The internal event telling that a profile entered or left a segment.

    Its message id derives from the triggering event's log offset, so a
    replayed step emits the same ids and the log keeps one of each.
    """
    direction = "entered" if change.entered else "exited"
    return Event(
        workspace_id=trigger.event.workspace_id,
        message_id=f"segment-{direction}:{trigger.offset}:{change.segment_id}",
        type="track",
        event=SEGMENT_ENTERED if change.entered else SEGMENT_EXITED,
        timestamp=now,
        received_at=now,
        source=SEGMENT_EVENT_SOURCE,
        properties={"segment_id": change.segment_id, "version": change.version},
        profile_id=profile_id,
    )


def merged_away_events(
    trigger: LogEntry, loser: Profile, winner_id: str, now: datetime
) -> list[Event]:
    """``Segment Exited`` for each segment ``loser`` was in, addressed to ``loser``'s id.

    Whoever tracks memberships by profile id sees every entry matched by an
    exit of the same id; the merged profile enters, under its own id, the
    segments it matches. ``merged_into`` tells such an exit from a real one.
    """
    return [
        Event(
            workspace_id=trigger.event.workspace_id,
            message_id=f"segment-exited:{trigger.offset}:{segment_id}:{loser.id}",
            type="track",
            event=SEGMENT_EXITED,
            timestamp=now,
            received_at=now,
            source=SEGMENT_EVENT_SOURCE,
            properties={
                "segment_id": segment_id,
                "version": membership.version,
                "merged_into": winner_id,
            },
            profile_id=loser.id,
        )
        for segment_id, membership in sorted(loser.segments.items())
    ]


def timer_key(profile_id: str) -> str:
    return SEGMENT_TIMER_KEY_PREFIX + profile_id


def timer_event(workspace_id: str, profile_id: str, key: str, due: datetime) -> Event:
    """The event a profile's segment timer delivers at ``due``.

    Its message id names the profile and the instant, so delivering it
    twice appends it once.
    """
    return Event(
        workspace_id=workspace_id,
        message_id=f"timer:{key}:{due.isoformat()}",
        type="track",
        event=SEGMENT_TIMER,
        timestamp=due,
        received_at=due,
        source=TIMER_EVENT_SOURCE,
        properties={"timer": key},
        profile_id=profile_id,
    )
