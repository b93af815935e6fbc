"""What every consumer of the event log shares: its name, its offset, a wake-up and a wait.

Three consumers follow the log, each with its own committed offset in
storage (``Storage.consumer_offset``): the processor (``profiles``), the
membership index (``memberships``) and the journey triggers
(``journey-triggers``). Each reads after its offset, commits what it made
of a batch together with the new offset, and may be woken early when
something is appended (``notify``). Callers such as ``Rapport.settle``
wait until one of them has got somewhere (``reached``). ``LogConsumer``
holds that common part; what a consumer does with a batch, and when it
commits, is its own.
"""

from __future__ import annotations

import asyncio

from rapport.runtime.progress import Progress
from rapport.storage.base import Storage


class LogConsumer:
    """A named consumer of the event log: its offset, loaded, announced and waited on."""

    def __init__(self, storage: Storage, consumer: str) -> None:
        self._storage = storage
        self.consumer = consumer
        self._offset: int | None = None
        """Offset up to which the log is handled; None until loaded from storage."""
        self._committed = 0
        """The offset storage holds for this consumer, as far as this one knows."""
        self._wake = asyncio.Event()
        self._progress = Progress(lambda: self._offset or 0)

    @property
    def consumed_offset(self) -> int:
        """Offset up to which the log is handled (0 before loading)."""
        return self._offset or 0

    async def load_offset(self) -> int:
        """Read this consumer's committed offset from storage and start from there."""
        self._offset = self._committed = await self._storage.consumer_offset(self.consumer)
        await self._announce()
        return self._offset

    def notify(self) -> None:
        """Wake an idle run loop: events were appended (or upstream moved)."""
        self._wake.set()

    async def reached(self, offset: int, timeout: float) -> bool:
        """Wait until the log up to ``offset`` is handled; False on timeout."""
        return await self._progress.reached(offset, timeout)

    async def _announce(self) -> None:
        """The offset moved (or was loaded): wake whoever waits in ``reached``."""
        await self._progress.announce()
