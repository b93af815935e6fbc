"""Inline processing gives way to ingest while it is not far behind (``ingest_priority``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from rapport.api.app import create_app
from rapport.api.ingest_priority import GIVE_WAY_BELOW, QUIET_SECONDS, IngestActivity
from tests.api.conftest import ApiHarness

MAX_LAG = 1000
BEHIND = int(MAX_LAG * GIVE_WAY_BELOW)
"""The lag from which processing stops giving way."""


async def timed(activity: IngestActivity, lag: int = 0) -> float:
    started = time.monotonic()
    await activity.give_way(lag, MAX_LAG)
    return time.monotonic() - started


class Loop:
    """How busy the event loop's thread looks: its CPU time runs at ``share`` of the wall clock.

    Injected as the activity's ``thread_time``, so what is tested is the
    decision, not how much CPU this (shared, noisy) machine gives a busy loop.
    """

    def __init__(self) -> None:
        self.share = 0.0
        self._cpu = 0.0
        self._at = time.monotonic()

    def thread_time(self) -> float:
        now = time.monotonic()
        self._cpu += (now - self._at) * self.share
        self._at = now
        return self._cpu

    def set(self, share: float) -> None:
        self.thread_time()  # account the time so far at the old share
        self.share = share


LOOP = Loop()


@contextlib.asynccontextmanager
async def busy_loop() -> AsyncIterator[None]:
    """The loop's thread computing all the time, as under a flood of requests."""
    LOOP.set(1.0)
    try:
        yield
    finally:
        LOOP.set(0.0)


def activity_with_a_request() -> IngestActivity:
    activity = IngestActivity(
        max_wait=0.2, probe=0.01, busy_share=0.2, thread_time=LOOP.thread_time
    )
    activity.begin()
    return activity


async def test_processing_goes_on_at_once_without_ingest() -> None:
    activity = IngestActivity(max_wait=5.0, probe=0.5, thread_time=LOOP.thread_time)
    async with busy_loop():  # some other work: not ingest, so no reason to wait
        assert await timed(activity) < 0.1


async def test_processing_waits_while_ingest_keeps_the_loop_busy() -> None:
    activity = activity_with_a_request()
    async with busy_loop():
        # Never longer than max_wait: a flood still leaves room for a step.
        assert 0.19 <= await timed(activity) < 2.0


async def test_processing_goes_on_when_ingest_leaves_the_loop_idle() -> None:
    # A request waiting for the event log's commit needs no CPU.
    activity = activity_with_a_request()
    assert await timed(activity) < 0.1


async def test_requests_answered_a_moment_ago_still_count() -> None:
    # Group commit answers every waiting request at once; under a flood their
    # clients send the next ones right after, so none in flight is no pause.
    activity = activity_with_a_request()
    activity.end()
    async with busy_loop():
        assert 0.19 <= await timed(activity) < 2.0
    await asyncio.sleep(QUIET_SECONDS)
    async with busy_loop():
        assert await timed(activity) < 0.1


@pytest.mark.parametrize("lag", [BEHIND, MAX_LAG, 10 * MAX_LAG])
async def test_processing_far_behind_does_not_wait(lag: int) -> None:
    activity = activity_with_a_request()
    async with busy_loop():
        assert await timed(activity, lag) < 0.1
        assert await timed(activity, BEHIND - 1) >= 0.19


async def test_processing_is_told_whether_ingest_goes_on() -> None:
    quiet = IngestActivity(max_wait=5.0, probe=0.5, thread_time=LOOP.thread_time)
    assert await quiet.give_way(0, MAX_LAG) is False
    activity = activity_with_a_request()
    assert await activity.give_way(0, MAX_LAG) is True, "the loop idle, a request in flight"
    async with busy_loop():
        assert await activity.give_way(0, MAX_LAG) is True, "waited max_wait: a flood"
        assert await activity.give_way(BEHIND, MAX_LAG) is True, "too far behind to wait"
    activity.end()
    await asyncio.sleep(QUIET_SECONDS)
    assert await activity.give_way(0, MAX_LAG) is False, "no request for a while"


async def test_ingest_requests_are_counted_and_the_processor_is_wired(api: ApiHarness) -> None:
    app = create_app(api.rapport)
    activity: IngestActivity = app.state.ingest_activity
    assert api.rapport.processor.give_way is not None
    seen: list[int] = []
    begin = activity.begin

    def counting_begin() -> None:
        begin()
        seen.append(activity.in_flight)

    activity.begin = counting_begin  # type: ignore[method-assign]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rapport.test") as client:
        response = await client.post(
            "/v1/batch",
            json={"batch": [{"type": "track", "event": "X", "userId": "u1"}]},
            auth=(api.write_key, ""),
        )
    assert response.status_code == 200
    assert (seen, activity.in_flight) == ([1], 0)
    # The request is over: processing is not held back by it.
    await api.settle()
