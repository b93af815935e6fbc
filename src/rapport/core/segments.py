"""Segment definitions: named, versioned conditions that profiles enter and leave.

A definition is addressed by a slug (``viewed-same-product-3x-1h``) unique in
its workspace. Every write (create, update, delete) gives it the next
version, so a version number never names two different definitions, even
across a delete and a re-create of the same id: anything that recorded
"member of version 3" can tell that version 5 is a different rule.

Deleting is soft: the definition stays stored with status ``deleted`` and a
new version. That keeps the version sequence going if the id is reused, and
lets processors that cached the old definition see that it went away.

Two kinds: ``dynamic`` (membership computed from a condition) and ``static``
(uploaded lists, no condition: ``rapport.core.static_segments``). Streaming
evaluation computes the first and keeps the second.

Streaming membership: a ``SegmentCatalog`` compiles a workspace's active
definitions once and indexes them by what can change them (aggregates,
traits, consents, other segments) and by the trait texts they require
(``segment_guards``). ``update_memberships`` takes a profile before and
after one event, feeds the event to the aggregates that count it (states
kept on the profile, ``aggregate_states``), re-evaluates only the segments
reading what the event changed -- in an order where a segment comes after
the segments it reads, leaving out those the profile's traits rule out --
and returns the new memberships and the changes, for the runtime to turn
into ``Segment Entered`` / ``Segment Exited`` events. Aggregates that only
journey conditions read are fed the same way (``with_aggregates``).

Time alone changes memberships too (a view ageing out of a one-hour
window). ``segment_timers.next_membership_change`` tells the runtime when
that may next happen for a profile, so it can store a timer; at the timer,
``refresh_memberships`` re-evaluates the segments time can change, with no
event fed to any aggregate.
"""

from __future__ import annotations

import bisect
import copy
import re
from collections.abc import Collection, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec

from rapport.core.aggregate_states import AggregateStates
from rapport.core.computed_traits.definitions import is_computed_state_id
from rapport.core.conditions import (
    Aggregator,
    CompiledCondition,
    InvalidCondition,
    ProfileContext,
    compile_condition,
)
from rapport.core.conditions.compile import Evaluate, Settle
from rapport.core.conditions.dispatch import EventDispatch
from rapport.core.conditions.instants import to_micros
from rapport.core.model import Event, Membership, Profile
from rapport.core.segment_guards import NO_EXCLUSION, Guards
from rapport.core.versions import ACTIVE, next_version, tombstone
from rapport.core.versions import DELETED as DELETED  # re-exported

SEGMENT_ID_PATTERN: Final = r"[a-z0-9](?:[a-z0-9_-]{0,98}[a-z0-9])?"
"""Lowercase letters, digits, ``-`` and ``_``; 1-100 characters; no edge separator."""
_SEGMENT_ID = re.compile(SEGMENT_ID_PATTERN)

MAX_NAME_LENGTH: Final = 200
MAX_DESCRIPTION_LENGTH: Final = 2000

DYNAMIC: Final = "dynamic"
STATIC: Final = "static"
SEGMENT_KINDS: Final = frozenset((DYNAMIC, STATIC))
SUPPORTED_KINDS: Final = SEGMENT_KINDS


NOTHING: Final[frozenset[int]] = frozenset()
"""No positions (shared, so ``is``-cheap to pass around)."""
_MAX_KEPT_INPUTS: Final = 256
"""Sets of positions left out kept at most (``SegmentCatalog.inputs_without``)."""

Settled = dict[int, tuple[bool, int | None]]
"""Position -> a time-dependent segment's value at ``now`` and the instant (microseconds)
at which time alone may next change it (``CompiledCondition.settle``), as an evaluation
found them: ``next_membership_change`` takes them instead of settling those segments
again (see ``update_memberships``)."""


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
    return SegmentDefinition(
        workspace_id=draft.workspace_id,
        id=draft.id,
        name=draft.name,
        description=draft.description,
        kind=draft.kind,
        condition=draft.condition,
        **next_version(previous, now),
    )


