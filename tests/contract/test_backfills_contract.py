"""The segment-backfill part of the ``Storage`` contract, over every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rapport.core.backfill import (
    COMPUTED_TRAIT,
    DONE,
    RUNNING,
    SEGMENT,
    advance_backfill,
    start_backfill,
)
from rapport.core.computed_traits import ComputedTraitDraft
from rapport.core.model import ProfileEvent
from rapport.core.profiles import new_profile
from rapport.core.segments import SegmentDraft
from rapport.storage.base import ProcessingBatch
from tests.contract.conftest import Backend, BackendFactory

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WS = "ws_a"


async def store_profiles(backend: Backend, workspace_id: str, ids: list[str]) -> None:
    storage, _ = backend
    profiles = [new_profile(pid, workspace_id, T0) for pid in ids]
    await storage.commit_processing(ProcessingBatch(consumer="seed", offset=1, profiles=profiles))


async def test_scan_walks_a_workspace_in_id_order_in_pages(backend: Backend) -> None:
    storage, _ = backend
    ids = [f"prof_{n:04d}" for n in (7, 3, 11, 1, 5, 9, 2)]
    await store_profiles(backend, WS, ids)
    await store_profiles(backend, "ws_other", ["prof_0004", "prof_0006"])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await storage.scan_profiles(WS, cursor, 3)
        if not page:
            break
        assert len(page) <= 3
        seen.extend(profile.id for profile in page)
        cursor = page[-1].id
    assert seen == sorted(ids)
    assert all(p.workspace_id == WS for p in await storage.scan_profiles(WS, None, 100))
    assert await storage.count_profiles(WS) == len(ids)
    assert await storage.count_profiles("ws_other") == 2
    assert await storage.count_profiles("ws_none") == 0
    assert await storage.scan_profiles(WS, "prof_0011", 10) == []


async def test_a_job_reads_back_whole_and_advances(backend: Backend) -> None:
    storage, _ = backend
    job = start_backfill(WS, "gold", 1, total=7, now=T0)
    assert await storage.put_backfill(job)
    assert await storage.get_backfill(WS, "gold") == job
    assert await storage.get_backfill(WS, "silver") is None
    later = T0 + timedelta(seconds=3)
    page = advance_backfill(
        job, cursor="prof_0005", processed=4, entered=2, exited=0, finished=False, now=later
    )
    assert await storage.put_backfill(page)
    read = await storage.get_backfill(WS, "gold")
    assert read is not None
    assert (read.cursor, read.processed, read.entered, read.running) == ("prof_0005", 4, 2, True)
    assert read.progress == pytest.approx(4 / 7)
    done = advance_backfill(
        page, cursor=None, processed=3, entered=1, exited=1, finished=True, now=later
    )
    assert await storage.put_backfill(done)
    read = await storage.get_backfill(WS, "gold")
    assert read is not None
    assert (read.status, read.cursor, read.processed, read.entered, read.exited) == (
        DONE,
        "prof_0005",
        7,
        3,
        1,
    )
    assert read.finished_at == later and read.progress == 1.0


async def test_an_older_versions_progress_never_replaces_a_newer_job(backend: Backend) -> None:
    storage, _ = backend
    v1 = start_backfill(WS, "gold", 1, total=10, now=T0)
    await storage.put_backfill(v1)
    v2 = start_backfill(WS, "gold", 2, total=10, now=T0 + timedelta(seconds=1))
    assert await storage.put_backfill(v2)
    stale = advance_backfill(
        v1, cursor="prof_9", processed=5, entered=5, exited=0, finished=False, now=T0
    )
    assert not await storage.put_backfill(stale)
    assert await storage.get_backfill(WS, "gold") == v2
    # The same version may always be rewritten (a page's progress, its end).
    ended = advance_backfill(
        v2, cursor=None, processed=10, entered=0, exited=0, finished=True, now=T0
    )
    assert await storage.put_backfill(ended)
    assert await storage.get_backfill(WS, "gold") == ended


async def test_running_jobs_across_workspaces_oldest_first(backend: Backend) -> None:
    storage, _ = backend
    a = start_backfill("ws_b", "a", 1, total=1, now=T0 + timedelta(seconds=2))
    b = start_backfill(WS, "b", 3, total=1, now=T0)
    c = start_backfill(WS, "c", 1, total=1, now=T0 + timedelta(seconds=1))
    for job in (a, b, c):
        await storage.put_backfill(job)
    finished = advance_backfill(
        c, cursor=None, processed=1, entered=0, exited=0, finished=True, now=T0
    )
    await storage.put_backfill(finished)
    running = await storage.running_backfills()
    assert [(job.workspace_id, job.segment_id) for job in running] == [(WS, "b"), ("ws_b", "a")]


async def test_jobs_survive_a_reopen(backend_factory: BackendFactory) -> None:
    if not backend_factory.supports_reopen:
        pytest.skip("nothing survives closing this backend")
    first = await backend_factory.open()
    job = start_backfill(WS, "gold", 4, total=3, now=T0)
    await first[0].put_backfill(job)
    await backend_factory.close(first)
    storage, _ = await backend_factory.open()
    assert await storage.get_backfill(WS, "gold") == job
    assert await storage.running_backfills() == [job]


async def test_every_definition_write_starts_the_job_of_its_version(backend: Backend) -> None:
    storage, _ = backend
    await store_profiles(backend, WS, ["prof_a", "prof_b", "prof_c"])
    draft = SegmentDraft(
        workspace_id=WS,
        id="gold",
        name="Gold",
        kind="dynamic",
        condition={"trait": "plan", "op": "equals", "value": "gold"},
    )
    v1 = await storage.put_segment(draft, T0)
    job = await storage.get_backfill(WS, "gold")
    assert job is not None
    assert (job.version, job.status, job.total, job.cursor, job.started_at) == (
        v1.version,
        RUNNING,
        3,
        None,
        T0,
    )
    v2 = await storage.put_segment(draft, T0 + timedelta(seconds=1))
    job = await storage.get_backfill(WS, "gold")
    assert job is not None and job.version == v2.version
    # The first version's walk can no longer write its progress.
    stale = start_backfill(WS, "gold", v1.version, total=3, now=T0)
    assert not await storage.put_backfill(stale)
    tombstone = await storage.delete_segment(WS, "gold", T0 + timedelta(seconds=2))
    assert tombstone is not None
    job = await storage.get_backfill(WS, "gold")
    # Deleting walks the members out.
    assert job is not None and (job.version, job.status) == (tombstone.version, RUNNING)
    assert [j.version for j in await storage.running_backfills()] == [tombstone.version]


async def test_timeline_events_by_profiles_names_and_time(backend: Backend) -> None:
    storage, _ = backend
    await store_profiles(backend, WS, ["prof_a", "prof_b", "prof_c"])

    def event(offset: int, profile_id: str, name: str, minutes: int) -> ProfileEvent:
        at = T0 + timedelta(minutes=minutes)
        return ProfileEvent(
            workspace_id=WS,
            profile_id=profile_id,
            offset=offset,
            message_id=f"m{offset}",
            type="track",
            name=name,
            timestamp=at,
            received_at=at,
            body=b'{"n":%d}' % offset,
        )

    events = [
        event(1, "prof_a", "Viewed", 0),
        event(2, "prof_b", "Viewed", 5),
        event(3, "prof_a", "Ordered", 10),
        event(4, "prof_c", "Viewed", 15),
        event(5, "prof_a", "Viewed", 20),
        event(6, "prof_b", "Clicked", 25),
    ]
    await storage.commit_processing(ProcessingBatch(consumer="seed", offset=6, events=events))
    found = await storage.timeline_events(WS, ["prof_a", "prof_b"], ["Viewed", "Ordered"], None)
    assert [e.offset for e in found] == [1, 2, 3, 5]
    assert found[0] == events[0]
    recent = await storage.timeline_events(
        WS, ["prof_a", "prof_b"], ["Viewed"], T0 + timedelta(minutes=5)
    )
    assert [e.offset for e in recent] == [2, 5]
    assert await storage.timeline_events(WS, [], ["Viewed"], None) == []
    assert await storage.timeline_events(WS, ["prof_a"], [], None) == []
    assert await storage.timeline_events("ws_other", ["prof_a"], ["Viewed"], None) == []
    every = await storage.timeline_events(WS, ["prof_a", "prof_b"], None, None)
    assert [e.offset for e in every] == [1, 2, 3, 5, 6]
    late = await storage.timeline_events(WS, ["prof_b"], None, T0 + timedelta(minutes=6))
    assert [e.offset for e in late] == [6]


async def test_computed_trait_writes_start_jobs_kept_apart_from_segments(
    backend: Backend,
) -> None:
    storage, _ = backend
    await store_profiles(backend, WS, ["prof_a", "prof_b"])
    segment = SegmentDraft(
        workspace_id=WS,
        id="gold",
        name="Gold",
        kind="dynamic",
        condition={"trait": "plan", "op": "equals", "value": "gold"},
    )
    await storage.put_segment(segment, T0)
    trait = ComputedTraitDraft(
        workspace_id=WS, id="gold", kind="aggregate", compute={"event": "Order Completed"}
    )
    later = T0 + timedelta(seconds=1)
    v1 = await storage.put_computed_trait(trait, later)
    job = await storage.get_computed_trait_backfill(WS, "gold")
    assert job is not None
    assert (job.kind, job.version, job.status, job.total, job.started_at) == (
        COMPUTED_TRAIT,
        v1.version,
        RUNNING,
        2,
        later,
    )
    # Same id, other kind: the segment's job is its own.
    segment_job = await storage.get_backfill(WS, "gold")
    assert segment_job is not None and segment_job.kind == SEGMENT
    assert await storage.get_computed_trait_backfill(WS, "silver") is None
    assert [j.kind for j in await storage.running_backfills()] == [SEGMENT, COMPUTED_TRAIT]

    done = advance_backfill(
        job, cursor="prof_b", processed=2, entered=1, exited=0, changed=2, finished=True, now=later
    )
    assert await storage.put_backfill(done)
    assert await storage.get_computed_trait_backfill(WS, "gold") == done
    assert await storage.get_backfill(WS, "gold") == segment_job
    assert [j.kind for j in await storage.running_backfills()] == [SEGMENT]

    v2 = await storage.put_computed_trait(trait, later + timedelta(seconds=1))
    assert not await storage.put_backfill(done), "a replaced version's progress is refused"
    job = await storage.get_computed_trait_backfill(WS, "gold")
    assert job is not None and (job.version, job.status, job.changed) == (v2.version, RUNNING, 0)
    # Deleting needs no walk: the job of the last active version stays as it is.
    assert await storage.delete_computed_trait(WS, "gold", later + timedelta(seconds=2))
    assert await storage.get_computed_trait_backfill(WS, "gold") == job
