"""Waiting for a log consumer to get somewhere: one condition, announced at each step.

Several consumers follow the event log (profiles, the membership index,
journey triggers); callers such as ``Rapport.settle`` wait until one of them
has handled the log up to an offset. ``Progress`` is that wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class Progress:
    """Wakes whoever waits for ``offset()`` to reach a value, when told it moved."""

    def __init__(self, offset: Callable[[], int]) -> None:
        self._offset = offset
        self._moved = asyncio.Condition()

    async def announce(self) -> None:
        """The consumer's offset moved (or was loaded)."""
        async with self._moved:
            self._moved.notify_all()

    async def reached(self, offset: int, timeout: float) -> bool:
        """Wait until the consumer's offset is at least ``offset``; False on timeout."""
        if self._offset() >= offset:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), self._moved:
                await self._moved.wait_for(lambda: self._offset() >= offset)
        return self._offset() >= offset
