"""Inline processing gives way to a flood of ingest while it is not far behind.

``rapport serve`` ingests and processes events in one process, on one event
loop (and one GIL). A processing step is CPU work that holds the loop for
tens of milliseconds, so under a flood of requests the two used to share the
loop about evenly, and ingest ran at half the speed it reaches with
processing in another process. Yet an accepted event only has to be durable;
processing it can wait a little, and the event log is there to absorb
bursts.

So, before each step, the processor gives way while ingest keeps the event
loop busy: it waits as long as, sampled over ``PROBE_SECONDS`` at a time,
the loop's thread is busy more than ``BUSY_SHARE`` of the time -- never
longer than ``max_wait``, so it still takes a step every ``max_wait`` under a
flood -- a short one: while ingest goes on, a step takes at most
``processor.BUSY_STEP`` events, whatever ``processing_batch_size`` allows.
(Counting requests in flight is not enough: the event log's group commit
answers all waiting requests at once, so under a flood there are moments
with none in flight, just before their clients send the next.)
Moderate ingest leaves the loop idle most of the time: then processing goes
on after one probe and stays close behind, as before; with no ingest at all
for ``QUIET_SECONDS`` it goes on at once.

It gives way only while it is less than ``GIVE_WAY_BELOW`` of
``max_processing_lag`` behind. Past that, ingest and processing share the
loop as before; at the limit itself ingest answers 429 (the backpressure
that bounds how far processing can fall behind). A burst smaller than half
the lag limit is thus accepted at the speed of ingest alone and processed
right after; sustained ingest beyond what processing can follow still ends
in 429s, as without this.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

MAX_WAIT_SECONDS = 1.0
"""Longest a processing step waits for ingest to ease off."""

PROBE_SECONDS = 0.01
"""How long each look at the loop's load lasts."""

BUSY_SHARE = 0.3
"""Share of the loop's thread that ingest must use for processing to wait."""

QUIET_SECONDS = 0.05
"""No request for this long: processing does not even probe the loop."""

GIVE_WAY_BELOW = 0.5
"""Processing gives way while its lag is below this share of ``max_processing_lag``."""


class IngestActivity:
    """Counts the ingest requests in flight; inline processing waits on it."""

    def __init__(
        self,
        max_wait: float = MAX_WAIT_SECONDS,
        probe: float = PROBE_SECONDS,
        busy_share: float = BUSY_SHARE,
        thread_time: Callable[[], float] = time.thread_time,
    ) -> None:
        if max_wait < 0 or probe <= 0 or not 0 <= busy_share <= 1:
            raise ValueError("max_wait >= 0, probe > 0 and 0 <= busy_share <= 1 are required")
        self.max_wait = max_wait
        self.probe = probe
        self.busy_share = busy_share
        self._thread_time = thread_time
        """CPU time of the loop's thread (injectable: tests say how busy the loop is)."""
        self._in_flight = 0
        self._last_change = 0.0
        """``time.monotonic()`` when a request last started or ended."""

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def begin(self) -> None:
        """An ingest request starts."""
        self._in_flight += 1
        self._last_change = time.monotonic()

    def end(self) -> None:
        """An ingest request is answered."""
        self._in_flight -= 1
        self._last_change = time.monotonic()

    async def give_way(self, lag: int, max_lag: int) -> bool:
        """Return once ingest leaves the loop mostly idle, after ``max_wait`` at most.

        Returns at once when processing is ``lag`` events behind and that
        is ``GIVE_WAY_BELOW`` of ``max_lag`` or more. Call it on the event
        loop's thread: its CPU time is what tells how busy the loop is.

        Whether ingest is going on (a request in flight or answered less
        than ``QUIET_SECONDS`` ago): processing then takes short steps, so that
        the two share the loop in short turns; without ingest it catches up
        in full ones.
        """
        if self._quiet():
            return False
        if lag >= max_lag * GIVE_WAY_BELOW:
            return True
        deadline = time.monotonic() + self.max_wait
        while time.monotonic() < deadline:
            # While this waits, what the loop's thread computes is the others'
            # work -- here, ingest.
            wall, cpu = time.monotonic(), self._thread_time()
            await asyncio.sleep(self.probe)
            wall, cpu = time.monotonic() - wall, self._thread_time() - cpu
            if cpu < wall * self.busy_share:
                break
        return True

    def _quiet(self) -> bool:
        return not self._in_flight and time.monotonic() - self._last_change >= QUIET_SECONDS