def deleted_definition(previous: SegmentDefinition, now: datetime) -> SegmentDefinition:
    """The tombstone that deleting ``previous`` stores."""
    return tombstone(previous, now)


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
    listed in ``invalid`` (id -> reason), for the runtime to report. Active
    static segments are known by id (``static``): never evaluated, their
    memberships are kept (``keeps``).
    """

    def __init__(self, definitions: Iterable[SegmentDefinition]) -> None:
        compiled: dict[str, CompiledSegment] = {}
        self.invalid: dict[str, str] = {}
        self.static: dict[str, SegmentDefinition] = {}
        """Active static segments (uploaded lists) by id."""
        for definition in definitions:
            if definition.active and definition.kind == STATIC:
                self.static[definition.id] = definition
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
        self.ids: tuple[str, ...] = tuple(s.definition.id for s in self.segments)
        """Per position: the segment's id."""
        self.versions = {s.definition.id: s.definition.version for s in self.segments}
        self.aggregators: dict[str, Aggregator] = {}
        self.aggregators_by_event: dict[str, list[tuple[str, Aggregator]]] = {}
        """Event name -> ``(aggregate id, aggregator)`` of the aggregates counting it."""
        # The indexes below hold positions in ``segments``: the order of evaluation.
        self.by_trait: dict[str, set[int]] = {}
        self.by_consent: dict[str, set[int]] = {}
        self.readers: dict[str, set[int]] = {}
        """Segment id -> the positions of the segments whose condition reads it."""
        self.by_aggregate: dict[str, set[int]] = {}
        self.time_dependent: tuple[int, ...] = tuple(
            position
            for position, segment in enumerate(self.segments)
            if segment.condition.time_dependent
        )
        """Positions of the segments whose membership time alone can change."""
        self.time_bounds: dict[int, Settle] = {}
        """Position -> the segment's value and when time alone may next change it
        (``CompiledCondition.settle``)."""
        for position in self.time_dependent:
            settle = self.segments[position].condition.settle
            if settle is not None:
                self.time_bounds[position] = settle
        self.timed: frozenset[int] = frozenset(self.time_bounds)
        """The positions in ``time_bounds``, as a set: intersections with it iterate the
        smaller side (a dict's keys would be copied first)."""
        self.steps: tuple[tuple[str, int, Evaluate, Settle | None], ...] = tuple(
            (
                segment.definition.id,
                segment.definition.version,
                segment.condition.evaluate,
                self.time_bounds.get(position),
            )
            for position, segment in enumerate(self.segments)
        )
        """Per position: the segment's id, version, ``evaluate`` and ``settle`` (as in
        ``time_bounds``), what evaluating it takes (``_evaluate``)."""
        self.guards = Guards(
            [segment.condition.requirements for segment in self.segments], self.ids
        )
        """Segments a profile's traits rule out (``segment_guards``): never evaluated."""
        for position, segment in enumerate(self.segments):
            condition = segment.condition
            for aggregate_id, spec in condition.aggregates.items():
                if aggregate_id not in self.aggregators:
                    aggregator = Aggregator(spec)
                    self.aggregators[aggregate_id] = aggregator
                    by_event = self.aggregators_by_event.setdefault(spec.event, [])
                    by_event.append((aggregate_id, aggregator))
            for index, names in (
                (self.by_trait, condition.traits),
                (self.by_consent, condition.consents),
                (self.readers, condition.segments),
                (self.by_aggregate, condition.aggregates),
            ):
                for name in names:
                    index.setdefault(name, set()).add(position)
        self.dispatch = {
            name: EventDispatch(counting) for name, counting in self.aggregators_by_event.items()
        }
        """Event name -> the aggregates over it, found by the texts they require."""
        timed = self.timed
        self.timed_inputs: tuple[dict[str, frozenset[int]], ...] = tuple(
            {name: frozenset(readers & timed) for name, readers in index.items() if readers & timed}
            for index in (self.by_aggregate, self.by_trait, self.by_consent, self.readers)
        )
        """``by_aggregate``, ``by_trait``, ``by_consent`` and ``readers`` restricted to the
        positions in ``timed`` (what ``next_membership_change`` looks at)."""
        self._inputs_without: dict[
            tuple[frozenset[int], bool], tuple[Mapping[str, AbstractSet[int]], ...]
        ] = {}
        """``inputs_without`` by the positions left out."""

    def __bool__(self) -> bool:
        return bool(self.segments)

    def inputs_without(
        self, excluded: frozenset[int], *, timed: bool = False
    ) -> tuple[Mapping[str, AbstractSet[int]], ...]:
        """``by_aggregate``, ``by_trait``, ``by_consent`` and ``readers`` (``timed``: their
        ``timed_inputs``) without the positions in ``excluded`` (``Guards.excluded``).

        Kept per set left out: profiles share a few combinations of guarding
        texts (cities, plans).
        """
        indexes: tuple[Mapping[str, AbstractSet[int]], ...] = (
            self.timed_inputs
            if timed
            else (self.by_aggregate, self.by_trait, self.by_consent, self.readers)
        )
        if not excluded:
            return indexes
        inputs = self._inputs_without.get((excluded, timed))
        if inputs is None:
            inputs = tuple(
                {name: kept for name, readers in index.items() if (kept := readers - excluded)}
                for index in indexes
            )
            if len(self._inputs_without) >= _MAX_KEPT_INPUTS:
                self._inputs_without.clear()
            self._inputs_without[excluded, timed] = inputs
        return inputs

    def with_aggregates(self, aggregators: Mapping[str, Aggregator]) -> SegmentCatalog:
        """This catalog also maintaining ``aggregators`` (by id), which no segment reads.

        Journey conditions read event aggregates too: their states are fed
        per event and kept on the profile like the segments' own (an id
        both read is one state), and dropped when nothing reads them any
        more. ``self`` when it already maintains them all.
        """
        extra = {i: a for i, a in aggregators.items() if i not in self.aggregators}
        if not extra:
            return self
        combined = copy.copy(self)
        combined.aggregators = {**self.aggregators, **extra}
        combined.aggregators_by_event = {
            name: list(counting) for name, counting in self.aggregators_by_event.items()
        }
        for aggregate_id, aggregator in extra.items():
            counting = combined.aggregators_by_event.setdefault(aggregator.spec.event, [])
            counting.append((aggregate_id, aggregator))
        combined.dispatch = {
            name: EventDispatch(counting)
            for name, counting in combined.aggregators_by_event.items()
        }
        return combined

    def keeps(self, segment_id: str, membership: Membership) -> bool:
        """Whether a recorded membership names a segment that exists (else the profile leaves it).

        A dynamic segment in the catalog re-evaluates its members; a static
        one keeps those that entered it since it was (re)created, so members
        of an earlier segment of the same id (deleted, then created again)
        leave it.
        """
        if segment_id in self.versions:
            return True
        static = self.static.get(segment_id)
        return static is not None and membership.entered_at >= static.created_at


