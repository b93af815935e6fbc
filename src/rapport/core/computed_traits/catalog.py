"""Computed-trait definitions compiled into computations, indexed by the events they count.

A ``ComputedTraitCatalog`` compiles a workspace's active definitions once
into *computations* -- an ``Aggregator`` of the condition language
(rapport.core.conditions) or an ``Engagement`` -- indexed by the events that
feed them. Definitions that compute the same thing share one computation and
one state per profile. Applying an event is ``update.apply_computed_traits``.

Between events a windowed value may go stale (orders in the last 90 days
dropping as time passes); ``ComputedTraitCatalog.next_change`` tells when,
and ``update.refresh_computed_traits`` brings a profile up to date then.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from rapport.core.computed_traits.definitions import (
    AGGREGATE,
    ENGAGEMENT_SCORE,
    STATE_PREFIX,
    TYPICAL_LEAD,
    USUAL_TIME,
    ComputedTraitDefinition,
)
from rapport.core.computed_traits.engagement import (
    Engagement,
    EngagementState,
    engagement_spec,
)
from rapport.core.computed_traits.typical_lead import (
    TypicalLead,
    TypicalLeadState,
    typical_lead_spec,
)
from rapport.core.computed_traits.usual_time import UsualTime, UsualTimeState, usual_time_spec
from rapport.core.computed_traits.validate import InvalidComputedTrait, validate_compute
from rapport.core.conditions import AggregateState, Aggregator, aggregate_spec
from rapport.core.conditions.aggregates import empty_value
from rapport.core.conditions.instants import from_micros, to_micros
from rapport.core.model import Event, Profile


class Computation(abc.ABC):
    """One incrementally maintained value, and the traits that show it."""

    state_id: str
    windowed: bool
    """Whether time alone changes the value (events age out of a window)."""
    window_us: int | None
    """How far back the events it counts go (``None``: all time); a backfill reads no further."""
    traits: tuple[str, ...]
    """The names of the computed traits showing this value (usually one)."""
    events: frozenset[str]
    """Names of the track events that feed it."""
    every_track: bool = False
    """Whether every track event feeds it (then ``events`` is not exhaustive)."""
    pages: bool = False
    """Whether ``page`` and ``screen`` calls feed it."""

    @abc.abstractmethod
    def decode(self, raw: bytes) -> Any: ...

    @abc.abstractmethod
    def encode(self, state: Any) -> bytes: ...

    @abc.abstractmethod
    def empty(self) -> Any: ...

    @abc.abstractmethod
    def is_empty(self, state: Any) -> bool: ...

    @abc.abstractmethod
    def observe(self, state: Any, event: Event, at: int, now: int) -> Any:
        """``state`` after ``event`` at ``at`` microseconds, expired to ``now``."""

    @abc.abstractmethod
    def expire(self, state: Any, now: int) -> Any: ...

    @abc.abstractmethod
    def next_expiry(self, state: Any) -> int | None:
        """When time alone next changes the state (its oldest event ages out)."""

    @abc.abstractmethod
    def value(self, state: Any, now: int) -> Any:
        """The trait's value at ``now``."""

    @abc.abstractmethod
    def merge(self, a: Any, b: Any, now: int) -> Any:
        """The state of the union of the events ``a`` and ``b`` counted, expired to ``now``."""


class AggregateComputation(Computation):
    """An aggregate of the condition language; keyed aggregates give ``{key: value}``."""

    def __init__(self, aggregator: Aggregator, traits: tuple[str, ...]) -> None:
        self.aggregator = aggregator
        spec = aggregator.spec
        self.state_id = STATE_PREFIX + spec.id.removeprefix("agg_")
        self.windowed = spec.window_us is not None
        self.window_us = spec.window_us
        self.traits = traits
        self.events = frozenset((spec.event,))
        self._empty = empty_value(spec.aggregate)

    def decode(self, raw: bytes) -> AggregateState:
        # The aggregator knows its slots' shape (and reads states stored before).
        return self.aggregator.decode(raw)

    def encode(self, state: AggregateState) -> bytes:
        return self.aggregator.encode(state)

    def empty(self) -> AggregateState:
        return self.aggregator.empty()

    def is_empty(self, state: AggregateState) -> bool:
        return not state.keys

    def observe(self, state: AggregateState, event: Event, at: int, now: int) -> AggregateState:
        return self.aggregator.observe_micros(state, event, at, now)

    def expire(self, state: AggregateState, now: int) -> AggregateState:
        return self.aggregator.expire_micros(state, now)

    def next_expiry(self, state: AggregateState) -> int | None:
        return state.next_expiry

    def value(self, state: AggregateState, now: int) -> Any:
        values = self.aggregator.read_micros(state, now).values
        if self.aggregator.keyed:
            return dict(sorted(values.items()))
        return values.get("", self._empty)

    def merge(self, a: AggregateState, b: AggregateState, now: int) -> AggregateState:
        return self.aggregator.merge_micros(a, b, now)


