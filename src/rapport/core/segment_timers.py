"""When time alone may next change a profile's memberships: the instant of its segment timer.

A view ageing out of a one-hour window makes a customer leave "viewed the
same product 3 times in the last hour" with no event of hers. The runtime
stores one timer per profile (``runtime.segment_effects``) at the instant
``next_membership_change`` gives, and at that timer
``segments.refresh_memberships`` re-evaluates the segments time can change.
The work is only in the time-dependent segments (``SegmentCatalog.time_bounds``)
whose inputs changed since the timer was last computed, and what an
evaluation of the same profile at the same instant already found
(``segments.Settled``) is used rather than settled again.
"""

from __future__ import annotations

import heapq
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Final

from rapport.core.aggregate_states import AggregateStates
from rapport.core.conditions import ProfileContext
from rapport.core.conditions.instants import from_micros, to_micros
from rapport.core.model import Profile
from rapport.core.segment_guards import NO_EXCLUSION
from rapport.core.segments import (
    NOTHING,
    SegmentCatalog,
    Settled,
    changed_consents,
    changed_traits,
)

_NEVER: Final = 2**63
_UNSETTLED: Final[Settled] = {}
"""What ``_first_change`` looks positions up in when no evaluation settled any (never written)."""
MAX_LOOKAHEAD: Final = 16
"""Evaluations ``next_membership_change`` spends before settling for a lower bound."""


def next_membership_change(
    catalog: SegmentCatalog,
    profile: Profile,
    now: datetime,
    since: Profile | None = None,
    settled: Settled | None = None,
) -> datetime | None:
    """The earliest instant after ``now`` at which time alone may change a membership.

    ``None`` when nothing but an event can change one. Each time-dependent
    segment's condition gives a lower bound (``next_change``); the bounds are
    visited earliest first, the condition is evaluated at each as if no event
    came in between (one that does makes the runtime ask again), and the
    first instant where the value differs from the recorded membership is
    the answer; a segment whose value stays gives its next bound. After
    ``MAX_LOOKAHEAD`` evaluations the earliest bound left is returned: the
    timer re-evaluates there and looks further. So a non-member whose views
    can only age out gets no timer, and a member gets one at the instant it
    leaves.

    ``since`` is the same profile when this was last asked (the answer is its
    ``segment_timer_at``), if that answer is not due yet: then only the
    segments whose inputs differ are looked at, and the old answer stands
    for the others. It is still a lower bound for them, but may come early
    if it came from a segment whose change this event pushed back: such a
    timer re-evaluates, finds nothing, and asks again without ``since``.

    ``settled``: what an evaluation of this very profile at ``now`` found
    (``update_memberships``), used instead of settling those segments again.
    """
    if not catalog.time_bounds:
        return None
    kept: datetime | None = None
    positions: AbstractSet[int] = catalog.timed
    guarded = False
    if since is not None and (since.segment_timer_at is None or since.segment_timer_at > now):
        kept = since.segment_timer_at
        # The segments her traits rule out are left out as the inputs are compared,
        # unless she is a member of one (her city changed): then ``_first_change``.
        guards = catalog.guards
        excluded, excluded_ids = guards.exclusion(profile.traits) if guards else NO_EXCLUSION
        if not excluded_ids.isdisjoint(profile.segments):
            excluded = NOTHING
        guarded = bool(excluded)
        positions = _changed_inputs(catalog, since, profile, excluded)
        if not positions:
            return kept
    before = None if kept is None else to_micros(kept)
    found = _first_change(catalog, profile, now, positions, before, settled, guarded)
    return kept if found is None else from_micros(found)


