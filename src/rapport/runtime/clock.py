"""The wall clock and id source, for the shell only (the core takes any ``Clock``)."""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class RandomIds:
    """Time-ordered unique ids: ``prefix_`` + 12 hex of milliseconds + 16 random hex.

    Ids that grow with time keep new rows at the right edge of every index
    they appear in (profiles, timelines, identifiers), so inserting many new
    customers rewrites few pages; with purely random ids each insert lands on
    a random page. 64 random bits per millisecond make collisions negligible.
    Ids are not secrets (keys are, and come from ``secrets``).
    """

    def __init__(self) -> None:
        # Seeded from the OS so two processes never share a sequence.
        self._random = random.Random(os.urandom(32))

    def new_id(self, prefix: str) -> str:
        millis = time.time_ns() // 1_000_000
        return f"{prefix}_{millis:012x}{self._random.getrandbits(64):016x}"
