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

Computed traits use the same jobs (kind ``computed_trait``) and the same
commit: a page rebuilds the trait's state on each profile from her timeline
(``rebuild_computed_trait``: only the events it counts, only as far back
as its window; a profile with none there is asked once more about older
ones, so that a customer whose last order is 100 days old gets
``orders_90d = 0``, as streaming would have given her, and one who never
ordered gets no value). A trait value the walk changes re-evaluates the
segments reading it, as a streaming change does; the timer of the profile
moves with the trait's new state. A job whose trait was deleted meanwhile
ends without walking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from rapport.core.backfill import (
    COMPUTED_TRAIT,
    BackfillJob,
    advance_backfill,
    history_window,
    rebuild_aggregates,
)
from rapport.core.clock import Clock
from rapport.core.computed_traits import feeds, history_request, rebuild_computed_trait
from rapport.core.model import Event, Profile
from rapport.core.segments import MembershipChange, reevaluate_segments
from rapport.runtime.computed_catalogs import ComputedTraitCatalogs
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
        computed: ComputedTraitCatalogs | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._storage = storage
        self._clock = clock
        self._catalogs = catalogs
        self._computed = computed or ComputedTraitCatalogs(storage)
        self.page_size = page_size
        self._idle_at: tuple[int, int] | None = None
        """The segments and computed-traits revisions at which no job was left running."""

    async def next_page(self) -> BackfillPage | None:
        """The next page of the oldest running job; None when no job is running.

        Cheap when idle: jobs are only looked for again once a definition was
        written (``segments_revision`` or ``computed_traits_revision`` moved)
        since none was found.
        """
        revision = (
            await self._storage.segments_revision(),
            await self._storage.computed_traits_revision(),
        )
        if revision == self._idle_at:
            return None
        for job in await self._storage.running_backfills():
            if job.kind == COMPUTED_TRAIT:
                page = await self._evaluate_trait_page(job)
            else:
                page = await self._evaluate_page(job)
            if page is not None:
                return page
        self._idle_at = revision
        return None

    async def _evaluate_trait_page(self, job: BackfillJob) -> BackfillPage | None:
        ws = job.workspace_id
        computed = (await self._computed.for_workspaces([ws]))[ws]
        current = computed.versions.get(job.segment_id)
        if current is not None and current != job.version:
            # Replaced under our feet: the newer version's job walks instead.
            return None
        now = self._clock.now()
        computation = computed.by_trait.get(job.segment_id)
        if computation is None:
            # Deleted since (nothing is maintained any more), or no longer
            # compiling (the catalogs report it): there is nothing to rebuild.
            return BackfillPage(
                advance_backfill(
                    job, cursor=None, processed=0, entered=0, exited=0, finished=True, now=now
                )
            )
        profiles = await self._storage.scan_profiles(ws, job.cursor, self.page_size)
        names, since = history_request(computation, now)
        histories = await self._histories(ws, [p.id for p in profiles], names, since)
        if since is not None:
            # Whether the quiet ones were ever fed (their value is then the
            # empty one, 0 orders in 90 days, rather than none).
            quiet = [
                p.id
                for p in profiles
                if not any(feeds(computed, computation, e) for e in histories.get(p.id, ()))
                and computation.state_id not in p.aggregates
                and not any(name in p.traits for name in computation.traits)
            ]
            histories.update(await self._histories(ws, quiet, names, None))
        catalog = (await self._catalogs.for_workspaces([ws]))[ws]
        page = BackfillPage(job)
        entered = exited = changed = 0
        for profile in profiles:
            rebuilt = rebuild_computed_trait(
                computed, computation, profile, histories.get(profile.id, ()), now
            )
            if rebuilt is profile:
                continue
            moved = [
                name
                for name in computation.traits
                if _value(rebuilt, name) != _value(profile, name)
            ]
            changes: list[MembershipChange] = []
            if moved:
                changed += 1
                # As a streaming change would: the segments reading the trait follow.
                readers = {
                    catalog.segments[position].definition.id
                    for name in moved
                    for position in catalog.by_trait.get(name, ())
                }
                if readers:
                    rebuilt, changes = reevaluate_segments(catalog, rebuilt, readers, now)
            page.profiles.append(rebuilt)
            page.originals[profile.id] = profile
            for change in changes:
                page.changes.append((rebuilt, change))
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
            changed=changed,
            finished=len(profiles) < self.page_size,
            now=now,
        )
        return page

    async def _histories(
        self, ws: str, profile_ids: list[str], names: list[str] | None, since: datetime | None
    ) -> dict[str, list[Event]]:
        """The timelines of ``profile_ids`` (events ``names``, from ``since``) by profile."""
        histories: dict[str, list[Event]] = {}
        if profile_ids:
            for stored in await self._storage.timeline_events(ws, profile_ids, names, since):
                histories.setdefault(stored.profile_id, []).append(_decode_event(stored.body))
        return histories

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
            histories = await self._histories(
                job.workspace_id, [p.id for p in profiles], names, since
            )
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


def _value(profile: Profile, name: str) -> Any:
    trait = profile.traits.get(name)
    return None if trait is None else trait.value
