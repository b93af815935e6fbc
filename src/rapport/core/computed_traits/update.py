"""Bringing one profile's computed traits up to date after an event, or at an instant.

``apply_computed_traits(catalog, profile, event, now)`` runs after the event
was applied to the profile (``core.profiles.apply_event``):

1. the event is fed to the computations that count it (their states live in
   ``Profile.aggregates`` under ``ct_...`` ids, encoded, decoded only when
   touched);
2. windowed computations whose oldest event aged out by ``now`` are expired
   (found through one small map of next expiries, ``catalog.DUE_ID``), so a
   trait read by a segment is current at every customer event;
3. a value the event itself set under a computed trait's name (a client's
   ``identify``) is replaced by the computed one: the engine owns that name;
4. each touched trait whose value differs from the stored one is written,
   with provenance: source ``rapport:computed``, ``observed_at`` the event's
   time, ``received_at`` now, ``message_id`` the event's.

Values are read from the states, never by rescanning history -- except by
``rebuild_computed_trait``, which a backfill calls once when a definition
is written, so that the events from before it count.
``refresh_computed_traits`` does step 2 and 4 alone, for a timer set at
``ComputedTraitCatalog.next_change``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from rapport.core.computed_traits.catalog import (
    DUE_ID,
    Computation,
    ComputedTraitCatalog,
    read_due,
)
from rapport.core.computed_traits.definitions import COMPUTED_SOURCE, is_computed_state_id
from rapport.core.conditions.instants import from_micros, to_micros
from rapport.core.model import Event, Profile, TraitValue
from rapport.core.profiles import person_traits

INTERNAL_SOURCE_PREFIX = "rapport:"
"""Events the engine emits itself (segment changes, timers...) are not customer activity."""
REACTION_SOURCE = "rapport:channels"
"""Except the customer's reactions to messages (opens, clicks, unsubscribes): hers."""

_encode_due = msgspec.json.Encoder().encode


def is_customer_event(event: Event) -> bool:
    source = event.source
    return not source.startswith(INTERNAL_SOURCE_PREFIX) or source == REACTION_SOURCE


def apply_computed_traits(
    catalog: ComputedTraitCatalog, profile: Profile, event: Event, now: datetime
) -> Profile:
    """``profile`` (after ``event`` was applied) with its computed traits up to date.

    Internal events (source ``rapport:...``) change nothing. Returns
    ``profile`` itself when nothing changed.
    """
    if not is_customer_event(event):
        return profile
    if not catalog:
        return _without_states(profile)
    update = _Update(catalog, profile, to_micros(now))
    counting = catalog.counting(event)
    if counting:
        at = to_micros(event.timestamp)
        for computation in counting:
            update.observe(computation, event, at)
    update.expire_due()
    incoming = person_traits(event)
    if incoming:
        for name in incoming.keys() & catalog.by_trait.keys():
            computation = catalog.by_trait[name]
            update.touched.setdefault(computation.state_id, computation)
    return update.result(event.timestamp, now, event.message_id)


def refresh_computed_traits(
    catalog: ComputedTraitCatalog, profile: Profile, now: datetime
) -> Profile:
    """``profile`` with the windowed computed traits that time changed by ``now`` rewritten.

    For a timer set at ``catalog.next_change(profile, ...)``: the values it
    writes are observed at ``now`` (there is no event).
    """
    if not catalog:
        return _without_states(profile)
    update = _Update(catalog, profile, to_micros(now))
    update.expire_due()
    return update.result(now, now, None)


