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
segments reading it), at the processor's clock. A page whose job was replaced
meanwhile (a newer version of the definition) is dropped: the new job walks
everything again under the new rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rapport.core.backfill import BackfillJob, advance_backfill
from rapport.core.clock import Clock
from rapport.core.model import Profile
from rapport.core.segments import MembershipChange, reevaluate_segments
from rapport.runtime.working_set import SegmentCatalogs
from rapport.storage.base import Storage

DEFAULT_PAGE_SIZE = 1000


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
        current = catalog.versions.get(job.segment_id)
        if current is not None and current > job.version:
            # Replaced under our feet: the newer version's job walks instead.
            return None
        now = self._clock.now()
        profiles = await self._storage.scan_profiles(job.workspace_id, job.cursor, self.page_size)
        page = BackfillPage(job)
        position = catalog.position.get(job.segment_id)
        timed = position is not None and catalog.segments[position].condition.time_dependent
        entered = exited = 0
        for profile in profiles:
            updated, changes = reevaluate_segments(catalog, profile, (job.segment_id,), now)
            if timed or updated is not profile:
                page.profiles.append(updated)
                page.originals[profile.id] = profile
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