def update_memberships(
    catalog: SegmentCatalog,
    before: Profile | None,
    after: Profile,
    event: Event,
    now: datetime,
    settled: Settled | None = None,
) -> tuple[Profile, list[MembershipChange]]:
    """``after`` (the profile once ``event`` was applied) with aggregates and memberships updated.

    ``before`` is the profile before the event, or ``None`` when the profile
    is new or absorbed others (then every segment is evaluated). Otherwise
    only the segments the event can affect are: those aggregating its event
    name, reading a trait or consent whose value changed, reading a segment
    whose membership changed, or whose membership was recorded under another
    version (or a segment that no longer exists: the profile leaves it).
    Segments the profile's traits rule out (``segment_guards``) are not
    evaluated: they are false.

    ``settled``, when given, receives what the evaluation found about the
    time-dependent segments it evaluated (``Settled``), valid for the
    returned profile at ``now``: the runtime hands it to
    ``next_membership_change`` for that profile, which then does not read
    the same aggregates again (the segments an event changes are the ones
    whose timer it may move).
    """
    if not catalog and not after.segments and not catalog.aggregators and not after.aggregates:
        return after, []
    if before is after and _untouched(catalog, after, event):
        return after, []
    now_us = to_micros(now)
    states = AggregateStates(catalog.aggregators, after.aggregates, now_us)
    if event.type == "track" and event.event is not None:
        dispatch = catalog.dispatch.get(event.event)
        if dispatch is not None:
            states.feed(dispatch.candidates(event), event, to_micros(event.timestamp))
    members = after.segments
    changes: list[MembershipChange] = []
    stale = _stale(catalog, members)
    gone = _gone(catalog, members, stale) if stale else []
    if gone:
        members = dict(members)
        for segment_id in gone:
            changes.append(MembershipChange(segment_id, members.pop(segment_id).version, False))

    # Segments her traits rule out are left out as the affected ones are gathered,
    # unless she is a member of one (her city changed): then afterwards.
    guards = catalog.guards
    excluded, excluded_ids = guards.exclusion(after.traits) if guards else NO_EXCLUSION
    if not excluded_ids.isdisjoint(members):
        queued = _affected(catalog, before, after, states.changed, stale)
        queued = guards.allowed(queued, after.traits, members, catalog.position)
    else:
        queued = _affected(catalog, before, after, states.changed, stale, excluded)
    if not queued and not changes:
        # Nothing to evaluate (most membership events; views of products that
        # only other cities' segments count): the profile as it came, with
        # the states the event changed.
        aggregates = states.encoded()
        if aggregates is after.aggregates:
            return after, changes
        return msgspec.structs.replace(after, aggregates=aggregates), changes
    return _evaluate(catalog, after, states, members, changes, queued, now, settled, now_us)