def merge_computed_traits(
    catalog: ComputedTraitCatalog, winner: Profile, loser: Profile, now: datetime
) -> Profile:
    """``winner`` (already merged with ``loser``) with computed traits over both histories.

    Each computation's state becomes the union of the two profiles' states
    (``Computation.merge``): lifetime revenue adds up, the last order is the
    later one, views by product count both devices. The traits are rewritten
    from the merged states, observed at ``now``, and what aged out by ``now``
    is expired, as at an event.
    """
    if not catalog:
        return _without_states(winner)
    update = _Update(catalog, winner, to_micros(now))
    for state_id, raw in loser.aggregates.items():
        computation = catalog.by_state.get(state_id)
        if computation is None:
            continue
        before = update.state(computation)
        merged = computation.merge(before, computation.decode(raw), update.now)
        update.touched[state_id] = computation
        update._set(computation, before, merged)
    for computation in catalog.computations:
        if computation.state_id not in update.touched and any(
            name in winner.traits for name in computation.traits
        ):
            # ``merge_profiles`` kept one side's value by its time; only the
            # merged state knows the value (the loser's state may be empty).
            update.touched[computation.state_id] = computation
    update.expire_due()
    return update.result(now, now, None)


def history_request(
    computation: Computation, now: datetime
) -> tuple[list[str] | None, datetime | None]:
    """What rebuilding ``computation`` at ``now`` reads from a timeline.

    The event names it counts (``None``: every event, when it counts every
    track event or page calls, whose stored name is the page's) and the
    earliest time (``None``: it has no window, all time counts).
    """
    names = None if computation.every_track or computation.pages else sorted(computation.events)
    window = computation.window_us
    return names, None if window is None else from_micros(to_micros(now) - window)


def feeds(catalog: ComputedTraitCatalog, computation: Computation, event: Event) -> bool:
    """Whether streaming ``event`` feeds ``computation`` (one of ``catalog``'s)."""
    return is_customer_event(event) and computation in catalog.counting(event)


def rebuild_computed_trait(
    catalog: ComputedTraitCatalog,
    computation: Computation,
    profile: Profile,
    history: Sequence[Event],
    now: datetime,
) -> Profile:
    """``profile`` with ``computation``'s state rebuilt from ``history``, its traits rewritten.

    ``history`` is the profile's timeline in log order (``history_request``
    says which part); events the computation does not count are skipped as
    streaming skips them (internal ones included). The state is then the
    one streaming would hold had the definition always existed: every kind's
    state is a function of the set of events counted within its window
    (the property tests of ``tests/unit/computed_traits`` check that
    incremental equals recomputed). A profile the history does not feed and
    that holds neither the state nor one of the traits gets no value, as
    streaming gives none to a customer it never fed.

    Changed values carry provenance as streaming ones: source
    ``rapport:computed``, observed at the newest event counted (``now``
    when none is), received ``now``, with that event's message id. Returns
    ``profile`` itself when nothing changed.
    """
    if catalog.by_state.get(computation.state_id) is not computation:
        raise ValueError(f"computation {computation.state_id!r} is not one of the catalog's")
    at_now = to_micros(now)
    state = computation.empty()
    newest: Event | None = None
    for event in history:
        if feeds(catalog, computation, event):
            state = computation.observe(state, event, to_micros(event.timestamp), at_now)
            newest = event
    state = computation.expire(state, at_now)
    held = computation.state_id in profile.aggregates or any(
        name in profile.traits for name in computation.traits
    )
    if newest is None and not held:
        return profile
    update = _Update(catalog, profile, at_now)
    before = update.state(computation)
    if computation.encode(before) != computation.encode(state):
        update._set(computation, before, state)
    update.touched[computation.state_id] = computation
    if newest is None:
        return update.result(now, now, None)
    return update.result(newest.timestamp, now, newest.message_id)


def _without_states(profile: Profile) -> Profile:
    """``profile`` without computed-trait states: the workspace defines none (any more)."""
    stored = profile.aggregates
    if not any(is_computed_state_id(state_id) for state_id in stored):
        return profile
    kept = {k: raw for k, raw in stored.items() if not is_computed_state_id(k)}
    return msgspec.structs.replace(profile, aggregates=kept)


