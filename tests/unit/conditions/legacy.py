"""States written the way they were stored before per-kind slots, for the tests that
check they are still read (profiles in data directories and databases hold them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from rapport.core.conditions.aggregates import AggregateState, Aggregator


def legacy_json(aggregator: Aggregator, state: AggregateState) -> bytes:
    """``state`` as stored before per-kind slots: ``{"keys": {key: [slots, seen]},
    "next_expiry": ...}``, every slot ``[index, at, count, ints, floats, has_float,
    extreme, first_at, first, last_at, last]`` (what a slot holds of its kind; a
    slot's ``count`` only matters to ``count``)."""
    grain, kind = aggregator.grain, aggregator.kind
    keys: dict[str, Any] = {}
    for key, series in state.keys.items():
        if kind == "distinct_count":
            keys[key] = [[], dict(series)]
            continue
        slots = []
        for slot in series:
            old: list[Any] = [0 if grain is None else slot.at // grain, slot.at, 1, 0, [], False]
            old += [None, 0, None, 0, None]
            if kind == "count":
                old[2] = slot.count
            elif kind == "sum":
                old[3:6] = [slot.ints, list(slot.floats), slot.has_float]
            elif kind in ("min", "max"):
                old[6] = slot.extreme
            elif kind == "first":
                old[7:11] = [slot.first_at, slot.first, slot.at, None]
            else:
                old[7:11] = [slot.at, None, slot.at, slot.last]
            slots.append(old)
        keys[key] = [slots, {}]
    stored: dict[str, Any] = {"keys": keys}
    if state.next_expiry is not None:
        stored["next_expiry"] = state.next_expiry
    return msgspec.json.encode(stored)


def legacy_aggregates(
    aggregates: Mapping[str, msgspec.Raw], aggregators: Mapping[str, Aggregator]
) -> dict[str, msgspec.Raw]:
    """A profile's ``aggregates`` with the states of ``aggregators`` in the earlier form."""
    out = dict(aggregates)
    for state_id, aggregator in aggregators.items():
        raw = aggregates.get(state_id)
        if raw is not None:
            out[state_id] = msgspec.Raw(legacy_json(aggregator, aggregator.decode(raw)))
    return out
