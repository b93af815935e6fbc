"""What a condition reads while it is evaluated, as a small protocol.

The runtime decides where the values come from (a loaded profile, stored
memberships, aggregate states read at ``now``); conditions only ask.
Two ready implementations: ``SnapshotContext`` over plain mappings (tests,
previews, backfills) and ``ProfileContext`` over a ``Profile``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from rapport.core.conditions.aggregates import EMPTY_READING, AggregateReading
from rapport.core.model import Profile


class EvaluationContext(Protocol):
    @property
    def now(self) -> datetime:
        """The instant of evaluation (from the runtime's ``Clock``)."""
        ...

    def trait(self, name: str) -> Any:
        """The value of a top-level trait, or ``None`` if the profile has none."""
        ...

    def consent(self, category: str) -> bool | None:
        """``True``/``False`` if the category was granted/denied; ``None`` if never stated."""
        ...

    def in_segment(self, segment_id: str) -> bool: ...

    def aggregate(self, aggregate_id: str) -> AggregateReading:
        """The aggregate's reading at ``now`` (``Aggregator.read``); empty if no state."""
        ...


@dataclass(slots=True)
class SnapshotContext:
    """A context over plain values."""

    now: datetime
    traits: Mapping[str, Any] = field(default_factory=dict)
    consents: Mapping[str, bool] = field(default_factory=dict)
    segments: Collection[str] = frozenset()
    aggregates: Mapping[str, AggregateReading] = field(default_factory=dict)

    def trait(self, name: str) -> Any:
        return self.traits.get(name)

    def consent(self, category: str) -> bool | None:
        return self.consents.get(category)

    def in_segment(self, segment_id: str) -> bool:
        return segment_id in self.segments

    def aggregate(self, aggregate_id: str) -> AggregateReading:
        return self.aggregates.get(aggregate_id, EMPTY_READING)


class ProfileContext:
    """A context over a ``Profile`` (trait values without their provenance).

    Aggregates come either from ready ``aggregates`` readings or from
    ``read_aggregate``, called only when a condition asks for one: a failing
    trait test in an ``all`` then costs no aggregate reading at all. The
    runtime keeps one context for every segment evaluated after an event and
    replaces ``segments`` when a membership changes, which is the only thing
    such a change can alter.
    """

    __slots__ = ("_profile", "aggregate", "now", "segments")

    aggregate: Callable[[str], AggregateReading]
    """The aggregate's reading at ``now`` (an attribute, to save a call per read)."""

    def __init__(
        self,
        profile: Profile,
        now: datetime,
        segments: Collection[str] = frozenset(),
        aggregates: Mapping[str, AggregateReading] | None = None,
        read_aggregate: Callable[[str], AggregateReading] | None = None,
    ) -> None:
        if read_aggregate is None:
            readings: Mapping[str, AggregateReading] = aggregates if aggregates is not None else {}

            def read_aggregate(aggregate_id: str) -> AggregateReading:
                return readings.get(aggregate_id, EMPTY_READING)

        elif aggregates is not None:
            raise ValueError("give either aggregates or read_aggregate, not both")
        self._profile = profile
        self.now = now
        self.segments = segments
        self.aggregate = read_aggregate

    def trait(self, name: str) -> Any:
        stored = self._profile.traits.get(name)
        return None if stored is None else stored.value

    def consent(self, category: str) -> bool | None:
        stored = self._profile.consent.get(category)
        return None if stored is None else stored.granted

    def in_segment(self, segment_id: str) -> bool:
        return segment_id in self.segments