class _Update:
    """One profile's computed states while one event (or instant) is applied."""

    def __init__(self, catalog: ComputedTraitCatalog, profile: Profile, now: int) -> None:
        self.catalog = catalog
        self.profile = profile
        self.now = now
        self.states: dict[str, Any] = {}
        """Decoded states by id (only those read)."""
        self.changed: set[str] = set()
        self.touched: dict[str, Computation] = {}
        """State id -> computation whose traits to recompute."""
        self.due = read_due(profile)
        """Windowed state id -> its next expiry (microseconds)."""
        self.due_changed = False

    def state(self, computation: Computation) -> Any:
        state_id = computation.state_id
        if state_id in self.states:
            return self.states[state_id]
        raw = self.profile.aggregates.get(state_id)
        state = computation.empty() if raw is None else computation.decode(raw)
        self.states[state_id] = state
        return state

    def _set(self, computation: Computation, before: Any, after: Any) -> None:
        if after is before:
            return
        state_id = computation.state_id
        self.states[state_id] = after
        self.changed.add(state_id)
        if computation.windowed:
            expiry = computation.next_expiry(after)
            if self.due.get(state_id) != expiry:
                self.due_changed = True
                if expiry is None:
                    del self.due[state_id]
                else:
                    self.due[state_id] = expiry

    def observe(self, computation: Computation, event: Event, at: int) -> None:
        before = self.state(computation)
        self._set(computation, before, computation.observe(before, event, at, self.now))
        self.touched[computation.state_id] = computation

    def expire_due(self) -> None:
        by_state = self.catalog.by_state
        for state_id, expiry in list(self.due.items()):
            if expiry > self.now or state_id in self.touched:
                continue
            computation = by_state.get(state_id)
            if computation is None:
                # A state no definition reads any more (dropped by ``encoded``).
                del self.due[state_id]
                self.due_changed = True
                continue
            before = self.state(computation)
            self._set(computation, before, computation.expire(before, self.now))
            self.touched[state_id] = computation

    def result(self, observed_at: datetime, now: datetime, message_id: str | None) -> Profile:
        profile = self.profile
        traits = profile.traits
        for computation in self.touched.values():
            value = computation.value(self.state(computation), self.now)
            for name in computation.traits:
                stored = traits.get(name)
                if stored is not None and stored.source == COMPUTED_SOURCE:
                    if _same(stored.value, value):
                        continue
                elif stored is None and value is None:
                    continue
                if traits is profile.traits:
                    traits = dict(traits)
                traits[name] = TraitValue(
                    value=value,
                    source=COMPUTED_SOURCE,
                    observed_at=observed_at,
                    received_at=now,
                    message_id=message_id,
                )
        aggregates = self.encoded()
        if traits is profile.traits and aggregates is profile.aggregates:
            return profile
        return msgspec.structs.replace(profile, traits=traits, aggregates=aggregates)

    def encoded(self) -> dict[str, msgspec.Raw]:
        """What to store: changed states re-encoded, empty ones dropped.

        Only the ``ct_`` namespace is ours: segment states are kept as they
        are. States no definition reads any more are dropped too, but only
        when something is written anyway (looking for them at every event
        would cost a scan of every state id).
        """
        stored = self.profile.aggregates
        if not self.changed and not self.due_changed:
            return stored
        live = self.catalog.by_state
        out = {
            state_id: raw
            for state_id, raw in stored.items()
            if state_id in live or not is_computed_state_id(state_id)
        }
        for state_id in self.changed:
            computation = self.touched[state_id]  # only touched states change
            state = self.states[state_id]
            if computation.is_empty(state):
                out.pop(state_id, None)
            else:
                out[state_id] = msgspec.Raw(computation.encode(state))
        due = {state_id: at for state_id, at in self.due.items() if state_id in live}
        if due:
            out[DUE_ID] = msgspec.Raw(_encode_due(due))
        return out


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: ``1`` and ``True`` differ, ``1`` and ``1.0`` do not."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