class EngagementComputation(Computation):
    _decode = msgspec.json.Decoder(EngagementState).decode
    _encode = msgspec.json.Encoder().encode

    def __init__(self, engagement: Engagement, traits: tuple[str, ...]) -> None:
        self.engagement = engagement
        spec = engagement.spec
        self.state_id = spec.id
        self.windowed = True
        self.window_us = spec.window_us
        self.traits = traits
        self.every_track = spec.activity_events is None
        self.events = frozenset((*(spec.activity_events or ()), *spec.core_actions))
        self.pages = spec.pages

    def decode(self, raw: bytes) -> EngagementState:
        return self._decode(raw)

    def encode(self, state: EngagementState) -> bytes:
        return self._encode(state)

    def empty(self) -> EngagementState:
        return EngagementState()

    def is_empty(self, state: EngagementState) -> bool:
        return state.next_expiry is None

    def observe(self, state: EngagementState, event: Event, at: int, now: int) -> EngagementState:
        return self.engagement.observe(state, event, at, now)

    def expire(self, state: EngagementState, now: int) -> EngagementState:
        return self.engagement.expire(state, now)

    def next_expiry(self, state: EngagementState) -> int | None:
        return state.next_expiry

    def value(self, state: EngagementState, now: int) -> int:
        return self.engagement.score(state, now)

    def merge(self, a: EngagementState, b: EngagementState, now: int) -> EngagementState:
        return self.engagement.merge(a, b, now)


class UsualTimeComputation(Computation):
    _decode = msgspec.json.Decoder(UsualTimeState).decode
    _encode = msgspec.json.Encoder().encode

    def __init__(self, usual: UsualTime, traits: tuple[str, ...]) -> None:
        self.usual = usual
        spec = usual.spec
        self.state_id = spec.id
        self.windowed = True
        self.window_us = spec.window_us
        self.traits = traits
        self.every_track = spec.events is None
        self.events = frozenset(spec.events or ())
        self.pages = spec.pages

    def decode(self, raw: bytes) -> UsualTimeState:
        return self._decode(raw)

    def encode(self, state: UsualTimeState) -> bytes:
        return self._encode(state)

    def empty(self) -> UsualTimeState:
        return UsualTimeState()

    def is_empty(self, state: UsualTimeState) -> bool:
        return not state.samples

    def observe(self, state: UsualTimeState, event: Event, at: int, now: int) -> UsualTimeState:
        return self.usual.observe(state, event, at, now)

    def expire(self, state: UsualTimeState, now: int) -> UsualTimeState:
        return self.usual.expire(state, now)

    def next_expiry(self, state: UsualTimeState) -> int | None:
        return state.next_expiry

    def value(self, state: UsualTimeState, now: int) -> str | None:
        return self.usual.value(state, now)

    def merge(self, a: UsualTimeState, b: UsualTimeState, now: int) -> UsualTimeState:
        return self.usual.merge(a, b, now)


class TypicalLeadComputation(Computation):
    _decode = msgspec.json.Decoder(TypicalLeadState).decode
    _encode = msgspec.json.Encoder().encode

    def __init__(self, lead: TypicalLead, traits: tuple[str, ...]) -> None:
        self.lead = lead
        self.state_id = lead.spec.id
        self.windowed = True
        self.window_us = lead.spec.window_us
        self.traits = traits
        self.events = frozenset((lead.spec.event,))

    def decode(self, raw: bytes) -> TypicalLeadState:
        return self._decode(raw)

    def encode(self, state: TypicalLeadState) -> bytes:
        return self._encode(state)

    def empty(self) -> TypicalLeadState:
        return TypicalLeadState()

    def is_empty(self, state: TypicalLeadState) -> bool:
        return not state.samples

    def observe(self, state: TypicalLeadState, event: Event, at: int, now: int) -> TypicalLeadState:
        return self.lead.observe(state, event, at, now)

    def expire(self, state: TypicalLeadState, now: int) -> TypicalLeadState:
        return self.lead.expire(state, now)

    def next_expiry(self, state: TypicalLeadState) -> int | None:
        return state.next_expiry

    def value(self, state: TypicalLeadState, now: int) -> str | None:
        return self.lead.value(state, now)

    def merge(self, a: TypicalLeadState, b: TypicalLeadState, now: int) -> TypicalLeadState:
        return self.lead.merge(a, b, now)


