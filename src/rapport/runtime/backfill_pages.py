"""The commit of one backfill page, as the processor makes it between two steps.

``runtime.backfill`` walks a page of profiles through a new or changed
definition (a segment or a computed trait); the processor commits what the
page changed the way it commits a step that consumes nothing (its offset
does not move): the changed profiles, one membership event per change in the
outbox, and the timers of the walked profiles (``segment_effects``). Then it
records the job's progress, so a crash in between replays the page, which
changes nothing twice: the events' message ids name the job and the profile
(``backfill_event``).
"""

from __future__ import annotations

from datetime import datetime

import structlog

from rapport.core.backfill import SEGMENT, BackfillJob
from rapport.core.model import Event, ScheduledEvent
from rapport.core.segments import MembershipChange
from rapport.runtime.aggregate_catalogs import AggregateCatalogs
from rapport.runtime.backfill import BackfillPage
from rapport.runtime.computed_catalogs import ComputedTraitCatalogs
from rapport.runtime.segment_effects import (
    OUTBOX_KEY_PREFIX,
    SEGMENT_ENTERED,
    SEGMENT_EVENT_SOURCE,
    SEGMENT_EXITED,
    schedule_timers,
)
from rapport.runtime.working_set import WorkspaceState
from rapport.storage.base import ProcessingBatch

log = structlog.get_logger("rapport.processor")


async def page_batch(
    page: BackfillPage,
    consumer: str,
    offset: int,
    catalogs: AggregateCatalogs,
    computed_catalogs: ComputedTraitCatalogs,
) -> tuple[ProcessingBatch, WorkspaceState]:
    """What committing ``page`` writes (at ``consumer``'s unchanged ``offset``).

    Also the page's working set, for the processor's cache once committed.
    """
    job = page.job
    now = job.updated_at
    ws = job.workspace_id
    state = WorkspaceState(ws)
    for profile in page.profiles:
        state.profiles[profile.id] = profile
        state.changed_profiles.add(profile.id)
    batch = ProcessingBatch(consumer=consumer, offset=offset)
    for profile, change in page.changes:
        event = backfill_event(job, profile.id, change, now)
        batch.scheduled.append(
            ScheduledEvent(
                workspace_id=ws,
                key=OUTBOX_KEY_PREFIX + event.message_id,
                due_at=now,
                event=event,
            )
        )
    catalog = (await catalogs.for_workspaces([ws]))[ws]
    computed = (await computed_catalogs.for_workspaces([ws]))[ws]
    schedule_timers(state, catalog, {}, batch, now, computed)
    batch.profiles = [
        profile
        for profile_id, profile in sorted(state.profiles.items())
        if profile is not page.originals.get(profile_id)
    ]
    return batch, state


def backfill_event(
    job: BackfillJob, profile_id: str, change: MembershipChange, now: datetime
) -> Event:
    """The membership event of a change a backfill made.

    Its message id names the job (segment or computed trait, and version),
    the segment that changed (the job's or one reading it) and the profile:
    a page walked again emits nothing twice. ``backfill`` tells it from a
    live change.
    """
    direction = "entered" if change.entered else "exited"
    subject = job.segment_id if job.kind == SEGMENT else f"{job.kind}:{job.segment_id}"
    return Event(
        workspace_id=job.workspace_id,
        message_id=(
            f"segment-{direction}:backfill:{subject}:{job.version}:{change.segment_id}:{profile_id}"
        ),
        type="track",
        event=SEGMENT_ENTERED if change.entered else SEGMENT_EXITED,
        timestamp=now,
        received_at=now,
        source=SEGMENT_EVENT_SOURCE,
        properties={"segment_id": change.segment_id, "version": change.version, "backfill": True},
        profile_id=profile_id,
    )


def log_done(job: BackfillJob) -> None:
    """Log a job the page finished."""
    log.info(
        "segments.backfill_done",
        workspace_id=job.workspace_id,
        kind=job.kind,
        segment_id=job.segment_id,
        version=job.version,
        profiles=job.processed,
        entered=job.entered,
        exited=job.exited,
    )