def reevaluate_segments(
    catalog: SegmentCatalog,
    profile: Profile,
    segment_ids: Iterable[str],
    now: datetime,
) -> tuple[Profile, list[MembershipChange]]:
    """``profile`` with the given segments (and those reading them) evaluated at ``now``.

    No event is involved: this is what a backfill does to a quiet profile
    when a definition is created or changed. Ids of segments that are gone
    (deleted, see ``SegmentCatalog.keeps``) make the profile leave them if
    it is a member; a static segment's members stay.
    """
    members = profile.segments
    changes: list[MembershipChange] = []
    queued: set[int] = set()
    for segment_id in segment_ids:
        position = catalog.position.get(segment_id)
        if position is not None:
            queued.add(position)
        elif segment_id in members and not catalog.keeps(segment_id, members[segment_id]):
            members = dict(members)
            changes.append(MembershipChange(segment_id, members.pop(segment_id).version, False))
    if not queued and not changes:
        return profile, []
    states = AggregateStates(catalog.aggregators, profile.aggregates, to_micros(now))
    return _evaluate(catalog, profile, states, members, changes, queued, now)


def refresh_memberships(
    catalog: SegmentCatalog, profile: Profile, now: datetime
) -> tuple[Profile, list[MembershipChange]]:
    """``profile`` with the memberships time may have changed re-evaluated at ``now``.

    What a timer does: no event is fed to any aggregate (they are read at
    ``now``, so what aged out no longer counts); the time-dependent segments
    are evaluated, with those recorded under another version and those
    reading a membership that changes; members of segments that no longer
    exist leave them.
    """
    members = profile.segments
    stale = _stale(catalog, members)
    gone = _gone(catalog, members, stale)
    changes: list[MembershipChange] = []
    if gone:
        members = dict(members)
        for segment_id in gone:
            changes.append(MembershipChange(segment_id, members.pop(segment_id).version, False))
    queued = set(catalog.time_dependent)
    queued.update(_outdated(catalog, stale))
    if catalog.guards:
        queued = catalog.guards.allowed(queued, profile.traits, members, catalog.position)
    if not queued and not changes:
        return profile, []
    states = AggregateStates(catalog.aggregators, profile.aggregates, to_micros(now))
    return _evaluate(catalog, profile, states, members, changes, queued, now)


def changed_traits(
    by_trait: Mapping[str, AbstractSet[int]], before: Profile, after: Profile, into: set[int]
) -> None:
    """Add to ``into`` the readers (``by_trait``) of the traits whose value differs."""
    old_traits, new_traits = before.traits, after.traits
    for name, readers in by_trait.items():
        old, new = old_traits.get(name), new_traits.get(name)
        if old is new:
            continue
        if (None if old is None else old.value) != (None if new is None else new.value):
            into.update(readers)


def changed_consents(
    by_consent: Mapping[str, AbstractSet[int]], before: Profile, after: Profile, into: set[int]
) -> None:
    """Add to ``into`` the readers (``by_consent``) of the consents granted differently."""
    old_consents, new_consents = before.consent, after.consent
    for name, readers in by_consent.items():
        old, new = old_consents.get(name), new_consents.get(name)
        if old is new:
            continue
        if (None if old is None else old.granted) != (None if new is None else new.granted):
            into.update(readers)


