"""One processing step's reads and writes, around what the processor does per event.

The processor (``processor``: the step itself) processes a batch of log
entries in memory. Before the events, ``load_step_states`` gathers in one go
the owners and profiles every event of the batch may need (``working_set``);
after them, ``step_batch`` turns what the events did -- the working set's
changes, the events placed on timelines, the merges, the events emitted to
the outbox, the timers -- into the one ``ProcessingBatch`` the step commits.
A ``Step`` is that batch with what the processor keeps beside it until the
commit is durable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime

from rapport.core.computed_traits import ComputedTraitCatalog
from rapport.core.identity import EventClaims, IdentityRules, alias_candidates
from rapport.core.model import (
    Event,
    Identifier,
    LogEntry,
    MergeRecord,
    Profile,
    ProfileEvent,
    Rejection,
    ScheduledEvent,
)
from rapport.core.segments import SegmentCatalog
from rapport.runtime.journey_effects import JourneyWork
from rapport.runtime.profile_cache import ProfileCache
from rapport.runtime.segment_effects import OUTBOX_KEY_PREFIX, schedule_timers
from rapport.runtime.working_set import WorkspaceState, load_states
from rapport.storage.base import ProcessingBatch, Storage


@dataclass
class Placed:
    entry: LogEntry
    profile_id: str
    body: bytes


@dataclass
class Step:
    """One batch of log entries, processed and ready to commit."""

    after: int
    """The offset the step starts after."""
    consumed: int
    batch: ProcessingBatch
    failures: list[Rejection]
    states: dict[str, WorkspaceState]
    journeys: JourneyWork


async def load_step_states(
    storage: Storage,
    cache: ProfileCache,
    rules: IdentityRules,
    scanned: Sequence[tuple[LogEntry, EventClaims]],
    previous: dict[str, WorkspaceState],
    quiet: AbstractSet[int] = frozenset(),
) -> dict[str, WorkspaceState]:
    """Owners and profiles of everything the batch mentions, per workspace.

    ``quiet``: the offsets of membership events nothing reads
    (``segment_effects.quiet``), which need their profile to exist, not its
    document.
    """
    lookups: dict[str, dict[Identifier, None]] = {}
    addressed: dict[str, set[str]] = {}
    named: dict[str, set[str]] = {}
    for entry, claims in scanned:
        ws = entry.event.workspace_id
        wanted = lookups.setdefault(ws, {})
        if claims.identifiers:
            wanted.update(dict.fromkeys(claims.identifiers))
        if entry.event.type == "alias":
            wanted.update(dict.fromkeys(alias_candidates(entry.event, rules)))
        if claims.profile_id is not None:
            (named if entry.offset in quiet else addressed).setdefault(ws, set()).add(
                claims.profile_id
            )
    return await load_states(storage, cache, lookups, addressed, previous, named)


def step_batch(
    *,
    consumer: str,
    offset: int,
    now: datetime,
    states: dict[str, WorkspaceState],
    catalogs: Mapping[str, SegmentCatalog],
    computed: Mapping[str, ComputedTraitCatalog],
    journeys: JourneyWork,
    loaded: Mapping[str, dict[str, Profile]],
    refreshed: AbstractSet[str],
    placed: Sequence[Placed],
    merges: list[MergeRecord],
    emitted: Sequence[Event],
    cancelled: list[tuple[str, str]],
) -> ProcessingBatch:
    """The batch a step built at ``now`` commits, ``consumer`` moving to ``offset``.

    ``loaded`` holds the profiles as they were when their timers were last
    computed, ``refreshed`` the profiles whose time-dependent memberships
    were evaluated at ``now`` (``segment_effects.schedule_timers``);
    ``cancelled`` the timers of profiles merged away.
    """
    batch = ProcessingBatch(consumer=consumer, offset=offset, merges=merges)
    batch.scheduled = [
        ScheduledEvent(
            workspace_id=event.workspace_id,
            key=OUTBOX_KEY_PREFIX + event.message_id,
            due_at=now,
            event=event,
        )
        for event in emitted
    ]
    batch.unscheduled = cancelled
    journeys.fill(batch)
    for ws, state in states.items():
        known = {p: loaded[ws][p] for p in loaded[ws].keys() - refreshed}
        schedule_timers(state, catalogs[ws], known, batch, now, computed[ws])
    for item in placed:
        event = item.entry.event
        batch.events.append(
            ProfileEvent(
                workspace_id=event.workspace_id,
                profile_id=states[event.workspace_id].live(item.profile_id),
                offset=item.entry.offset,
                message_id=event.message_id,
                type=event.type,
                name=event.event if event.event is not None else event.name,
                timestamp=event.timestamp,
                received_at=event.received_at,
                body=item.body,
            )
        )
    for state in states.values():
        ws = state.workspace_id
        batch.identifiers.extend(
            (ws, ident, state.owners[ident]) for ident in sorted(state.changed_identifiers)
        )
        batch.profiles.extend(state.profiles[p] for p in sorted(state.changed_profiles))
    return batch
