"""A journey instance: one customer's way through one version of a journey, as stored state.

The engine (``engine``) reads instances and returns changed copies; the
runtime stores them with the effects of the same step, in one transaction.
An instance is plain data (msgspec, JSON-encodable), so a restarted worker
reads it back exactly as it was: its current step, what it waits for, its
pending timer (``timer_seq``) and how often it reached each step
(``visits``, which makes message idempotency keys replay-stable).

Every instance keeps a bounded, readable **trace**: which event or timer
moved it, which branch it took and why, what was held, dropped or sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

Status = Literal["active", "waiting", "held", "completed", "exited", "converted"]
LIVE_STATUSES: frozenset[str] = frozenset(("active", "waiting", "held"))
"""An instance in one of these has not ended: it holds the (journey, profile, key) slot."""
ENDED_STATUSES: frozenset[str] = frozenset(("completed", "exited", "converted"))

TRACE_LIMIT = 200
"""Entries kept per instance; older ones are dropped (counted in ``trace_dropped``).

A weekly loop runs for years: the trace must not grow with it. Its start
(entry) is kept in ``entered_at``/``entered_by`` on the instance itself.
"""

WaitKind = Literal["for", "until_time", "until_date", "event", "holdout"]


class WaitState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """What a waiting instance waits for.

    ``until`` is when the wait ends on its own: the end of a duration, the
    local time or date reached, the timeout of an event wait (then
    ``event`` names the awaited event and ``correlation`` the key value it
    must carry), or the end of the longest goal window for a held-out
    customer.
    """

    kind: WaitKind
    since: datetime
    until: datetime | None = None
    event: str | None = None
    correlation: str | None = None


class HeldMessage(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A message step reached while the journey's hold condition held."""

    step_id: str
    since: datetime


class TraceEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One readable line of an instance's history.

    ``what`` says what happened (``entered``, ``sent``, ``branch``,
    ``held``, ``dropped``, ``exited``...), ``why`` the reason in words
    (``branch 'vip' taken: condition $.steps.check.branch[0].when true``),
    ``cause`` what moved the instance (``event Order Completed (msg-1)``,
    ``timer 3``).
    """

    at: datetime
    step: str | None
    what: str
    why: str = ""
    cause: str = ""


# gc=False (here and above): none of these can be part of a reference cycle (their
# fields hold text, numbers, times and containers of those), and a step decodes,
# copies and re-encodes thousands of them: untracked, they do not count toward
# collections (21% fewer in a burst of timer steps).
class JourneyInstance(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One customer's instance of one journey version. Treated as a value: never mutated
    once returned by the engine."""

    id: str
    journey_id: str
    version: int
    profile_id: str
    status: Status
    entered_at: datetime
    entered_by: str
    """The message id of the event (or the timer) that let her in: it is not matched by
    the instance's own waits, exits and goals."""
    correlation_key: str | None = None
    step_id: str | None = None
    """The step she is at (waiting or held at), or ended at."""
    wait: WaitState | None = None
    held: HeldMessage | None = None
    timer_at: datetime | None = None
    """When the instance's one pending timer is due; None: no timer."""
    timer_seq: int = 0
    """Sequence of the pending timer; a timer carrying another number is stale."""
    visits: dict[str, int] = {}
    """Step id -> how many times she reached it (idempotency keys are derived from it)."""
    goals_reached: list[str] = []
    variables: dict[str, Any] = {}
    """Values the journey keeps per instance: the split variants taken (``variant:STEP``)."""
    paused_since: datetime | None = None
    """Set when a timer came while her version was paused: she waits for ``on_resume``."""
    ended_at: datetime | None = None
    end_reason: str | None = None
    trace: list[TraceEntry] = []
    trace_dropped: int = 0

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES


def working_copy(instance: JourneyInstance) -> JourneyInstance:
    """A copy whose containers may be changed without touching ``instance``."""
    return msgspec.structs.replace(
        instance,
        visits=dict(instance.visits),
        goals_reached=list(instance.goals_reached),
        variables=dict(instance.variables),
        trace=list(instance.trace),
    )


def record(
    instance: JourneyInstance,
    at: datetime,
    what: str,
    why: str = "",
    cause: str = "",
    step: str | None = None,
) -> None:
    """Append a trace entry to a working copy, keeping at most ``TRACE_LIMIT``."""
    instance.trace.append(
        TraceEntry(
            at=at,
            step=step if step is not None else instance.step_id,
            what=what,
            why=why,
            cause=cause,
        )
    )
    overflow = len(instance.trace) - TRACE_LIMIT
    if overflow > 0:
        del instance.trace[:overflow]
        instance.trace_dropped += overflow


def describe(instance: JourneyInstance) -> list[str]:
    """The trace as lines of text, oldest first (for the console, the API and tests)."""
    lines = (
        [f"... {instance.trace_dropped} earlier entries dropped"] if instance.trace_dropped else []
    )
    for entry in instance.trace:
        where = f" [{entry.step}]" if entry.step else ""
        why = f": {entry.why}" if entry.why else ""
        cause = f" (by {entry.cause})" if entry.cause else ""
        lines.append(f"{entry.at.isoformat()}{where} {entry.what}{why}{cause}")
    return lines
