"""What ``rapport segments`` prints: definitions and backfill progress, read from storage.

The processor runs backfills (``rapport.runtime.backfill``); these commands
only read, so they work beside a running ``serve`` or ``worker`` on the same
data directory or database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rapport.core.backfill import BackfillJob
from rapport.runtime.service import open_backends
from rapport.settings import Settings
from rapport.storage.base import Storage


def describe_backfill(job: BackfillJob | None) -> str:
    """One line: ``running 42% (420,000 of 1,000,000 profiles, 12 entered, 0 exited)``."""
    if job is None:
        return "no backfill"
    counts = f"{job.entered:,} entered, {job.exited:,} exited"
    if job.running:
        return (
            f"running {job.progress:.0%} ({job.processed:,} of about {job.total:,} profiles,"
            f" {counts})"
        )
    took = ""
    if job.finished_at is not None:
        took = f" in {(job.finished_at - job.started_at).total_seconds():.1f} s"
    return f"{job.status} ({job.processed:,} profiles{took}, {counts})"


async def _workspace_id(storage: Storage, name: str) -> str:
    workspace = await storage.find_workspace(name)
    if workspace is None:
        raise LookupError(f"no workspace called {name!r}")
    return workspace.id


async def list_segments(settings: Settings, workspace: str) -> list[str]:
    storage, event_log = await open_backends(settings)
    try:
        try:
            ws = await _workspace_id(storage, workspace)
        except LookupError as exc:
            return [str(exc)]
        lines = []
        for definition in await storage.list_segments(ws):
            job = await storage.get_backfill(ws, definition.id)
            lines.append(
                f"{definition.id}  {definition.kind}  v{definition.version}  "
                f"{describe_backfill(job)}"
            )
        return lines or ["no segments"]
    finally:
        await event_log.close()
        await storage.close()


async def follow_backfill(
    settings: Settings,
    workspace: str,
    segment_id: str,
    follow: bool,
    interval: float,
    echo: Callable[[str], None],
) -> bool:
    """Print the job's progress (until it is done with ``follow``); False if there is none."""
    storage, event_log = await open_backends(settings)
    try:
        try:
            ws = await _workspace_id(storage, workspace)
        except LookupError as exc:
            echo(str(exc))
            return False
        while True:
            job = await storage.get_backfill(ws, segment_id)
            if job is None:
                echo(f"segment {segment_id!r} has no backfill (is the id right?)")
                return False
            echo(f"{segment_id} v{job.version}: {describe_backfill(job)}")
            if not follow or not job.running:
                return True
            await asyncio.sleep(interval)
    finally:
        await event_log.close()
        await storage.close()
