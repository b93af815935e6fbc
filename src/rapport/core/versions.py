"""Versioned definitions: what every write of a segment, computed trait... stores.

Definitions (segments, computed traits) are addressed by an id unique in
their workspace, and every write stores the next version: a create, an
update, and a delete too, which stores a ``deleted`` tombstone. So a version
number never names two different definitions, even across a delete and a
re-create of the same id, and a runtime that cached a definition sees that
it went away. ``created_at`` is kept across updates and new after a delete.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Protocol, TypeVar

import msgspec

ACTIVE: Final = "active"
DELETED: Final = "deleted"


class Versioned(Protocol):
    @property
    def version(self) -> int: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def active(self) -> bool: ...


def next_version(previous: Versioned | None, now: datetime) -> dict[str, Any]:
    """The ``version``, ``status``, ``created_at`` and ``updated_at`` a write stores
    after ``previous`` (the stored version, active or deleted, if any)."""
    recreated = previous is None or not previous.active
    return {
        "version": 1 if previous is None else previous.version + 1,
        "status": ACTIVE,
        "created_at": now if recreated or previous is None else previous.created_at,
        "updated_at": now,
    }


_Definition = TypeVar("_Definition", bound=msgspec.Struct)


def tombstone(previous: _Definition, now: datetime) -> _Definition:
    """The version that deleting ``previous`` stores: the same, ``deleted``, one version on."""
    version: int = getattr(previous, "version")  # noqa: B009 - any versioned struct
    return msgspec.structs.replace(previous, status=DELETED, version=version + 1, updated_at=now)