def compile_computed_trait(definition: ComputedTraitDefinition) -> Computation:
    """The computation of one definition; raises ``InvalidComputedTrait`` listing every error."""
    errors = validate_compute(definition.kind, definition.compute)
    if errors:
        raise InvalidComputedTrait(errors)
    if definition.kind == AGGREGATE:
        spec = aggregate_spec(definition.compute)
        return AggregateComputation(Aggregator(spec), (definition.id,))
    if definition.kind == TYPICAL_LEAD:
        lead = TypicalLead(typical_lead_spec(definition.compute))
        return TypicalLeadComputation(lead, (definition.id,))
    if definition.kind == USUAL_TIME:
        return UsualTimeComputation(
            UsualTime(usual_time_spec(definition.compute)), (definition.id,)
        )
    assert definition.kind == ENGAGEMENT_SCORE
    return EngagementComputation(Engagement(engagement_spec(definition.compute)), (definition.id,))


class ComputedTraitCatalog:
    """A workspace's active computed traits, compiled once, indexed by the events they count.

    Definitions whose stored ``compute`` no longer compiles are left out and
    listed in ``invalid`` (id -> reason), for the runtime to report.
    """

    def __init__(self, definitions: Iterable[ComputedTraitDefinition]) -> None:
        self.invalid: dict[str, str] = {}
        self.versions: dict[str, int] = {}
        """Trait id -> the version of its active definition (compiled or not)."""
        by_state: dict[str, Computation] = {}
        for definition in sorted(definitions, key=lambda d: d.id):
            if not definition.active:
                continue
            self.versions[definition.id] = definition.version
            try:
                computation = compile_computed_trait(definition)
            except ValueError as exc:  # InvalidComputedTrait, or a kind unknown here
                self.invalid[definition.id] = str(exc)
                continue
            shared = by_state.get(computation.state_id)
            if shared is None:
                by_state[computation.state_id] = computation
            else:
                shared.traits = (*shared.traits, definition.id)
        self.computations: tuple[Computation, ...] = tuple(by_state.values())
        self.by_state: dict[str, Computation] = by_state
        self.by_trait: dict[str, Computation] = {
            name: computation for computation in self.computations for name in computation.traits
        }
        self.by_event: dict[str, list[Computation]] = {}
        """Track event name -> the computations counting it."""
        self.every_track: list[Computation] = []
        self.pages: list[Computation] = []
        """Computations counting every track event / every page and screen call."""
        for computation in self.computations:
            if computation.pages:
                self.pages.append(computation)
            if computation.every_track:
                self.every_track.append(computation)
                continue
            for name in sorted(computation.events):
                self.by_event.setdefault(name, []).append(computation)

    def __bool__(self) -> bool:
        return bool(self.computations)

    def counting(self, event: Event) -> list[Computation]:
        """The computations ``event`` feeds (each once)."""
        if event.type == "track" and event.event is not None:
            named = self.by_event.get(event.event, [])
            return [*self.every_track, *named] if self.every_track else named
        if event.type in ("page", "screen"):
            return self.pages
        return []

    def next_change(self, profile: Profile, now: datetime) -> datetime | None:
        """The earliest instant after ``now`` at which time alone may change a computed trait.

        Time alone cannot change any before it; at it one may change (its
        oldest event ages out of the window), so refresh then
        (``refresh_computed_traits``) and ask again. ``None``: only events can.
        """
        now_us = to_micros(now)
        earliest: int | None = None
        for state_id, expiry in read_due(profile).items():
            computation = self.by_state.get(state_id)
            if computation is None:
                continue
            if expiry <= now_us:
                # Not expired on the profile yet: what is left once it is.
                raw = profile.aggregates.get(state_id)
                if raw is None:
                    continue
                after = computation.expire(computation.decode(raw), now_us)
                next_expiry = computation.next_expiry(after)
                if next_expiry is None:
                    continue
                expiry = next_expiry
            if earliest is None or expiry < earliest:
                earliest = expiry
        return None if earliest is None else from_micros(earliest)


DUE_ID = STATE_PREFIX + "due"
"""``Profile.aggregates`` entry mapping each windowed state id to its next expiry.

Checking whether time changed a value at every event then costs one small
decode, not one decode per windowed state.
"""
_decode_due = msgspec.json.Decoder(dict[str, int]).decode


def read_due(profile: Profile) -> dict[str, int]:
    raw = profile.aggregates.get(DUE_ID)
    return {} if raw is None else _decode_due(raw)
