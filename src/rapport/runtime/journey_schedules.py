"""Schedule triggers' stored timers: one row per (journey version, trigger), the next run.

The journey-trigger consumer (``journey_triggers``) owns the chain: the
``Journey Published`` signal stores each schedule's first run, each run
stores the next one, committed with the consumer's offset. This module
holds what the chain needs besides the consumer:

* ``schedule_row``: the row (``journey-schedule:<journey>:<version>:<trigger>``)
  holding a ``Journey Schedule Run`` control event; its message id names the
  run, so a run delivered twice is appended once;
* ``run_to_make``: which run a delivered row makes. When the runtime was
  down across several runs, only one is made -- the latest one due -- and
  only if it is at most the trigger's ``catch_up`` (``DEFAULT_CATCH_UP``)
  old when the runtime comes to it; older, the run is skipped;
* ``missing_rows`` / ``reconcile_workspace``: a version taking part in
  schedules that has no row for a schedule trigger (published before
  schedule triggers existed, or its row lost for any reason) gets one, for
  its next run strictly after now. Only missing keys are written, so a
  reconcile never doubles a timer nor brings back a run already made.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from rapport.core.journeys import RUNNING, parse_journey
from rapport.core.journeys.model import Journey, ScheduleTrigger
from rapport.core.journeys.triggers import next_run
from rapport.core.model import ScheduledEvent
from rapport.storage.base import Storage
from rapport.storage.journey_signals import control_event

SCHEDULE_RUN = "Journey Schedule Run"
SCHEDULE_KEY_PREFIX = "journey-schedule:"
DEFAULT_CATCH_UP = timedelta(hours=1)
"""How late a run may still be made when its trigger sets no ``catch_up``."""
_TICK = timedelta(microseconds=1)
_MAX_STEPS = 100_000
"""Runs walked at most to find the latest one due (a guard; a window holds far fewer)."""


def schedule_key(journey_id: str, version: int, index: int) -> str:
    return f"{SCHEDULE_KEY_PREFIX}{journey_id}:{version}:{index}"


def schedule_row(
    ws: str, journey_id: str, version: int, index: int, run_at: datetime
) -> ScheduledEvent:
    """The stored timer of one run: one row per (journey version, trigger), the next run."""
    event = control_event(
        ws,
        SCHEDULE_RUN,
        f"journey-schedule:{journey_id}:v{version}:{index}:{run_at.isoformat()}",
        run_at,
        journey_id=journey_id,
        version=version,
        trigger=index,
        run_at=run_at.isoformat(),
    )
    return ScheduledEvent(
        workspace_id=ws, key=schedule_key(journey_id, version, index), due_at=run_at, event=event
    )


def catch_up_of(trigger: ScheduleTrigger) -> timedelta:
    return trigger.catch_up if trigger.catch_up is not None else DEFAULT_CATCH_UP


def run_to_make(
    trigger: ScheduleTrigger, run_at: datetime, seen: datetime, default_zone: str
) -> datetime | None:
    """The run a row due at ``run_at``, first seen at ``seen``, makes; None: skip it.

    The latest run at or before ``seen`` (several missed runs make one), if it
    is at most the trigger's catch-up window old at ``seen``.
    """
    seen = max(seen, run_at)  # another process's clock may be a little behind
    start = max(run_at, seen - catch_up_of(trigger))
    found = run_at if start == run_at else next_run(trigger.schedule, start - _TICK, default_zone)
    if found is None or found > seen:
        return None
    for _ in range(_MAX_STEPS):
        following = next_run(trigger.schedule, found, default_zone)
        if following is None or following > seen:
            break
        found = following
    return found


async def missing_rows(
    storage: Storage, ws: str, journey: Journey, version: int, after: datetime
) -> list[ScheduledEvent]:
    """Rows for ``version``'s schedule triggers that have none: the first run after ``after``."""
    rows: list[ScheduledEvent] = []
    for index, trigger in enumerate(journey.triggers):
        if not isinstance(trigger, ScheduleTrigger):
            continue
        if await storage.get_scheduled(ws, schedule_key(journey.id, version, index)) is not None:
            continue  # the chain is there (maybe overdue: the run decides its catch-up)
        first = next_run(trigger.schedule, after, journey.time_zone.default)
        if first is not None:
            rows.append(schedule_row(ws, journey.id, version, index, first))
    return rows


async def reconcile_workspace(storage: Storage, ws: str, now: datetime) -> list[ScheduledEvent]:
    """Missing rows of every journey's newest running version (the one runs go to)."""
    newest: dict[str, tuple[int, object]] = {}
    for stored in await storage.list_journey_versions(ws, statuses=RUNNING):
        if stored.journey_id not in newest or stored.version > newest[stored.journey_id][0]:
            newest[stored.journey_id] = (stored.version, stored.definition)
    rows: list[ScheduledEvent] = []
    for journey_id in sorted(newest):
        version, definition = newest[journey_id]
        if not _has_schedule(definition):
            continue
        rows += await missing_rows(storage, ws, parse_journey(definition), version, now)
    return rows


def _has_schedule(definition: object) -> bool:
    # Read without parsing: most journeys have no schedule trigger.
    triggers = definition.get("triggers") if isinstance(definition, dict) else None
    return isinstance(triggers, list) and any(
        isinstance(t, dict) and "schedule" in t for t in triggers
    )
