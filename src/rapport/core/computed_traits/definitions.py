"""Computed-trait definitions: named, versioned rules that keep a trait up to date.

A computed trait is declared once per workspace (``lifetime_revenue = sum of
properties.revenue over "Order Completed"``) and its value is then written on
every profile by the processor, as the events that change it arrive. Its id
*is* the trait name, a slug like a segment's id.

Versioning follows segments (``rapport.core.segments``): every write
(create, update, delete) stores the next version, and deleting is soft (a
``deleted`` tombstone keeps the version sequence going if the name is
reused), so processors that cached a definition see that it changed.

This module imports nothing from ``rapport.core.segments``: the segment
code imports ``is_computed_state_id`` from here to leave computed-trait
states alone.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

import msgspec

from rapport.core.versions import ACTIVE, next_version, tombstone
from rapport.core.versions import DELETED as DELETED  # re-exported

TRAIT_ID_PATTERN: Final = r"[a-z0-9](?:[a-z0-9_-]{0,98}[a-z0-9])?"
"""The segment id rule: lowercase letters, digits, ``-`` and ``_``; 1-100 characters."""
_TRAIT_ID = re.compile(TRAIT_ID_PATTERN)

MAX_DESCRIPTION_LENGTH: Final = 2000

AGGREGATE: Final = "aggregate"
ENGAGEMENT_SCORE: Final = "engagement_score"
USUAL_TIME: Final = "usual_time"
TYPICAL_LEAD: Final = "typical_lead"
KINDS: Final = (AGGREGATE, ENGAGEMENT_SCORE, USUAL_TIME, TYPICAL_LEAD)

RESERVED_NAMES: Final = frozenset(("first_seen", "last_seen", "event_count"))
"""Profile fields the core already keeps for every customer event (``core.profiles``).

A computed trait of the same name would be a second, different value under
the same word, so these names are refused.
"""

COMPUTED_SOURCE: Final = "rapport:computed"
"""The ``source`` of every computed trait value (its provenance)."""

STATE_PREFIX: Final = "ct_"
"""Computed traits keep their states in ``Profile.aggregates`` under ids with this prefix.

Segments keep theirs under ``agg_...``: the two namespaces never collide, and
each side drops only the stale states of its own namespace.
"""


def is_computed_state_id(state_id: str) -> bool:
    """Whether a ``Profile.aggregates`` id belongs to computed traits."""
    return state_id.startswith(STATE_PREFIX)


def is_trait_id(value: str) -> bool:
    return _TRAIT_ID.fullmatch(value) is not None


class ComputedTraitDefinition(msgspec.Struct, frozen=True, kw_only=True):
    """One stored version of a computed-trait definition."""

    workspace_id: str
    id: str
    """The trait's name on profiles."""
    kind: str
    compute: Any
    """What to compute, as JSON: see docs/computed-traits.md for each kind."""
    version: int
    status: str
    created_at: datetime
    """When this id was (re)created; kept across updates, new after a delete."""
    updated_at: datetime
    description: str = ""

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


class ComputedTraitDraft(msgspec.Struct, frozen=True, kw_only=True):
    """What a caller writes; the storage adds version, status and times."""

    workspace_id: str
    id: str
    kind: str
    compute: Any
    description: str = ""


class ComputedTraitAlreadyExists(Exception):
    """A create-only write found an active definition with the same id."""

    def __init__(self, workspace_id: str, trait_id: str) -> None:
        super().__init__(f"computed trait {trait_id!r} already exists")
        self.workspace_id = workspace_id
        self.trait_id = trait_id


def next_computed_trait(
    previous: ComputedTraitDefinition | None, draft: ComputedTraitDraft, now: datetime
) -> ComputedTraitDefinition:
    """The version that writing ``draft`` stores after ``previous`` (active or deleted)."""
    return ComputedTraitDefinition(
        workspace_id=draft.workspace_id,
        id=draft.id,
        kind=draft.kind,
        compute=draft.compute,
        description=draft.description,
        **next_version(previous, now),
    )


def deleted_computed_trait(
    previous: ComputedTraitDefinition, now: datetime
) -> ComputedTraitDefinition:
    """The tombstone that deleting ``previous`` stores."""
    return tombstone(previous, now)