def _first_change(
    catalog: SegmentCatalog,
    profile: Profile,
    now: datetime,
    positions: AbstractSet[int],
    before: int | None,
    settled: Settled | None = None,
    guarded: bool = False,
) -> int | None:
    """``next_membership_change`` over the segments at ``positions``, in microseconds.

    Only instants earlier than ``before`` are of interest (None when none is).
    ``guarded``: no position is one the profile's traits rule out.
    """
    now_us = to_micros(now)
    members = profile.segments
    segments = catalog.segments
    ids = catalog.ids
    horizon = _NEVER if before is None else before
    # What the evaluation found (``settled``) stands for its positions. Segments
    # the profile's traits rule out are left out: false, and time cannot change
    # that (``segment_guards``), unless she is a member: then it may leave.
    found_at = (settled or _UNSETTLED).get
    guards = catalog.guards
    excluded = guards.excluded(profile.traits) if guards and not guarded else NOTHING
    states: AggregateStates | None = None
    contexts: dict[int, ProfileContext] = {}

    def context_at(instant: int) -> ProfileContext:
        nonlocal states
        context = contexts.get(instant)
        if context is None:
            if states is None:
                states = AggregateStates(catalog.aggregators, profile.aggregates, now_us)
            context = ProfileContext(
                profile,
                from_micros(instant),
                segments=members,
                read_aggregate=states.at(instant).read,
            )
            contexts[instant] = context
        return context

    pending: list[tuple[int, int]] = []
    """``(instant, position)``, a heap: when each segment's value may next change."""
    settles = catalog.time_bounds
    # One pass over the positions, in any order: ``pending`` is a heap.
    for position in positions:
        if excluded and position in excluded and ids[position] not in members:
            continue
        found = found_at(position)
        value, instant = settles[position](context_at(now_us), now_us) if found is None else found
        if value != (ids[position] in members):
            # Not evaluated since its definition changed (not backfilled
            # yet): whichever way time moves its value, the timer at its
            # next input change re-evaluates it (a negative position says so).
            next_change = segments[position].condition.next_change_micros
            instant = None if next_change is None else next_change(context_at(now_us), now_us)
            if instant is not None and now_us < instant < horizon:
                pending.append((instant, -1 - position))
            continue
        if instant is not None and now_us < instant < horizon:
            pending.append((instant, position))
    if not pending:
        return None
    heapq.heapify(pending)
    for _ in range(MAX_LOOKAHEAD):
        if not pending:
            return None
        instant, position = heapq.heappop(pending)
        if position < 0:
            return instant
        value, following = settles[position](context_at(instant), instant)
        if value != (ids[position] in members):
            return instant
        if following is not None and instant < following < horizon:
            heapq.heappush(pending, (following, position))
    # Looked far enough: the timer re-evaluates there and looks further.
    return pending[0][0] if pending else None


def _changed_inputs(
    catalog: SegmentCatalog,
    before: Profile,
    after: Profile,
    excluded: frozenset[int] = NOTHING,
) -> set[int]:
    """Positions (among ``time_bounds``) of the segments whose inputs or membership differ.

    Those in ``excluded`` left out.
    """
    changed: set[int] = set()
    by_aggregate, by_trait, by_consent, readers = catalog.inputs_without(excluded, timed=True)
    if before.aggregates is not after.aggregates:
        # A state the profile kept is the very same object: compare texts only
        # where the objects differ. A new state is one ``get`` does not find:
        # counting those tells whether any was dropped (rare), cheaper than
        # comparing the two sets of ids first.
        old_states, new_states = before.aggregates, after.aggregates
        previous = old_states.get
        added = 0
        for aggregate_id, text in new_states.items():
            old = previous(aggregate_id)
            if old is not text and old != text:
                if old is None:
                    added += 1
                counting = by_aggregate.get(aggregate_id)
                if counting is not None:
                    changed.update(counting)
        if len(old_states) + added > len(new_states):
            for aggregate_id in old_states.keys() - new_states.keys():
                changed.update(by_aggregate.get(aggregate_id, ()))
    if before.traits is not after.traits:
        changed_traits(by_trait, before, after, changed)
    if before.consent is not after.consent:
        changed_consents(by_consent, before, after, changed)
    if before.segments is not after.segments:
        timed = catalog.timed
        for segment_id in before.segments.keys() ^ after.segments.keys():
            changed.update(readers.get(segment_id, ()))
            position = catalog.position.get(segment_id)
            if position is not None and position in timed and position not in excluded:
                changed.add(position)
    return changed
