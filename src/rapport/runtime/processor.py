"""The per-profile processor: event log -> identity graph, profiles and timelines.

One processor consumes the log in offset order. Each step reads a batch,
resolves identity and applies traits for every event in log order (which is
what gives per-profile order), and commits everything — profiles, identifier
owners, merges, timeline rows and the new consumer offset — in one
``commit_processing`` call, so a crash replays the step instead of half of it.

Round trips are per batch, not per event: at most one ``find_profile_ids``
and one ``load_profiles`` per workspace in the batch, then a working set in
memory that lets several events of one customer in the same batch see each
other (``working_set``). Owners and profiles the processor committed itself
come from a bounded in-memory cache when it has one (``profile_cache``: why
and when that is valid; the service sizes it by ``profile_cache_size``).

Pipelined: while one step commits (storage work, mostly off the event loop's
thread), ``run_once`` already reads and builds the next one on top of the
committing step's working set. The next ``run_once`` only commits it. If the
commit fails, the step built on top of it is dropped and built again from
what storage holds.

Segments (``core.segments``): after each event, the profile's event
aggregates and segment memberships are updated, evaluating only the segments
the event can affect. Definitions are loaded per workspace and reloaded when
``segments_revision`` moves (checked once per step). Each membership change
becomes an internal ``Segment Entered`` / ``Segment Exited`` track event
(source ``rapport:segments``) addressed to the profile, with a message id
derived from the triggering event's offset. A step never appends them to
the log itself: it writes them as scheduled events due now
(``ProcessingBatch.scheduled``, the outbox) in the same commit as the
profiles, and the relay (``relay``) appends them once that commit is
durable, woken by ``on_scheduled``. So an emitted event always agrees with
what storage holds, even when a failed commit makes the step be built again
with another ``now``. They then travel the normal path like any other event,
with two shortcuts: they name their profile, so identity is not resolved
(``segment_effects.settled``), and a profile an event leaves unchanged (a
membership event no segment counts) is not stored again; in a workspace
where nothing reads them (``segment_effects.quiet``) they only go on the
timeline, their profile not even loaded. A merge emits
``Segment Exited`` for every segment the merged-away profile was in,
addressed to that profile's id (the merged profile is re-evaluated
against every segment and enters under its own id, and stays on the static
lists the absorbed one was on).

Static segments (``core.static_segments``): an uploaded list entry is an
event of source ``rapport:static-segments``; ``apply_upload`` finds or
creates its profile and changes only its membership, emitted like any
other; an add whose list is gone is recorded as a rejection.

Timers: once a step is built, each profile it changed gets the earliest
instant at which time alone may change one of its memberships
(``next_membership_change``; only the segments whose inputs the step
changed are looked at again, the previous instant standing for the
others), kept in ``Profile.segment_timer_at`` and stored as one scheduled
row per profile (key ``segments:<profile id>``): written when the instant
moves, deleted when there is none. The relay delivers it when due as a
``Segment Timer Due`` track event (source ``rapport:timers``); handling it
re-evaluates the profile's time-dependent segments
(``refresh_memberships``) and schedules the next one. It is not the
customer's activity: it moves neither ``last_seen`` nor ``event_count``,
feeds no aggregate and is not kept in the timeline. A customer event that
finds the profile's timer overdue (the relay lagging) does the same
re-evaluation first, so memberships are right as of each event. The
events and rows a step writes for segments are made in ``segment_effects``.

Journeys (``journey_effects``): after segments, each event is handed to
the journey engine; instances, outbox messages, metrics and journey timers
(``Journey Timer`` events, source ``rapport:journeys``) commit with the step.

What a step loads before its events and the one batch it commits after them
are made in ``step_batch``. Between steps, the processor commits backfill
pages the same way (``backfill_pages``).

Failures (the records are made in ``processing_failures``):

* an event whose processing raises is recorded as a rejection with code
  ``processing_failed`` (visible next to ingest rejections), logged at error
  level with its offset, and skipped; it stays in the event log, so it can
  be replayed once the cause is fixed. The rest of the batch goes on.
* a batch whose commit fails (storage trouble) is retried with backoff. If it
  keeps failing, the processor narrows down to one event per batch; a single
  event whose commit still fails is recorded and skipped the same way, so
  one unstorable event cannot wedge the pipeline, while an unreachable
  storage only makes the processor wait (nothing is skipped without being
  recorded, and recording needs the storage).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence

import msgspec
import structlog

from rapport.core.aggregate_states import merge_aggregate_states
from rapport.core.clock import Clock
from rapport.core.computed_traits import (
    apply_computed_traits,
    merge_computed_traits,
)
from rapport.core.conditions.instants import to_micros
from rapport.core.identity import (
    EventClaims,
    IdentityRules,
    add_alias_claims,
    resolve,
    scan_identifiers,
)
from rapport.core.ids import IdGenerator
from rapport.core.model import (
    Event,
    Identifier,
    LogEntry,
    MergeRecord,
    Profile,
    Rejection,
    dump_json,
)
from rapport.core.profiles import apply_event, attach_identifiers, merge_profiles, new_profile
from rapport.core.segments import (
    MembershipChange,
    SegmentCatalog,
    Settled,
    refresh_memberships,
    update_memberships,
)
from rapport.core.static_segments import (
    STATIC_SEGMENT_SOURCE,
    apply_upload,
    carry_static_memberships,
)
from rapport.runtime.aggregate_catalogs import AggregateCatalogs
from rapport.runtime.backfill import Backfiller
from rapport.runtime.backfill_pages import log_done, page_batch
from rapport.runtime.computed_catalogs import ComputedTraitCatalogs
from rapport.runtime.journey_catalogs import JourneyCatalog
from rapport.runtime.journey_effects import (
    JOURNEY_EVENT_SOURCE,
    JourneyRunner,
    JourneyWork,
    apply_update,
    held_sends,
    is_timer,
)
from rapport.runtime.journey_triggers import is_control
from rapport.runtime.log_consumer import LogConsumer
from rapport.runtime.processing_failures import FAILURE_CODE as FAILURE_CODE
from rapport.runtime.processing_failures import MAX_FAILURE_PAYLOAD as MAX_FAILURE_PAYLOAD
from rapport.runtime.processing_failures import failed, failure, log_refusals, skip_next
from rapport.runtime.profile_cache import ProfileCache
from rapport.runtime.segment_effects import OUTBOX_KEY_PREFIX as OUTBOX_KEY_PREFIX
from rapport.runtime.segment_effects import SEGMENT_ENTERED as SEGMENT_ENTERED
from rapport.runtime.segment_effects import SEGMENT_EVENT_SOURCE as SEGMENT_EVENT_SOURCE
from rapport.runtime.segment_effects import SEGMENT_EXITED as SEGMENT_EXITED
from rapport.runtime.segment_effects import SEGMENT_TIMER as SEGMENT_TIMER
from rapport.runtime.segment_effects import SEGMENT_TIMER_KEY_PREFIX as SEGMENT_TIMER_KEY_PREFIX
from rapport.runtime.segment_effects import TIMER_EVENT_SOURCE as TIMER_EVENT_SOURCE
from rapport.runtime.segment_effects import (
    is_membership_event,
    on_timer,
    quiet_target,
)
from rapport.runtime.segment_effects import membership_event as _membership_event
from rapport.runtime.segment_effects import merged_away_events as _merged_away_events
from rapport.runtime.segment_effects import quiet as quiet_membership_events
from rapport.runtime.segment_effects import settled as _settled
from rapport.runtime.segment_effects import timer_key as _timer_key
from rapport.runtime.step_batch import Placed, Step, load_step_states, step_batch
from rapport.runtime.working_set import WorkspaceState
from rapport.storage.base import EventLog, Storage

log = structlog.get_logger("rapport.processor")

POLL_INTERVAL = 0.05
"""Seconds an idle processor waits for a ``notify()`` before polling the log."""
ISOLATE_AFTER = 3
"""Failed attempts of a batch before processing one event per batch."""
SKIP_AFTER = 3
"""Failed attempts of a single event before it is recorded and skipped."""
MAX_BACKOFF = 5.0
BUSY_STEP = 500
"""Most events a step takes while ingest goes on (``give_way``): a step holds the
loop's thread, so processing takes it in short turns and ingest keeps its pace;
a backlog is caught up in full ``batch_size`` steps once ingest stops."""
YIELD_EVERY = 250
"""Events a step processes between two turns it gives the event loop (ingest requests,
the sender): a step of a few thousand events would otherwise hold the loop for
hundreds of milliseconds."""
PROFILE_ID_PREFIX = "prof"

_Catalogs = tuple[Mapping[str, JourneyCatalog], Mapping[str, SegmentCatalog]]
"""Journey and segment catalogs of some workspaces, as one step read them."""


class Processor(LogConsumer):
    def __init__(
        self,
        storage: Storage,
        log: EventLog,
        clock: Clock,
        ids: IdGenerator,
        rules: IdentityRules,
        consumer: str = "profiles",
        batch_size: int = 500,
        cache_profiles: int = 0,
        on_scheduled: Callable[[], None] | None = None,
    ) -> None:
        """``cache_profiles`` bounds the cache of committed profiles (0: no cache).

        ``on_scheduled`` is called after a commit that scheduled events (the
        relay's ``notify``).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        super().__init__(storage, consumer)
        self._log = log
        self._clock = clock
        self._ids = ids
        self._rules = rules
        self.batch_size = batch_size
        self._cache = ProfileCache(cache_profiles)
        self.on_scheduled = on_scheduled
        self.on_outbox: Callable[[], None] | None = None
        """Called after a commit that wrote outbox messages (the sender's ``notify``)."""
        self._journeys = JourneyRunner(storage)
        # Segment catalogs also feed the aggregates journey conditions read.
        self._catalogs = AggregateCatalogs(storage, self._journeys.catalogs)
        self._computed = ComputedTraitCatalogs(storage)
        self._backfiller = Backfiller(storage, clock, self._catalogs, computed=self._computed)
        self._upcoming: Step | None = None
        """The step built while the previous one committed, if any."""
        self.processed_total = 0
        """Events processed since start (failed ones included)."""
        self.failed_total = 0
        """Events recorded as ``processing_failed`` since start."""
        self._skip_recorded = 0
        """Offset of the last event recorded as skipped, so a retried skip records it once."""
        self.give_way: Callable[[], Awaitable[bool]] | None = None
        """Awaited before each step of ``run``: inline processing gives way to ingest
        (``rapport.api.ingest_priority``). True: ingest goes on, and the step takes
        ``BUSY_STEP`` events at most."""
        self._ingest_busy = False
        """What ``give_way`` last said: the next step takes ``BUSY_STEP`` events at most."""

    @property
    def cache_size(self) -> int:
        """Most profiles kept in memory after their commit (0: none)."""
        return self._cache.max_profiles

    def _step_size(self) -> int:
        """Most events the next step reads."""
        return min(self.batch_size, BUSY_STEP) if self._ingest_busy else self.batch_size

    # -- progress ------------------------------------------------------------
    @property
    def processed_offset(self) -> int:
        """Offset up to which the log is processed and committed (0 before loading)."""
        return self.consumed_offset

    async def load_offset(self) -> int:
        """Read the committed offset of this consumer from storage.

        Someone else may have processed since: what this processor cached is
        forgotten with its offset.
        """
        self._cache.clear()
        self._upcoming = None
        return await super().load_offset()

    async def wait_processed(self, offset: int, timeout: float) -> bool:
        """Wait until everything up to ``offset`` is processed; False on timeout."""
        return await self.reached(offset, timeout)

    # -- the loop ------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Process until ``stop`` is set; sleep on ``notify()`` or a short poll when idle."""
        attempts = 0
        isolate_until = 0
        while not stop.is_set():
            self._ingest_busy = self.give_way is not None and await self.give_way()
            self._wake.clear()
            start = self.processed_offset
            isolated = start < isolate_until
            try:
                done = await self.run_once(limit=1 if isolated else None)
            except Exception as exc:  # storage/log trouble: logged and retried (module doc)
                attempts += 1
                log.error(
                    "processing.batch_failed",
                    after_offset=start,
                    attempt=attempts,
                    isolated=isolated,
                    exc_info=exc,
                )
                if isolated and attempts >= SKIP_AFTER:
                    if await self._skip_next(start, exc):
                        attempts = 0
                        continue
                elif not isolated and attempts >= ISOLATE_AFTER:
                    # One event at a time over what the failing step read.
                    isolate_until = start + self._step_size()
                    attempts = 0
                await self._pause(stop, min(MAX_BACKOFF, POLL_INTERVAL * 2**attempts))
                continue
            attempts = 0
            # A backfill page between steps: definitions are brought to the
            # quiet profiles while live events keep flowing.
            walked = await self._backfill_between_steps()
            if done == 0 and not walked:
                await self._pause(stop, POLL_INTERVAL, wake=True)

    async def _backfill_between_steps(self) -> bool:
        try:
            return await self.run_backfill_page()
        except Exception as exc:  # storage trouble: logged; the page is walked again later
            log.error("segments.backfill_failed", exc_info=exc)
            return False

    async def _pause(self, stop: asyncio.Event, seconds: float, *, wake: bool = False) -> None:
        waiter = self._wake if wake else stop
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), timeout=seconds)

    # -- one step ------------------------------------------------------------
    async def run_once(self, limit: int | None = None) -> int:
        """Process the next batch (at most ``limit`` or ``batch_size`` events).

        Returns how many log entries were consumed (failed ones included).
        Without ``limit``, the batch after it is prepared while it commits.
        """
        if self._offset is None:
            await self.load_offset()
        step, self._upcoming = self._upcoming, None
        if step is None or step.after != self.processed_offset or limit is not None:
            after = self.processed_offset
            entries = await self._log.read(after, limit or self._step_size())
            if not entries:
                return 0
            step = await self._build_step(after, entries, {})
        committing = asyncio.ensure_future(self._commit(step))
        upcoming: Step | None = None
        try:
            if limit is None:
                upcoming = await self._prepare_after(step)
        finally:
            try:
                await committing
            except BaseException:
                # Only storage is trusted after a failed commit: it may or may
                # not hold the step, and the upcoming step was built on it.
                self._cache.clear()
                raise
        if step.batch.scheduled and self.on_scheduled is not None:
            self.on_scheduled()
        if step.batch.outbox and self.on_outbox is not None:
            self.on_outbox()
        for state in step.states.values():
            state.remember(self._cache)
        self._upcoming = upcoming
        self._offset = step.batch.offset
        self.processed_total += step.consumed
        self.failed_total += len(step.failures)
        await self._announce()
        return step.consumed

    async def _commit(self, step: Step) -> None:
        if step.failures:
            await self._storage.record_rejections(step.failures)
        await self._storage.commit_processing(step.batch)

    async def _prepare_after(self, step: Step) -> Step | None:
        """The step after ``step``, built on its working set; None if there is nothing yet."""
        try:
            entries = await self._log.read(step.batch.offset, self._step_size())
            if not entries:
                return None
            return await self._build_step(step.batch.offset, entries, step.states, step.journeys)
        except Exception as exc:  # the next run_once reads and builds again, and reports
            log.warning("processing.prepare_failed", after_offset=step.batch.offset, exc_info=exc)
            return None

    # -- backfill ------------------------------------------------------------
    async def run_backfill_page(self) -> bool:
        """Walk one page of the oldest running backfill (segment or computed trait); False if none.

        Called between steps (``runtime.backfill`` says why here): the page's
        profiles, their membership events (outbox) and timers commit like a
        step that consumes nothing, then the job's progress is recorded. A
        crash in between replays the page, which changes nothing twice.
        """
        if self._offset is None:
            await self.load_offset()
        page = await self._backfiller.next_page()
        if page is None:
            return False
        batch, state = await page_batch(
            page, self.consumer, self.processed_offset, self._catalogs, self._computed
        )
        if batch.profiles or batch.scheduled or batch.unscheduled:
            # The step prepared ahead was built on the profiles as they were.
            self._upcoming = None
            await self._storage.commit_processing(batch)
            state.remember(self._cache)
            if batch.scheduled and self.on_scheduled is not None:
                self.on_scheduled()
        await self._storage.put_backfill(page.job)
        if not page.job.running:
            log_done(page.job)
        return True

    async def _skip_next(self, after: int, error: Exception) -> bool:
        """Record the event after ``after`` as failed and move past it; whether it was.

        Called when that event alone keeps failing to commit (``skip_next``).
        """
        entry, self._skip_recorded = await skip_next(
            self._storage, self._log, self.consumer, after, error, self._skip_recorded
        )
        if entry is None:
            return False
        self._offset = entry.offset
        self.processed_total += 1
        self.failed_total += 1
        await self._announce()
        return True

    async def _build_step(
        self,
        after: int,
        entries: Sequence[LogEntry],
        previous: dict[str, WorkspaceState],
        previous_journeys: JourneyWork | None = None,
    ) -> Step:
        """Process ``entries`` (read after ``after``) in memory.

        ``previous`` (and ``previous_journeys``) is the working set of a step
        still committing, if any.
        """
        now = self._clock.now()
        failures: list[Rejection] = []
        scanned: list[tuple[LogEntry, EventClaims]] = []
        for entry in entries:
            try:
                scanned.append((entry, scan_identifiers(entry.event, self._rules)))
            except Exception as exc:  # one bad event must not stop the others: recorded
                failures.append(failed(entry, exc))

        quiet, read = await self._quiet_entries(scanned)
        states = await load_step_states(
            self._storage, self._cache, self._rules, scanned, previous, quiet
        )
        journeys = await self._journeys.prepare(states, now, previous_journeys)
        catalogs = await self._step_catalogs(states, journeys.catalogs, read)
        computed = await self._computed.for_workspaces(states)

        def new_profile_id() -> str:
            return self._ids.new_id(PROFILE_ID_PREFIX)

        placed: list[Placed] = []
        merges: list[MergeRecord] = []
        emitted: list[Event] = []
        cancelled: list[tuple[str, str]] = []
        """Timers of profiles merged away."""
        refreshed: set[str] = set()
        """Profiles whose time-dependent memberships were evaluated at ``now``."""
        loaded = {ws: dict(state.profiles) for ws, state in states.items()}
        """The profiles as they were when their timers were last computed."""
        for index, (entry, scan) in enumerate(scanned):
            if index and not index % YIELD_EVERY:
                # A big step is CPU work: the event loop serves requests between its parts.
                await asyncio.sleep(0)
            event = entry.event
            if entry.offset in quiet:
                # Nothing reads this membership event: on the timeline, no more.
                target = quiet_target(event, scan, states[event.workspace_id])
                if target is not None:
                    try:
                        placed.append(Placed(entry, target, dump_json(event)))
                    except Exception as exc:  # one bad event must not stop the others
                        failures.append(failed(entry, exc))
                    continue
            if is_control(event):
                continue  # for the journey-trigger consumer alone (``journey_triggers``)
            state = states[event.workspace_id]
            catalog = catalogs[event.workspace_id]
            if is_timer(event):
                try:  # a journey's wait is over (``journey_effects``)
                    emitted.extend(journeys.on_timer(entry, state))
                except Exception as exc:  # one bad event must not stop the others: recorded
                    failures.append(failed(entry, exc))
                continue
            if event.source == TIMER_EVENT_SOURCE:
                try:
                    emitted.extend(
                        on_timer(
                            entry, state, catalog, computed[event.workspace_id], refreshed, now
                        )
                    )
                except Exception as exc:  # one bad event must not stop the others: recorded
                    failures.append(failed(entry, exc))
                continue
            if event.source == STATIC_SEGMENT_SOURCE:
                # An uploaded list entry: it only changes a membership (no
                # traits, no activity); an add it cannot apply is recorded.
                try:
                    upload = apply_upload(
                        catalog, event, scan, state.owners, state.profiles, now, new_profile_id
                    )
                    body = dump_json(event)
                except Exception as exc:  # one bad event must not stop the others: recorded
                    failures.append(failed(entry, exc))
                    continue
                if upload.refused is not None:
                    log.warning(
                        "segments.upload_refused", offset=entry.offset, reason=upload.refused
                    )
                    failures.append(failure(entry, upload.refused))
                elif upload.profile is not None:
                    listed = upload.profile
                    owned = dict.fromkeys(upload.attached, listed.id)
                    state.owners.update(owned)
                    state.changed_identifiers.update(owned)
                    state.profiles[listed.id] = listed
                    state.changed_profiles.add(listed.id)
                    placed.append(Placed(entry, listed.id, body))
                    emitted.extend(
                        _membership_event(entry, listed.id, c, now) for c in upload.changes
                    )
                continue
            try:
                resolution = _settled(event, scan, state)
                if resolution is None:
                    claims = add_alias_claims(scan, event, self._rules, state.owners)
                    if claims.profile_id is not None:
                        claims = msgspec.structs.replace(
                            claims, profile_id=state.live(claims.profile_id)
                        )
                    resolution = resolve(
                        claims, state.owners, state.profiles, self._rules, now, new_profile_id
                    )
                profile = state.profiles.get(resolution.profile_id)
                original = profile
                # Segments compare the profile before and after the event; a
                # new or merged profile has no "before" to compare.
                prior = None if resolution.merges else profile
                if profile is None:
                    profile = new_profile(resolution.profile_id, event.workspace_id, now)
                moved: dict[Identifier, str] = {}
                losers: list[Profile] = []
                for merge in resolution.merges:
                    loser = state.profiles[merge.loser]
                    losers.append(loser)
                    profile = merge_aggregate_states(
                        catalog.aggregators,
                        merge_profiles(profile, loser, now),
                        loser,
                        to_micros(now),
                    )
                    profile = merge_computed_traits(
                        computed[event.workspace_id], profile, loser, now
                    )
                    moved.update(dict.fromkeys(loser.identifiers, profile.id))
                if resolution.attached:
                    profile = attach_identifiers(profile, resolution.attached, now)
                    moved.update(dict.fromkeys(resolution.attached, profile.id))
                released = held_sends(event)  # sends that waited for this update
                if event.source == JOURNEY_EVENT_SOURCE:
                    profile = apply_update(profile, event, now)
                elif event.source != SEGMENT_EVENT_SOURCE:
                    # A membership change is not the customer's activity: it
                    # must not move last_seen (which "not seen for 30 days"
                    # reads) nor count as one of the customer's events. It is
                    # still in the timeline, and segments may aggregate it.
                    profile = apply_event(profile, event, now)
                    # Customer events only (the core skips rapport:* sources).
                    profile = apply_computed_traits(
                        computed[event.workspace_id], profile, event, now
                    )
                changes: list[MembershipChange] = []
                if losers:
                    # Uploaded lists name the person: the merged profile stays on them.
                    profile, changes = carry_static_memberships(catalog, profile, losers, now)
                overdue = profile.segment_timer_at is not None and profile.segment_timer_at <= now
                if overdue and prior is not None and profile.id not in refreshed:
                    # The relay has not delivered the timer yet: what time
                    # changed is settled before the event is evaluated.
                    profile, changes = refresh_memberships(catalog, profile, now)
                # What the evaluation finds about time-dependent segments spares
                # the timer reading the same aggregates again (``schedule_timers``).
                settled: Settled = {}
                profile, event_changes = update_memberships(
                    catalog, prior, profile, event, now, settled
                )
                changes.extend(event_changes)
                membership_events = [
                    _membership_event(entry, profile.id, change, now) for change in changes
                ]
                for loser in losers:
                    membership_events.extend(_merged_away_events(entry, loser, profile.id, now))
                decision = journeys.on_event(
                    event.workspace_id, profile, event, [loser.id for loser in losers]
                )
                body = dump_json(event)
            except Exception as exc:  # one bad event must not stop the others: recorded
                failures.append(failed(entry, exc))
                continue
            # Nothing below can fail: the working set changes only for events
            # that were processed completely.
            for loser in losers:
                del state.profiles[loser.id]
                state.redirects[loser.id] = profile.id
                state.changed_profiles.discard(loser.id)
                if loser.segment_timer_at is not None:
                    # Harmless if it still fired (it would reach the winner),
                    # but the winner gets a timer of its own below.
                    cancelled.append((event.workspace_id, _timer_key(loser.id)))
            if prior is None or overdue:
                refreshed.add(profile.id)
            state.owners.update(moved)
            state.changed_identifiers.update(moved)
            state.profiles[profile.id] = profile
            state.record_settled(profile, settled)
            if profile is not original or overdue:
                # An event that changed nothing (most membership events) leaves
                # the stored profile and its timer as they are.
                state.changed_profiles.add(profile.id)
            merges.extend(resolution.merges)
            placed.append(Placed(entry, profile.id, body))
            emitted.extend(membership_events)
            journeys.release(event.workspace_id, released)
            if decision is not None:
                emitted.extend(journeys.apply(decision))
            if resolution.refused:
                log_refusals(event, resolution.refused)

        batch = step_batch(
            consumer=self.consumer,
            offset=entries[-1].offset,
            now=now,
            states=states,
            catalogs=catalogs,
            computed=computed,
            journeys=journeys,
            loaded=loaded,
            refreshed=refreshed,
            placed=placed,
            merges=merges,
            emitted=emitted,
            cancelled=cancelled,
        )
        return Step(after, len(entries), batch, failures, states, journeys)

    async def _quiet_entries(
        self, scanned: Sequence[tuple[LogEntry, EventClaims]]
    ) -> tuple[set[int], _Catalogs]:
        """The offsets of the batch's membership events that nothing reads, and the
        catalogs that tell (those of the workspaces of its membership events).

        Each entry is looked at once here; the rest of the step goes by offset.
        """
        wanted: dict[str, list[int]] = {}
        for entry, claims in scanned:
            if is_membership_event(entry.event, claims):
                wanted.setdefault(entry.event.workspace_id, []).append(entry.offset)
        if not wanted:
            return set(), ({}, {})
        journeys = await self._journeys.catalogs.for_workspaces(wanted)
        catalogs = await self._catalogs.for_workspaces(wanted, journeys)
        quiet = {
            offset
            for ws, offsets in wanted.items()
            if quiet_membership_events(catalogs[ws], journeys[ws])
            for offset in offsets
        }
        return quiet, (journeys, catalogs)

    async def _step_catalogs(
        self,
        states: Mapping[str, WorkspaceState],
        journeys: Mapping[str, JourneyCatalog],
        read: _Catalogs,
    ) -> dict[str, SegmentCatalog]:
        """The step's segment catalogs; those ``_quiet_entries`` read serve again when
        they cover every workspace and were combined with the step's very journey
        catalogs (no second revision query: a batch of membership events reads once)."""
        read_journeys, read_catalogs = read
        if all(ws in read_catalogs and read_journeys[ws] is journeys.get(ws) for ws in states):
            return {ws: read_catalogs[ws] for ws in states}
        return await self._catalogs.for_workspaces(states, journeys)
