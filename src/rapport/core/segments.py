"""Segment definitions: named, versioned conditions that profiles enter and leave.

A definition is addressed by a slug (``viewed-same-product-3x-1h``) unique in
its workspace. Every write (create, update, delete) gives it the next
version, so a version number never names two different definitions, even
across a delete and a re-create of the same id: anything that recorded
"member of version 3" can tell that version 5 is a different rule.

Deleting is soft: the definition stays stored with status ``deleted`` and a
new version. That keeps the version sequence going if the id is reused, and
lets processors that cached the old definition see that it went away.

Only ``dynamic`` segments (membership computed from a condition) exist for
now; ``static`` (uploaded lists) is a known kind that is refused until lists
can be stored.

Streaming membership: a ``SegmentCatalog`` compiles a workspace's active
definitions once and indexes them by what can change them (event names,
traits, consents, other segments). ``update_memberships`` takes a profile
before and after one event, feeds the event to the aggregates that count it
(states kept on the profile), re-evaluates only the segments the event can
affect -- in an order where a segment comes after the segments it reads --
and returns the new memberships and the changes, for the runtime to turn
into ``Segment Entered`` / ``Segment Exited`` events.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec

from rapport.core.conditions import (
    AggregateReading,
    AggregateState,
    Aggregator,
    CompiledCondition,
    InvalidCondition,
    ProfileContext,
    compile_condition,
)
from rapport.core.conditions.instants import to_micros
from rapport.core.model import Event, Membership, Profile

SEGMENT_ID_PATTERN: Final = r"[a-z0-9](?:[a-z0-9_-]{0,98}[a-z0-9])?"
"""Lowercase letters, digits, ``-`` and ``_``; 1-100 characters; no edge separator."""
_SEGMENT_ID = re.compile(SEGMENT_ID_PATTERN)

MAX_NAME_LENGTH: Final = 200
MAX_DESCRIPTION_LENGTH: Final = 2000

DYNAMIC: Final = "dynamic"
STATIC: Final = "static"
SEGMENT_KINDS: Final = frozenset((DYNAMIC, STATIC))
SUPPORTED_KINDS: Final = frozenset((DYNAMIC,))

ACTIVE: Final = "active"
DELETED: Final = "deleted"


class SegmentDefinition(msgspec.Struct, frozen=True, kw_only=True):
    """One stored version of a segment definition."""

    workspace_id: str
    id: str
    name: str
    kind: str
    condition: Any
    """The condition tree as JSON (see docs/conditions.md)."""
    version: int
    status: str
    created_at: datetime
    """When this id was (re)created; kept across updates, new after a delete."""
    updated_at: datetime
    description: str = ""

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


def is_segment_id(value: str) -> bool:
    return _SEGMENT_ID.fullmatch(value) is not None


class SegmentDraft(msgspec.Struct, frozen=True, kw_only=True):
    """What a caller writes; the storage adds version, status and times."""

    workspace_id: str
    id: str
    name: str
    kind: str
    condition: Any
    description: str = ""


class SegmentAlreadyExists(Exception):
    """A create-only write found an active definition with the same id."""

    def __init__(self, workspace_id: str, segment_id: str) -> None:
        super().__init__(f"segment {segment_id!r} already exists")
        self.workspace_id = workspace_id
        self.segment_id = segment_id


def next_definition(
    previous: SegmentDefinition | None, draft: SegmentDraft, now: datetime
) -> SegmentDefinition:
    """The version that writing ``draft`` stores after ``previous`` (active or deleted)."""
    recreated = previous is None or not previous.active
    return SegmentDefinition(
        workspace_id=draft.workspace_id,
        id=draft.id,
        name=draft.name,
        description=draft.description,
        kind=draft.kind,
        condition=draft.condition,
        version=1 if previous is None else previous.version + 1,
        status=ACTIVE,
        created_at=now if recreated or previous is None else previous.created_at,
        updated_at=now,
    )


def deleted_definition(previous: SegmentDefinition, now: datetime) -> SegmentDefinition:
    """The tombstone that deleting ``previous`` stores."""
    return msgspec.structs.replace(
        previous, status=DELETED, version=previous.version + 1, updated_at=now
    )


def reference_cycle(segment_id: str, references: Mapping[str, Collection[str]]) -> list[str] | None:
    """A chain of ``in_segment`` references from ``segment_id`` back to itself, if any.

    ``references`` maps each segment id to the ids its condition reads
    (``CompiledCondition.segments``), including ``segment_id``'s new ones.
    Membership of a segment on such a cycle would depend on itself, so a
    definition closing one is refused. Returns e.g. ``["a", "b", "a"]``.
    """
    # Depth-first search keeping the path, so the answer can name the chain.
    path = [segment_id]
    pending = [iter(sorted(references.get(segment_id, ())))]
    visited = {segment_id}
    while pending:
        following = next(pending[-1], None)
        if following is None:
            pending.pop()
            path.pop()
            continue
        if following == segment_id:
            return [*path, segment_id]
        if following in visited:
            continue
        visited.add(following)
        path.append(following)
        pending.append(iter(sorted(references.get(following, ()))))
    return None


# -- streaming membership ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledSegment:
    definition: SegmentDefinition
    condition: CompiledCondition


@dataclass(frozen=True, slots=True)
class MembershipChange:
    segment_id: str
    version: int
    entered: bool
    """True: the profile entered the segment; False: it left it."""


class SegmentCatalog:
    """A workspace's active dynamic segments, compiled once, indexed by what can change them.

    Definitions whose stored condition no longer compiles are left out and
    listed in ``invalid`` (id -> reason), for the runtime to report.
    """

    def __init__(self, definitions: Iterable[SegmentDefinition]) -> None:
        compiled: dict[str, CompiledSegment] = {}
        self.invalid: dict[str, str] = {}
        for definition in definitions:
            if not definition.active or definition.kind != DYNAMIC:
                continue
            try:
                condition = compile_condition(definition.condition)
            except InvalidCondition as exc:
                self.invalid[definition.id] = str(exc)
                continue
            compiled[definition.id] = CompiledSegment(definition, condition)
        self.segments: tuple[CompiledSegment, ...] = _referenced_first(compiled)
        """Every segment after the segments its condition reads."""
        self.position = {s.definition.id: index for index, s in enumerate(self.segments)}
        self.versions = {s.definition.id: s.definition.version for s in self.segments}
        self.aggregators: dict[str, Aggregator] = {}
        self.aggregators_by_event: dict[str, list[tuple[str, Aggregator]]] = {}
        """Event name -> ``(aggregate id, aggregator)`` of the aggregates counting it."""
        # The indexes below hold positions in ``segments``: the order of evaluation.
        self.by_event: dict[str, set[int]] = {}
        self.by_trait: dict[str, set[int]] = {}
        self.by_consent: dict[str, set[int]] = {}
        self.readers: dict[str, set[int]] = {}
        """Segment id -> the positions of the segments whose condition reads it."""
        for position, segment in enumerate(self.segments):
            condition = segment.condition
            for aggregate_id, spec in condition.aggregates.items():
                if aggregate_id not in self.aggregators:
                    aggregator = Aggregator(spec)
                    self.aggregators[aggregate_id] = aggregator
                    by_event = self.aggregators_by_event.setdefault(spec.event, [])
                    by_event.append((aggregate_id, aggregator))
            for index, names in (
                (self.by_event, condition.events),
                (self.by_trait, condition.traits),
                (self.by_consent, condition.consents),
                (self.readers, condition.segments),
            ):
                for name in names:
                    index.setdefault(name, set()).add(position)

    def __bool__(self) -> bool:
        return bool(self.segments)


def update_memberships(
    catalog: SegmentCatalog,
    before: Profile | None,
    after: Profile,
    event: Event,
    now: datetime,
) -> tuple[Profile, list[MembershipChange]]:
    """``after`` (the profile once ``event`` was applied) with aggregates and memberships updated.

    ``before`` is the profile before the event, or ``None`` when the profile
    is new or absorbed others (then every segment is evaluated). Otherwise
    only the segments the event can affect are: those aggregating its event
    name, reading a trait or consent whose value changed, reading a segment
    whose membership changed, or whose membership was recorded under another
    version (or a segment that no longer exists: the profile leaves it).
    """
    if not catalog and not after.segments:
        return after, []
    states = _AggregateStates(catalog, after, now)
    if event.type == "track" and event.event is not None:
        counting = catalog.aggregators_by_event.get(event.event)
        if counting:
            at = to_micros(event.timestamp)
            for aggregate_id, aggregator in counting:
                states.observe(aggregate_id, aggregator, event, at)
    members = after.segments
    changes: list[MembershipChange] = []
    gone = [segment_id for segment_id in members if segment_id not in catalog.versions]
    if gone:
        members = dict(members)
        for segment_id in sorted(gone):
            changes.append(MembershipChange(segment_id, members.pop(segment_id).version, False))

    # Evaluated in catalog order (a segment after those it reads); a change
    # queues the segments reading the one that changed, which come later.
    queued = _affected(catalog, before, after, event)
    pending = sorted(queued)
    # One context for the whole event: aggregates are read (and reduced,
    # once) only when a condition asks; only ``segments`` changes between
    # evaluations, when a membership does.
    context = ProfileContext(after, now, segments=members, read_aggregate=states.read)
    segments = catalog.segments
    index = 0
    while index < len(pending):
        segment = segments[pending[index]]
        index += 1
        definition = segment.definition
        segment_id = definition.id
        is_member = segment.condition.evaluate(context)
        current = members.get(segment_id)
        if is_member == (current is not None):
            if current is not None and current.version != definition.version:
                # Still a member under the new rule: no exit and re-entry.
                members = {
                    **members,
                    segment_id: Membership(
                        version=definition.version, entered_at=current.entered_at
                    ),
                }
                context.segments = members
            continue
        members = dict(members)
        if is_member:
            members[segment_id] = Membership(version=definition.version, entered_at=now)
            changes.append(MembershipChange(segment_id, definition.version, True))
        elif current is not None:
            del members[segment_id]
            changes.append(MembershipChange(segment_id, current.version, False))
        context.segments = members
        for reader_position in catalog.readers.get(segment_id, ()):
            if reader_position not in queued:
                # Later in the order unless a cycle was broken: then next.
                queued.add(reader_position)
                bisect.insort(pending, reader_position, lo=index)
    aggregates = states.encoded()
    if members is after.segments and aggregates is after.aggregates:
        return after, changes
    return msgspec.structs.replace(after, segments=members, aggregates=aggregates), changes


def _affected(
    catalog: SegmentCatalog, before: Profile | None, after: Profile, event: Event
) -> set[int]:
    """The positions of the segments to re-evaluate (see ``update_memberships``)."""
    if before is None:
        return set(range(len(catalog.segments)))
    affected: set[int] = set()
    if event.type == "track" and event.event is not None:
        affected.update(catalog.by_event.get(event.event, ()))
    # Applying an event keeps the same dict when it changes no trait (consent).
    if before.traits is not after.traits:
        for name, readers in catalog.by_trait.items():
            old, new = before.traits.get(name), after.traits.get(name)
            if (None if old is None else old.value) != (None if new is None else new.value):
                affected.update(readers)
    if before.consent is not after.consent:
        for name, readers in catalog.by_consent.items():
            old_consent, new_consent = before.consent.get(name), after.consent.get(name)
            old_granted = None if old_consent is None else old_consent.granted
            if old_granted != (None if new_consent is None else new_consent.granted):
                affected.update(readers)
    versions = catalog.versions
    for segment_id, membership in after.segments.items():
        if versions.get(segment_id, membership.version) != membership.version:
            affected.add(catalog.position[segment_id])
    return affected


class _AggregateStates:
    """A profile's aggregate states at one instant, decoded only when read or changed."""

    def __init__(self, catalog: SegmentCatalog, profile: Profile, now: datetime) -> None:
        self._catalog = catalog
        self._stored = profile.aggregates
        self._now = to_micros(now)
        self._decoded: dict[str, AggregateState] = {}
        self._readings: dict[str, AggregateReading] = {}
        """Several segments often read one aggregate: it is reduced once."""
        self._changed: set[str] = set()

    def _state(self, aggregate_id: str) -> AggregateState:
        state = self._decoded.get(aggregate_id)
        if state is None:
            raw = self._stored.get(aggregate_id)
            state = AggregateState() if raw is None else _decode_state(raw)
            self._decoded[aggregate_id] = state
        return state

    def observe(self, aggregate_id: str, aggregator: Aggregator, event: Event, at: int) -> None:
        """Feed ``event`` (at ``at`` microseconds) to one aggregate."""
        before = self._state(aggregate_id)
        after = aggregator.observe_micros(before, event, at, self._now)
        if after is not before:
            self._decoded[aggregate_id] = after
            self._readings.pop(aggregate_id, None)
            self._changed.add(aggregate_id)

    def read(self, aggregate_id: str) -> AggregateReading:
        reading = self._readings.get(aggregate_id)
        if reading is None:
            aggregator = self._catalog.aggregators[aggregate_id]
            reading = aggregator.read_micros(self._state(aggregate_id), self._now)
            self._readings[aggregate_id] = reading
        return reading

    def encoded(self) -> dict[str, msgspec.Raw]:
        """What to store: changed states re-encoded; states no segment reads any more dropped."""
        stored = self._stored
        live = self._catalog.aggregators
        if not self._changed and all(aggregate_id in live for aggregate_id in stored):
            return stored
        out = {aggregate_id: raw for aggregate_id, raw in stored.items() if aggregate_id in live}
        for aggregate_id in self._changed:
            state = self._decoded[aggregate_id]
            if state.keys:
                out[aggregate_id] = msgspec.Raw(_encode_state(state))
            else:
                out.pop(aggregate_id, None)
        return out


_encode_state = msgspec.json.Encoder().encode
_decode_state = msgspec.json.Decoder(AggregateState).decode


def _referenced_first(compiled: Mapping[str, CompiledSegment]) -> tuple[CompiledSegment, ...]:
    """Segments ordered so that each comes after the segments it reads (by id otherwise).

    References to unknown segments read as "not a member"; a cycle (which
    the API refuses) is broken at the segment reached first.
    """
    ordered: list[CompiledSegment] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def place(segment_id: str) -> None:
        if segment_id in placed or segment_id in visiting or segment_id not in compiled:
            return
        visiting.add(segment_id)
        for referenced in sorted(compiled[segment_id].condition.segments):
            place(referenced)
        visiting.discard(segment_id)
        placed.add(segment_id)
        ordered.append(compiled[segment_id])

    for segment_id in sorted(compiled):
        place(segment_id)
    return tuple(ordered)
