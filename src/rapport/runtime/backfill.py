"""Walking existing profiles through new and changed segment definitions.

Every segment write starts a backfill job in storage (``rapport.core.backfill``).
The processor runs them: between two processing steps it asks the
``Backfiller`` for one page of the oldest running job, commits the page's
changed profiles and membership events the way it commits a step, then
records the job's progress. Running inside the processor is what keeps a
profile's writes in one place: a backfilled membership can neither be
overwritten by a step built on an older copy of the profile nor overwrite a
newer one.

A page is ``page_size`` profiles in id order after the job's cursor. Each is
evaluated with ``reevaluate_segments`` for the job's segment (and the
segments reading it), at the processor's clock. When the segment reads event
aggregates, their states are first rebuilt from the page's timelines (one
query per page, only the events they count, only as far back as the longest
window), so that the events that came before the definition count: streaming
only feeds an aggregate what arrives after it exists. A page whose job was replaced
meanwhile (a newer version of the definition) is dropped: the new job walks
everything again under the new rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from rapport.core.backfill import (
    BackfillJob,
    advance_backfill,
    history_window,
    rebuild_aggregates,
)
from rapport.core.clock import Clock
from rapport.core.model import Event, Profile
from rapport.core.segments import MembershipChange, reevaluate_segments
from rapport.runtime.working_set import SegmentCatalogs
from rapport.storage.base import Storage

DEFAULT_PAGE_SIZE = 1000

_decode_event = msgspec.json.Decoder(Event).decode


@dataclass
class BackfillPage:
    """One evaluated page of a job, ready to commit."""

    job: BackfillJob
    """The job as it stands once this page is committed."""
    profiles: list[Profile] = field(default_factory=list)
    """The profiles to store: those whose memberships changed, and every profile
    walked when the segment depends on time (its timer may have to move)."""
    originals: dict[str, Profile] = field(default_factory=dict)
    """Each of ``profiles`` as storage holds it."""
    changes: list[tuple[Profile, MembershipChange]] = field(default_factory=list)
    """Each membership change with the profile it happened to."""


class Backfiller:
    def __init__(
        self,
        storage: Storage,
        clock: Clock,
        catalogs: SegmentCatalogs,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._storage = storage
        self._clock = clock
        self._catalogs = catalogs
        self.page_size = page_size
        self._idle_at: int | None = None
        """The segments revision at which no job was left running."""

    async def next_page(self) -> BackfillPage | None:
        """The next page of the oldest running job; None when no job is running.

        Cheap when idle: jobs are only looked for again once a definition was
        written (``segments_revision`` moved) since none was found.
        """
        revision = await self._storage.segments_revision()
        if revision == self._idle_at:
            return None
        for job in await self._storage.running_backfills():
            page = await self._evaluate_page(job)
            if page is not None:
                return page
        self._idle_at = revision
        return None

    async def _evaluate_page(self, job: BackfillJob) -> BackfillPage | None:
        catalog = (await self._catalogs.for_workspaces([job.workspace_id]))[job.workspace_id]
        static = catalog.static.get(job.segment_id)
        current = catalog.versions.get(job.segment_id, None if static is None else static.version)
        if current is not None and current > job.version:
            # Replaced under our feet: the newer version's job walks instead.
            return None
        now = self._clock.now()
        if static is not None:
            # An uploaded list: its members come from uploads, which the
            # processor applies; there is nothing to walk.
            return BackfillPage(
                advance_backfill(
                    job, cursor=None, processed=0, entered=0, exited=0, finished=True, now=now
                )
            )
        profiles = await self._storage.scan_profiles(job.workspace_id, job.cursor, self.page_size)
        page = BackfillPage(job)
        position = catalog.position.get(job.segment_id)
        condition = None if position is None else catalog.segments[position].condition
        timed = condition is not None and condition.time_dependent
        histories: dict[str, list[Event]] = {}
        aggregators = {}
        if condition is not None and condition.aggregates and profiles:
            aggregators = {aid: catalog.aggregators[aid] for aid in condition.aggregates}
            names, since = history_window(condition.aggregates.values(), now)
            for stored in await self._storage.timeline_events(
                job.workspace_id, [p.id for p in profiles], names, since
            ):
                histories.setdefault(stored.profile_id, []).append(_decode_event(stored.body))
        entered = exited = 0
        for profile in profiles:
            original = profile
            if aggregators:
                profile = rebuild_aggregates(
                    profile, aggregators, histories.get(profile.id, ()), now
                )
            updated, changes = reevaluate_segments(catalog, profile, (job.segment_id,), now)
            if timed or updated is not original:
                page.profiles.append(updated)
                page.originals[profile.id] = original
            for change in changes:
                page.changes.append((updated, change))
                if change.segment_id == job.segment_id:
                    if change.entered:
                        entered += 1
                    else:
                        exited += 1
        page.job = advance_backfill(
            job,
            cursor=profiles[-1].id if profiles else None,
            processed=len(profiles),
            entered=entered,
            exited=exited,
            finished=len(profiles) < self.page_size,
            now=now,
        )
        return page
