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
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec

RUNNING: Final = "running"
DONE: Final = "done"
BACKFILL_STATUSES: Final = frozenset((RUNNING, DONE))


class BackfillJob(msgspec.Struct, frozen=True, kw_only=True):
    """The progress of walking a workspace's profiles for one segment version."""

    workspace_id: str
    segment_id: str
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
    workspace_id: str, segment_id: str, version: int, total: int, now: datetime
) -> BackfillJob:
    """A job that has not walked anything yet."""
    return BackfillJob(
        workspace_id=workspace_id,
        segment_id=segment_id,
        version=version,
        status=RUNNING,
        total=total,
        started_at=now,
        updated_at=now,
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
) -> BackfillJob:
    """``job`` after one more page: ``processed``/``entered``/``exited`` are the page's counts."""
    return msgspec.structs.replace(
        job,
        cursor=cursor if cursor is not None else job.cursor,
        processed=job.processed + processed,
        entered=job.entered + entered,
        exited=job.exited + exited,
        status=DONE if finished else job.status,
        updated_at=now,
        finished_at=now if finished else None,
    )
