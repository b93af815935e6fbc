"""The signal a journey transition commits with it: publish and resume, as scheduled rows.

Publishing a journey sets up its schedules and date timers; resuming one
sets its date timers again and restarts the instances the pause stopped.
The journey-trigger consumer (``rapport.runtime.journey_triggers``) does
that work when it reads the signal -- a control event -- from the log.

The signal is written as a ``ScheduledEvent`` due at once (``SIGNAL_DUE``,
whatever the clock of the process that delivers it), in the SAME
transaction as the versions' new status (``sqlite_journeys``,
``postgres_journeys``, ``memory_journeys``), and the relay delivers it like
any other row. So a crash can never leave a published journey whose
start-up work never happens: either neither the status nor the row is
stored, or both are, and a stored row is delivered once the runtime runs
again (appended once: its message id is fixed).

This module builds the rows; it lives beside storage because the backends
write them, and the runtime reads the same names back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rapport.core.journeys.lifecycle import PUBLISH, PUBLISHED, RESUME, JourneyVersion
from rapport.core.model import Event, ScheduledEvent

CONTROL_SOURCE = "rapport:journey-triggers"
"""The source of control events: the processor skips them, the trigger consumer handles them."""
PUBLISHED_EVENT = "Journey Published"
RESUME_REQUESTED = "Journey Resume Requested"
SIGNAL_KEY_PREFIX = "journey-signal:"
SIGNAL_DUE = datetime(1970, 1, 1, tzinfo=UTC)
"""When a signal row is due: long past, so the relay takes it at its next look even
when the process that stored it (the CLI) has a clock ahead of the server's.
Rows are stored with the journeys revision as their origin offset, so signals
go out in the order the transitions were written."""


def control_event(ws: str, name: str, message_id: str, at: datetime, **props: object) -> Event:
    return Event(
        workspace_id=ws,
        message_id=message_id,
        type="track",
        event=name,
        timestamp=at,
        received_at=at,
        source=CONTROL_SOURCE,
        properties=dict(props),
    )


def published_event(ws: str, journey_id: str, version: int, now: datetime) -> Event:
    """A version is published once: its signal's message id names the version."""
    return control_event(
        ws,
        PUBLISHED_EVENT,
        f"journey-published:{journey_id}:v{version}",
        now,
        journey_id=journey_id,
        version=version,
    )


def resume_event(ws: str, journey_id: str, revision: int, now: datetime) -> Event:
    """A journey may be resumed many times: the signal names the write (its revision)."""
    return control_event(
        ws,
        RESUME_REQUESTED,
        f"journey-resume:{journey_id}:r{revision}",
        now,
        journey_id=journey_id,
    )


def signal_rows(
    action: str, changed: Sequence[JourneyVersion], revision: int, now: datetime
) -> list[ScheduledEvent]:
    """The rows to store with a transition: ``changed`` are the versions it wrote.

    ``revision`` is the journeys revision after the write (unique per write).
    Pause and archive need no start-up work: nothing is signalled.
    """
    events: list[tuple[str, Event]] = []
    for version in changed:
        if action == PUBLISH and version.status == PUBLISHED:
            key = f"{SIGNAL_KEY_PREFIX}{version.journey_id}:published:v{version.version}"
            events.append(
                (
                    key,
                    published_event(version.workspace_id, version.journey_id, version.version, now),
                )
            )
    if action == RESUME and changed:
        first = changed[0]
        key = f"{SIGNAL_KEY_PREFIX}{first.journey_id}:resume:r{revision}"
        events.append((key, resume_event(first.workspace_id, first.journey_id, revision, now)))
    return [
        ScheduledEvent(workspace_id=event.workspace_id, key=key, due_at=SIGNAL_DUE, event=event)
        for key, event in events
    ]
