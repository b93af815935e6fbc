"""A profile's event aggregate states while its segments are evaluated.

A profile keeps each aggregate's state as JSON (``Profile.aggregates``): a
profile is loaded for every event, but an event touches few of its
aggregates, so only those are decoded, and only those it changed are
encoded again. ``AggregateStates`` is that view at one instant: states are
decoded when first read or fed, each aggregate is read (reduced over its
slots) once however many segments read it, and ``encoded`` gives what to
store.

Nothing is kept between calls. Measured: keeping decoded states (by
stored text, or for the rest of a processing step) saved decoding but cost
more than it saved, in garbage collection of the many small objects they
are; keeping just the readings for the rest of a step (for the customer's
next event and her timer) saved nothing measurable.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import msgspec

from rapport.core.computed_traits.definitions import is_computed_state_id
from rapport.core.conditions import AggregateReading, AggregateState, Aggregator
from rapport.core.conditions.aggregates import EMPTY_READING
from rapport.core.model import Event, Profile

_encode_state = msgspec.json.Encoder().encode
"""Writes what ``Aggregator.decode`` reads, whatever the aggregate's kind."""


class AggregateStates:
    """A profile's aggregate states at one instant, decoded only when read or fed."""

    __slots__ = ("_aggregators", "_changed", "_now", "_readings", "_states", "_stored")

    def __init__(
        self, aggregators: Mapping[str, Aggregator], stored: dict[str, msgspec.Raw], now: int
    ) -> None:
        """``aggregators``: the aggregates segments read, by id; ``now`` in microseconds."""
        self._aggregators = aggregators
        self._stored = stored
        self._now = now
        self._states: dict[str, AggregateState] = {}
        self._readings: dict[str, AggregateReading] = {}
        """Several segments often read one aggregate: it is reduced once."""
        self._changed: set[str] = set()

    def _state(self, aggregate_id: str, aggregator: Aggregator) -> AggregateState:
        state = self._states.get(aggregate_id)
        if state is None:
            text = self._stored.get(aggregate_id)
            state = aggregator.empty() if text is None else aggregator.decode(text)
            self._states[aggregate_id] = state
        return state

    def at(self, now: int) -> AggregateStates:
        """The same (unfed) states read at another instant, sharing what is decoded."""
        if now == self._now:
            return self
        other = AggregateStates(self._aggregators, self._stored, now)
        other._states = self._states
        other._changed = self._changed
        return other

    @property
    def changed(self) -> Collection[str]:
        """The aggregates whose state ``feed`` changed."""
        return self._changed

    def feed(self, candidates: Iterable[tuple[str, Aggregator]], event: Event, at: int) -> None:
        """Add ``event`` (at ``at`` microseconds) to each candidate aggregate it matches.

        Events an aggregate does not count are not fed at all: its state
        stays as stored, which a reading at ``now`` or later gets right
        (what aged out is ignored, and dropped by the next event it counts).
        Most events match few of the aggregates of their name (views of
        shoes, of bags...), so most states are not even decoded. One loop for
        all candidates: an event feeds several.
        """
        states = self._states
        stored = self._stored
        now = self._now
        forget = self._readings.pop
        changed = self._changed.add
        for aggregate_id, aggregator in candidates:
            if not aggregator.matches(event):
                continue
            before = states.get(aggregate_id)
            if before is None:
                text = stored.get(aggregate_id)
                before = aggregator.empty() if text is None else aggregator.decode(text)
                states[aggregate_id] = before
            after = aggregator.add_event_micros(before, event, at, now)
            if after is not before:
                states[aggregate_id] = after
                forget(aggregate_id, None)
                changed(aggregate_id)

    def read(self, aggregate_id: str) -> AggregateReading:
        """The aggregate's reading at this instant (``EvaluationContext.aggregate``)."""
        reading = self._readings.get(aggregate_id)
        if reading is None:
            state = self._states.get(aggregate_id)
            if state is None:
                text = self._stored.get(aggregate_id)
                if text is None:
                    # Many aggregates have no state on a profile (never a matching
                    # event): nothing to decode nor reduce.
                    reading = self._readings[aggregate_id] = EMPTY_READING
                    return reading
                aggregator = self._aggregators[aggregate_id]
                state = self._states[aggregate_id] = aggregator.decode(text)
            else:
                aggregator = self._aggregators[aggregate_id]
            reading = self._readings[aggregate_id] = aggregator.read_micros(state, self._now)
        return reading

    def encoded(self) -> dict[str, msgspec.Raw]:
        """What to store: changed states encoded; states no segment reads any more dropped.

        The stored mapping itself when nothing changed.
        """
        stored = self._stored
        live = self._aggregators
        changed = self._changed
        if stored.keys() <= live.keys():
            if not changed:
                return stored
            unread: list[str] = []
        else:
            # Computed traits keep their states here too, under their own ids.
            unread = [i for i in stored if i not in live and not is_computed_state_id(i)]
            if not changed and not unread:
                return stored
        out = dict(stored)
        for aggregate_id in unread:
            del out[aggregate_id]
        for aggregate_id in changed:
            state = self._states[aggregate_id]
            if state.keys:
                out[aggregate_id] = msgspec.Raw(_encode_state(state))
            else:
                out.pop(aggregate_id, None)
        return out


def merge_aggregate_states(
    aggregators: Mapping[str, Aggregator], winner: Profile, loser: Profile, now: int
) -> Profile:
    """``winner`` (already merged with ``loser``) holding the union of both profiles' states.

    For every aggregate a segment reads (``aggregators``), the merged state
    counts the events of both (``Aggregator.merge_micros``): three views of
    the jacket, two as one profile and one as the other, are three views of
    the merged customer. States no segment reads any more are left as the
    winner had them; computed-trait states (their own namespace) too, for
    now: the winner's computed values stand.
    """
    theirs = loser.aggregates
    if not theirs:
        return winner
    states = dict(winner.aggregates)
    for aggregate_id, raw in theirs.items():
        aggregator = aggregators.get(aggregate_id)
        if aggregator is None or is_computed_state_id(aggregate_id):
            continue
        mine = states.get(aggregate_id)
        incoming = aggregator.decode(raw)
        merged = aggregator.merge_micros(
            aggregator.empty() if mine is None else aggregator.decode(mine), incoming, now
        )
        if merged.keys:
            states[aggregate_id] = msgspec.Raw(aggregator.encode(merged))
        else:
            states.pop(aggregate_id, None)
    return msgspec.structs.replace(winner, aggregates=states)
