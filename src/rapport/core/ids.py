"""Id generation as an injected dependency, so tests are deterministic."""

from __future__ import annotations

import itertools
from typing import Protocol


class IdGenerator(Protocol):
    def new_id(self, prefix: str) -> str: ...


class SequentialIds:
    """Deterministic ids (``prof_000001``...) for tests and replays."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._counter):06d}"
