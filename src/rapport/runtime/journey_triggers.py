"""The journey-trigger consumer: schedules, publishes, resumes and business events fanned out.

Some triggers concern many customers at once: a schedule's run enters every
member of its audience, a business event every customer it names, a newly
published date trigger every profile already holding the date, a resume
every instance the pause stopped. None of that is done in one processing
step (unbounded work and memory in one transaction). Instead this consumer
(``journey-triggers`` in the consumer offsets) reads the log, and for each
such *control* event appends one internal event per concerned profile,
page by page; the processor then handles each in that profile's order like
any other event (``engine._fires``, ``journey_effects``):

* ``Journey Published`` (stored with the publish's transition,
  ``storage.journey_signals``, and delivered by the relay; or a
  reconciling one from migration 0016): each ``schedule`` trigger without
  a timer gets a scheduled row for its first run; when the version has
  ``date`` triggers, every profile holding one of their traits gets a
  ``Journey Date Sync`` (``journey_dates`` computes her timer);
* ``Journey Schedule Run`` (that row, delivered by the relay when due):
  if the version still takes entries, every current member of the
  audience segment (membership index, paged) gets a ``Journey Scheduled
  Entry`` -- for one run, the latest due when this consumer first read the
  row's event, and only within the trigger's catch-up window
  (``journey_schedules.run_to_make``); then the next run is scheduled (a
  paused journey skips the run but keeps its schedule; an archived or
  superseded version stops);
* ``Journey Resume Requested`` (stored with the resume's transition):
  every profile with an instance the pause stopped gets a ``Journey
  Resumed``, which the processor hands to ``engine.on_resume``;
* a business event (``business_events.fan_out``).

After a start, the first entry read of each workspace also reconciles its
schedules: a schedule trigger of a journey's newest running version that
has no timer gets one (``journey_schedules.reconcile_workspace``).

Exactly once: every appended event has a message id derived from the
control event and the profile (the log drops a second append), and the
next run's row is committed with this consumer's offset. A crash replays
the control events after the committed offset: nothing is entered twice,
no run fires twice. A control event is handled only once the processor
and the membership index have caught up with it, so the timelines and
members it reads include everything logged before it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from rapport.core.clock import Clock
from rapport.core.identity import IdentityRules
from rapport.core.journeys import PUBLISHED, parse_journey
from rapport.core.journeys.lifecycle import RUNNING
from rapport.core.journeys.model import DateTrigger, Journey, ScheduleTrigger
from rapport.core.journeys.triggers import (
    DATE_SYNC,
    JOURNEY_SOURCE,
    RESUMED,
    SCHEDULED_ENTRY,
    next_run,
)
from rapport.core.model import Event, LogEntry, ScheduledEvent
from rapport.runtime.business_events import fan_out, is_business_event
from rapport.runtime.journey_catalogs import JourneyCatalogs
from rapport.runtime.journey_schedules import (
    SCHEDULE_RUN,
    missing_rows,
    reconcile_workspace,
    run_to_make,
    schedule_row,
)
from rapport.runtime.log_consumer import LogConsumer
from rapport.storage.base import EventLog, ProcessingBatch, Storage
from rapport.storage.journey_signals import CONTROL_SOURCE, PUBLISHED_EVENT, RESUME_REQUESTED

log = structlog.get_logger("rapport.journey_triggers")

CONSUMER = "journey-triggers"
RECONCILE = "reconcile"
"""Property of a ``Journey Published`` that reconciles a version published earlier
(migration 0016): its schedules start from now, not from the signal's time."""
PAGE_SIZE = 1000
POLL_INTERVAL = 0.25
OFFSET_COMMIT_INTERVAL = 1.0
MAX_BACKOFF = 5.0

Ready = Callable[[int], Awaitable[bool]]
"""Whether the log up to an offset is processed and indexed (waits a little)."""


def is_control(event: Event) -> bool:
    """An event for this consumer alone: the processor skips it (it addresses no one)."""
    return event.source == CONTROL_SOURCE or is_business_event(event)