def _evaluate(
    catalog: SegmentCatalog,
    after: Profile,
    states: AggregateStates,
    members: dict[str, Membership],
    changes: list[MembershipChange],
    queued: set[int],
    now: datetime,
    settled: Settled | None = None,
    now_us: int | None = None,
) -> tuple[Profile, list[MembershipChange]]:
    """Evaluate the ``queued`` positions of ``after`` (whose memberships are now ``members``).

    With ``settled``, time-dependent segments are settled rather than only
    evaluated, and what that found is put there (``Settled``). ``now_us``:
    ``now`` in microseconds, if the caller has it.
    """
    # Evaluated in catalog order (a segment after those it reads); a change
    # queues the segments reading the one that changed, which come later.
    pending = sorted(queued)
    # One context for the whole event: aggregates are read (and reduced,
    # once) only when a condition asks; only ``segments`` changes between
    # evaluations, when a membership does.
    context = ProfileContext(after, now, segments=members, read_aggregate=states.read)
    steps = catalog.steps
    if now_us is None:
        now_us = to_micros(now)
    owned = False
    """Whether ``members`` is this evaluation's own copy (made at the first change)."""
    index = 0
    while index < len(pending):
        position = pending[index]
        index += 1
        segment_id, version, evaluate, settle = steps[position]
        if settle is None or settled is None:
            is_member = evaluate(context)
        else:
            # The same value, and when time may change it: a segment read
            # again later (a membership it reads changed) is settled again.
            found = settle(context, now_us)
            is_member = found[0]
            settled[position] = found
        current = members.get(segment_id)
        if is_member == (current is not None):
            if current is not None and current.version != version:
                # Still a member under the new rule: no exit and re-entry.
                if not owned:
                    members = dict(members)
                    owned = True
                    context.segments = members
                members[segment_id] = Membership(version=version, entered_at=current.entered_at)
            continue
        if not owned:
            members = dict(members)
            owned = True
            context.segments = members
        if is_member:
            members[segment_id] = Membership(version=version, entered_at=now)
            changes.append(MembershipChange(segment_id, version, True))
        elif current is not None:
            del members[segment_id]
            changes.append(MembershipChange(segment_id, current.version, False))
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
    catalog: SegmentCatalog,
    before: Profile | None,
    after: Profile,
    fed: Collection[str],
    stale: Collection[str],
    excluded: frozenset[int] = NOTHING,
) -> set[int]:
    """The positions of the segments to re-evaluate (see ``update_memberships``).

    ``fed``: the aggregates whose state the event changed; ``stale``: ``after``'s
    memberships that are outdated or gone (``_stale``). Those in ``excluded``
    (none of them a membership) are left out.
    """
    if before is None:
        return set(range(len(catalog.segments))) - excluded
    affected: set[int] = set()
    by_aggregate, by_trait, by_consent, _ = catalog.inputs_without(excluded)
    for aggregate_id in fed:
        # Aggregates only journeys read (``with_aggregates``) queue no segment.
        affected.update(by_aggregate.get(aggregate_id, ()))
    # Applying an event keeps the same dict when it changes no trait (consent).
    if before.traits is not after.traits:
        changed_traits(by_trait, before, after, affected)
    if before.consent is not after.consent:
        changed_consents(by_consent, before, after, affected)
    if stale:
        affected.update(_outdated(catalog, stale))
    return affected


def _untouched(catalog: SegmentCatalog, profile: Profile, event: Event) -> bool:
    """Whether ``event``, which left ``profile`` as it was, can change nothing of it.

    True when no aggregate counts its name, every membership is recorded under
    the catalog's version (none outdated, none gone) and no state is to be
    dropped: what ``update_memberships`` would find the long way for most
    membership events.
    """
    if event.type == "track" and event.event in catalog.aggregators_by_event:
        return False
    stored, read = profile.aggregates, catalog.aggregators
    if not stored.keys() <= read.keys():
        # Computed traits keep their states there too; any other is dropped.
        for aggregate_id in stored:
            if aggregate_id not in read and not is_computed_state_id(aggregate_id):
                return False
    versions = catalog.versions
    for segment_id, membership in profile.segments.items():
        if versions.get(segment_id) != membership.version:
            return False
    return True


def _stale(catalog: SegmentCatalog, members: Mapping[str, Membership]) -> list[str]:
    """The ids of the memberships not recorded under their segment's current version.

    Those of segments gone (``_gone``, if the catalog does not keep them) and
    those outdated (``_outdated``): usually none, found in one pass.
    """
    version = catalog.versions.get
    return [segment_id for segment_id, m in members.items() if version(segment_id) != m.version]


def _gone(
    catalog: SegmentCatalog, members: Mapping[str, Membership], stale: Iterable[str]
) -> list[str]:
    """The ids of the segments in ``members`` that are gone (``SegmentCatalog.keeps``), sorted.

    ``stale``: ``_stale(catalog, members)``.
    """
    versions = catalog.versions
    return sorted(
        segment_id
        for segment_id in stale
        if segment_id not in versions and not catalog.keeps(segment_id, members[segment_id])
    )


def _outdated(catalog: SegmentCatalog, stale: Iterable[str]) -> list[int]:
    """Positions of the segments a profile is a member of under another version.

    ``stale``: ``_stale`` of its memberships.
    """
    position = catalog.position
    return [position[segment_id] for segment_id in stale if segment_id in position]


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
