"""Backfill: bringing the profiles that exist to a new or changed segment definition.

Streaming evaluation (``core.segments.update_memberships``) only looks at a
profile when one of its events arrives. A definition created or changed
today must also hold for the customers who are quiet today: a backfill job
walks every profile of the workspace once, in profile-id order, and
evaluates the segment (and the segments that read it) on each.

One job per (workspace, segment), started by the storage in the same
transaction as every write of a definition: creating or changing it walks
profiles into (and out of) it; deleting it walks its members out. A newer
version's job replaces the older one's, whose progress can then no longer
be written. The job's ``cursor`` is the last profile id done, so a restart
resumes where the last committed page ended; re-running a page is harmless,
because evaluation is idempotent (a profile already in the right state
changes nothing and counts nothing).

``total`` is the number of profiles when the job started: profiles created
later are evaluated by streaming as their first event arrives, and may or
may not be walked too (their id may sort after the cursor). It is meant for
a progress bar, not for accounting.

Computed traits (``rapport.core.computed_traits``) are walked by the same
jobs, of ``kind`` ``computed_trait``: one per (workspace, trait), started by
every write of an active definition (a deleted trait has nothing to
rebuild), whose pages rebuild the trait's state from each profile's
timeline. ``segment_id`` then holds the trait's id, and ``changed`` counts
the profiles whose value the walk changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Final

import msgspec

from rapport.core.conditions import Aggregator
from rapport.core.conditions.aggregates import AggregateSpec
from rapport.core.conditions.instants import from_micros, to_micros
from rapport.core.model import Event, Profile

SEGMENT: Final = "segment"
COMPUTED_TRAIT: Final = "computed_trait"
BACKFILL_KINDS: Final = (SEGMENT, COMPUTED_TRAIT)
"""What a job walks profiles for: a segment definition or a computed-trait definition."""

RUNNING: Final = "running"
DONE: Final = "done"
BACKFILL_STATUSES: Final = frozenset((RUNNING, DONE))


class BackfillJob(msgspec.Struct, frozen=True, kw_only=True):
    """The progress of walking a workspace's profiles for one definition version."""

    workspace_id: str
    segment_id: str
    """The definition's id: a segment's, or a computed trait's (``kind``)."""
    version: int
    """The definition version the job brings profiles to."""
    status: str
    total: int
    """Profiles in the workspace when the job started."""
    processed: int = 0
    entered: int = 0
    exited: int = 0
    cursor: str | None = None
    """The last profile id evaluated; ``None`` before the first page."""
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    kind: str = SEGMENT
    """``segment`` or ``computed_trait`` (jobs stored before traits had any are segments')."""
    changed: int = 0
    """Computed-trait jobs: profiles whose trait value the walk changed."""

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def progress(self) -> float:
        """Fraction done in [0, 1] (1 when finished; ``total`` is an estimate)."""
        if not self.running:
            return 1.0
        if self.total <= 0:
            return 0.0
        return min(1.0, self.processed / self.total)


def start_backfill(
    workspace_id: str,
    segment_id: str,
    version: int,
    total: int,
    now: datetime,
    kind: str = SEGMENT,
) -> BackfillJob:
    """A job that has not walked anything yet (``segment_id``: the definition's id)."""
    return BackfillJob(
        workspace_id=workspace_id,
        segment_id=segment_id,
        version=version,
        status=RUNNING,
        total=total,
        started_at=now,
        updated_at=now,
        kind=kind,
    )


def advance_backfill(
    job: BackfillJob,
    *,
    cursor: str | None,
    processed: int,
    entered: int,
    exited: int,
    finished: bool,
    now: datetime,
    changed: int = 0,
) -> BackfillJob:
    """``job`` after one more page: ``processed``, ``entered``... are the page's counts."""
    return msgspec.structs.replace(
        job,
        cursor=cursor if cursor is not None else job.cursor,
        processed=job.processed + processed,
        entered=job.entered + entered,
        exited=job.exited + exited,
        changed=job.changed + changed,
        status=DONE if finished else job.status,
        updated_at=now,
        finished_at=now if finished else None,
    )


def history_window(
    specs: Iterable[AggregateSpec], now: datetime
) -> tuple[list[str], datetime | None]:
    """The event names and the earliest time a rebuild of ``specs`` must read.

    ``None`` as the time when one of them aggregates over all time.
    """
    names = sorted({spec.event for spec in specs})
    windows = [spec.window_us for spec in specs]
    if not windows or any(window is None for window in windows):
        return names, None
    longest = max(window for window in windows if window is not None)
    return names, from_micros(to_micros(now) - longest)


def rebuild_aggregates(
    profile: Profile,
    aggregators: Mapping[str, Aggregator],
    history: Sequence[Event],
    now: datetime,
) -> Profile:
    """``profile`` with the states of ``aggregators`` recomputed from ``history``.

    ``history`` is the profile's timeline (oldest first) for the events those
    aggregates count. Streaming only feeds an aggregate the events that come
    after its definition; a backfill calls this so that a new segment on
    "viewed the same product 3 times in the last hour" sees the views that
    came before it was written. The result is what streaming would hold had
    the aggregate always existed (the hypothesis tests of
    ``core.conditions`` check that incremental equals recomputed).
    """
    at_now = to_micros(now)
    states = dict(profile.aggregates)
    for aggregate_id, aggregator in aggregators.items():
        state = aggregator.empty()
        for event in history:
            state = aggregator.observe_micros(state, event, to_micros(event.timestamp), at_now)
        state = aggregator.expire_micros(state, at_now)
        if state.keys:
            states[aggregate_id] = msgspec.Raw(_encode_state(state))
        else:
            states.pop(aggregate_id, None)
    if states == profile.aggregates:
        return profile
    return msgspec.structs.replace(profile, aggregates=states)


_encode_state = msgspec.json.Encoder().encode