class JourneyTriggers(LogConsumer):
    """Follows the log and fans control events out (see the module doc)."""

    def __init__(
        self,
        storage: Storage,
        log: EventLog,
        clock: Clock,
        rules: IdentityRules,
        *,
        ready: Ready | None = None,
        on_appended: Callable[[], None] | None = None,
        consumer: str = CONSUMER,
        batch_size: int = 500,
        page_size: int = PAGE_SIZE,
    ) -> None:
        super().__init__(storage, consumer)
        self._log = log
        self._clock = clock
        self._rules = rules
        self._ready = ready
        self.on_appended = on_appended
        self.on_scheduled: Callable[[], None] | None = None
        """Called after a commit that scheduled a run (the relay's ``notify``)."""
        self.batch_size = batch_size
        self.page_size = page_size
        self._catalogs = JourneyCatalogs(storage)
        self._reconciled: set[str] = set()
        """Workspaces whose schedules this process has reconciled."""
        self._seen: dict[int, datetime] = {}
        """When each control event not handled yet was first read (log offset -> now)."""
        self._committed_at = 0.0
        self.running = False
        self.appended_total = 0
        """Internal events appended since start (duplicates not counted)."""

    @property
    def handled_offset(self) -> int:
        return self.consumed_offset

    async def wait_handled(self, offset: int, timeout: float) -> bool:
        """Wait until the log up to ``offset`` is handled; False on timeout."""
        return await self.reached(offset, timeout)

    # -- one step ------------------------------------------------------------
    async def run_once(self) -> int:
        """Handle the next batch of the log; returns how many entries were passed."""
        if self._offset is None:
            await self.load_offset()
        entries = await self._log.read(self.handled_offset, self.batch_size)
        # When each control event came to this process: a run's catch-up is
        # measured from then, not from when processing let it through.
        read_at = self._clock.now()
        for entry in entries:
            if is_control(entry.event):
                self._seen.setdefault(entry.offset, read_at)
        rows: list[ScheduledEvent] = []
        handled = 0
        passed: LogEntry | None = None
        reconciled: set[str] = set()
        for entry in entries:
            ws = entry.event.workspace_id
            if ws not in self._reconciled and ws not in reconciled:
                # The first entry of a workspace this process reads: its
                # schedules get any timer they lack (``journey_schedules``).
                rows.extend(await reconcile_workspace(self._storage, ws, self._clock.now()))
                reconciled.add(ws)
            if is_control(entry.event):
                if self._ready is not None and not await self._ready(entry.offset):
                    break  # handled once what came before it is processed
                rows.extend(await self._handle(entry.event, self._seen[entry.offset]))
                del self._seen[entry.offset]
                handled += 1
            passed = entry
        if passed is None:
            return 0
        loop_time = asyncio.get_running_loop().time()
        if handled or rows or loop_time - self._committed_at >= OFFSET_COMMIT_INTERVAL:
            await self._storage.commit_processing(
                ProcessingBatch(consumer=self.consumer, offset=passed.offset, scheduled=rows)
            )
            self._committed, self._committed_at = passed.offset, loop_time
            if rows and self.on_scheduled is not None:
                self.on_scheduled()
        self._reconciled |= reconciled
        self._offset = passed.offset
        await self._announce()
        return len(entries) if passed is entries[-1] else entries.index(passed) + 1

    async def _handle(self, event: Event, seen: datetime) -> list[ScheduledEvent]:
        if is_business_event(event):
            catalog = (await self._catalogs.for_workspaces([event.workspace_id]))[
                event.workspace_id
            ]
            journeys = [catalog.running[key] for key in sorted(catalog.running)]
            self._count(
                await fan_out(
                    self._storage,
                    self._log,
                    self._rules,
                    journeys,
                    event,
                    self._clock.now(),
                    self.page_size,
                )
            )
            return []
        if event.event == PUBLISHED_EVENT:
            return await self._published(event)
        if event.event == SCHEDULE_RUN:
            return await self._run(event, seen)
        if event.event == RESUME_REQUESTED:
            await self._resume(event)
        return []

    async def _journey(self, event: Event) -> tuple[Journey, int, str] | None:
        """The version a control event names, parsed, with its status; None if not running."""
        journey_id = str(event.properties.get("journey_id"))
        version = event.properties.get("version")
        if not isinstance(version, int):
            return None
        stored = await self._storage.get_journey_version(event.workspace_id, journey_id, version)
        if stored is None or stored.status not in RUNNING:
            return None
        return parse_journey(stored.definition), version, stored.status

    async def _published(self, event: Event) -> list[ScheduledEvent]:
        found = await self._journey(event)
        if found is None:
            return []  # archived (or gone) since
        journey, version, _ = found
        ws = event.workspace_id
        entry = await self._storage.entry_journey_version(ws, journey.id)
        if entry is not None and entry.version != version:
            return []  # a newer version took over, with a signal of its own
        # Each schedule's first run after the publication; a row already there
        # (this signal handled before a crash, or a reconcile) is kept as it is.
        if event.properties.get(RECONCILE):
            # A version published before (migration 0016): its syncs may have
            # been sent, and are sent again (a timer is replaced, never doubled).
            after, tag = self._clock.now(), event.message_id
        else:
            after, tag = event.timestamp, f"v{version}"
        rows = await missing_rows(self._storage, ws, journey, version, after)
        await self._sync_dates(ws, journey, version, after, tag)
        return rows

    async def _sync_dates(
        self, ws: str, journey: Journey, version: int, at: datetime, tag: str
    ) -> None:
        """A ``Journey Date Sync`` to every profile holding one of its date traits."""
        traits = {t.trait.split(".")[0] for t in journey.triggers if isinstance(t, DateTrigger)}
        if not traits:
            return
        after: str | None = None
        while True:
            profiles = await self._storage.scan_profiles(ws, after, self.page_size)
            syncs = [
                Event(
                    workspace_id=ws,
                    message_id=f"journey-date-sync:{journey.id}:{tag}:{p.id}",
                    type="track",
                    event=DATE_SYNC,
                    timestamp=at,
                    received_at=self._clock.now(),
                    source=JOURNEY_SOURCE,
                    properties={"journey_id": journey.id, "version": version},
                    profile_id=p.id,
                )
                for p in profiles
                if any(p.traits.get(t) is not None for t in traits)
            ]
            await self._append(syncs)
            if len(profiles) < self.page_size:
                return
            after = profiles[-1].id

    async def _run(self, event: Event, seen: datetime) -> list[ScheduledEvent]:
        found = await self._journey(event)
        index = event.properties.get("trigger")
        if found is None or not isinstance(index, int):
            return []  # archived (or gone): the schedule stops
        journey, version, status = found
        ws = event.workspace_id
        trigger = journey.triggers[index] if 0 <= index < len(journey.triggers) else None
        if not isinstance(trigger, ScheduleTrigger):
            return []
        entry = await self._storage.entry_journey_version(ws, journey.id)
        if entry is not None and entry.version != version:
            return []  # a newer version took over, with a schedule of its own
        run_at = datetime.fromisoformat(str(event.properties.get("run_at")))
        zone = journey.time_zone.default
        # Runs missed while nothing ran make one run, the latest, if recent enough.
        made = run_to_make(trigger, run_at, seen, zone)
        if made is None:
            log.warning(
                "journeys.schedule_run_missed",
                journey_id=journey.id,
                run_at=str(run_at),
                seen_at=str(seen),
            )
        elif status == PUBLISHED:
            await self._enter_audience(event, journey.id, version, index, trigger, made)
        else:
            log.info("journeys.schedule_run_paused", journey_id=journey.id, run_at=str(made))
        after = max(run_at, self._clock.now())
        upcoming = next_run(trigger.schedule, after, zone)
        return [] if upcoming is None else [schedule_row(ws, journey.id, version, index, upcoming)]

    async def _enter_audience(
        self,
        event: Event,
        journey_id: str,
        version: int,
        index: int,
        trigger: ScheduleTrigger,
        run_at: datetime,
    ) -> None:
        ws = event.workspace_id
        after: str | None = None
        while True:
            page = await self._storage.list_segment_members(
                ws, trigger.segment, self.page_size, after
            )
            now = self._clock.now()
            await self._append(
                [
                    Event(
                        workspace_id=ws,
                        message_id=(
                            f"journey-run:{journey_id}:v{version}:{index}"
                            f":{run_at.isoformat()}:{member.profile_id}"
                        ),
                        type="track",
                        event=SCHEDULED_ENTRY,
                        timestamp=run_at,
                        received_at=now,
                        source=JOURNEY_SOURCE,
                        properties={
                            "journey_id": journey_id,
                            "version": version,
                            "trigger": index,
                            "run_at": run_at.isoformat(),
                        },
                        profile_id=member.profile_id,
                    )
                    for member in page.members
                ]
            )
            if page.next_after is None:
                return
            after = page.next_after

    async def _resume(self, event: Event) -> None:
        ws = event.workspace_id
        journey_id = str(event.properties.get("journey_id"))
        after: str | None = None
        while True:
            page = await self._storage.list_journey_instances(ws, journey_id, self.page_size, after)
            profiles = sorted(
                {i.profile_id for i in page.instances if i.live and i.paused_since is not None}
            )
            now = self._clock.now()
            await self._append(
                [
                    Event(
                        workspace_id=ws,
                        message_id=f"journey-resumed:{event.message_id}:{profile_id}",
                        type="track",
                        event=RESUMED,
                        timestamp=now,
                        received_at=now,
                        source=JOURNEY_SOURCE,
                        properties={"journey_id": journey_id},
                        profile_id=profile_id,
                    )
                    for profile_id in profiles
                ]
            )
            if page.next_after is None:
                break
            after = page.next_after
        # Date timers were not kept up while paused: set them again.
        entry = await self._storage.entry_journey_version(ws, journey_id)
        if entry is not None:
            journey = parse_journey(entry.definition)
            await self._sync_dates(ws, journey, entry.version, event.timestamp, event.message_id)

    async def _append(self, events: list[Event]) -> None:
        if events:
            self._count(sum(await self._log.append(events)))

    def _count(self, appended: int) -> None:
        self.appended_total += appended
        if appended and self.on_appended is not None:
            self.on_appended()

    # -- the loop ------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Handle until ``stop`` is set; storage trouble is logged and retried."""
        attempts = 0
        self.running = True
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    done = await self.run_once()
                    attempts = 0
                except Exception as exc:  # retried: a control event is never skipped
                    attempts += 1
                    log.error(
                        "journey_triggers.failed",
                        after_offset=self.handled_offset,
                        attempt=attempts,
                        exc_info=exc,
                    )
                    done = 0
                if done == 0:
                    delay = POLL_INTERVAL if not attempts else min(MAX_BACKOFF, 0.1 * 2**attempts)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=delay)
        finally:
            self.running = False
            if self._offset is not None and self._offset > self._committed:
                with contextlib.suppress(Exception):
                    await self._storage.commit_processing(
                        ProcessingBatch(consumer=self.consumer, offset=self._offset)
                    )
