"""How aggregate states are stored, and states stored before per-kind slots still read.

The ``LEGACY`` states below are real JSON written by the code that kept one
11-field slot for every kind (``[index, at, count, ints, floats, has_float,
extreme, first_at, first, last_at, last]``, series ``[slots, seen]``), for
the events ``EVENTS``: profiles in data directories, SQLite and PostgreSQL
hold such states.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from rapport.core.conditions.aggregates import AggregateSpec, AggregateState, Aggregator

H = 3_600_000_000
T0 = 1_795_174_398_300_000
NOW = T0 + 1_300_000_000
EVENTS: list[tuple[int, Any, str]] = [
    (T0, 3, "a"),
    (T0 + 5_000_000, 2.5, "b"),
    (T0 + 5_000_001, 7, "a"),
    (T0 + 1_200_000_000, 1, "a"),
    (T0 + 1_200_000_000, "x", "b"),
]

_ = None
LEGACY: list[tuple[str, bool, bytes, dict[str, Any]]] = [
    (
        "count",
        True,
        b'{"keys":{"a":[[[29919573,1795174403300001,2,0,[],false,null,0,null,0,null],'
        b"[29919593,1795175598300000,1,0,[],false,null,0,null,0,null]],{}],"
        b'"b":[[[29919573,1795174403300000,1,0,[],false,null,0,null,0,null],'
        b"[29919593,1795175598300000,1,0,[],false,null,0,null,0,null]],{}]},"
        b'"next_expiry":1795178003300000}',
        {"a": 3, "b": 2},
    ),
    (
        "count",
        False,
        b'{"keys":{"":[[[0,1795175598300000,5,0,[],false,null,0,null,0,null]],{}]}}',
        {"": 5},
    ),
    (
        "sum",
        True,
        b'{"keys":{"a":[[[29919573,1795174403300001,2,10,[10.0],false,null,0,null,0,null],'
        b"[29919593,1795175598300000,1,1,[1.0],false,null,0,null,0,null]],{}],"
        b'"b":[[[29919573,1795174403300000,1,0,[2.5],true,null,0,null,0,null]],{}]},'
        b'"next_expiry":1795178003300000}',
        {"a": 11, "b": 2.5},
    ),
    (
        "sum",
        False,
        b'{"keys":{"":[[[0,1795175598300000,4,11,[13.5],true,null,0,null,0,null]],{}]}}',
        {"": 13.5},
    ),
    (
        "min",
        True,
        b'{"keys":{"a":[[[29919573,1795174403300001,2,0,[],false,3,0,null,0,null],'
        b"[29919593,1795175598300000,1,0,[],false,1,0,null,0,null]],{}],"
        b'"b":[[[29919573,1795174403300000,1,0,[],false,2.5,0,null,0,null]],{}]},'
        b'"next_expiry":1795178003300000}',
        {"a": 1, "b": 2.5},
    ),
    (
        "min",
        False,
        b'{"keys":{"":[[[0,1795175598300000,4,0,[],false,1,0,null,0,null]],{}]}}',
        {"": 1},
    ),
    (
        "max",
        True,
        b'{"keys":{"a":[[[29919573,1795174403300001,2,0,[],false,7,0,null,0,null],'
        b"[29919593,1795175598300000,1,0,[],false,1,0,null,0,null]],{}],"
        b'"b":[[[29919573,1795174403300000,1,0,[],false,2.5,0,null,0,null]],{}]},'
        b'"next_expiry":1795178003300000}',
        {"a": 7, "b": 2.5},
    ),
    (
        "max",
        False,
        b'{"keys":{"":[[[0,1795175598300000,4,0,[],false,7,0,null,0,null]],{}]}}',
        {"": 7},
    ),
    (
        "first",
        True,
        b'{"keys":{"a":[[[29919573,1795174403300001,2,0,[],false,null,1795174398300000,3,'
        b"1795174403300001,7],[29919593,1795175598300000,1,0,[],false,null,1795175598300000,1,"
        b'1795175598300000,1]],{}],"b":[[[29919573,1795174403300000,1,0,[],false,null,'
        b"1795174403300000,2.5,1795174403300000,2.5],[29919593,1795175598300000,1,0,[],false,"
        b'null,1795175598300000,"x",1795175598300000,"x"]],{}]},"next_expiry":1795178003300000}',
        {"a": 3, "b": 2.5},
    ),
    (
        "first",
        False,
        b'{"keys":{"":[[[0,1795175598300000,5,0,[],false,null,1795174398300000,3,'
        b'1795175598300000,"x"]],{}]}}',
        {"": 3},
    ),
    (
        "last",
        True,
        b'{"keys":{"a":[[[29919573,1795174403300001,2,0,[],false,null,1795174398300000,3,'
        b"1795174403300001,7],[29919593,1795175598300000,1,0,[],false,null,1795175598300000,1,"
        b'1795175598300000,1]],{}],"b":[[[29919573,1795174403300000,1,0,[],false,null,'
        b"1795174403300000,2.5,1795174403300000,2.5],[29919593,1795175598300000,1,0,[],false,"
        b'null,1795175598300000,"x",1795175598300000,"x"]],{}]},"next_expiry":1795178003300000}',
        {"a": 1, "b": "x"},
    ),
    (
        "last",
        False,
        b'{"keys":{"":[[[0,1795175598300000,5,0,[],false,null,1795174398300000,3,'
        b'1795175598300000,"x"]],{}]}}',
        {"": "x"},
    ),
    (
        "distinct_count",
        True,
        b'{"keys":{"a":[[],{"3":1795174398300000,"7":1795174403300001,"1":1795175598300000}],'
        b'"b":[[],{"2.5":1795174403300000,"x":1795175598300000}]},"next_expiry":1795177998300000}',
        {"a": 3, "b": 2},
    ),
    (
        "distinct_count",
        False,
        b'{"keys":{"":[[],{"3":1795174398300000,"2.5":1795174403300000,"7":1795174403300001,'
        b'"1":1795175598300000,"x":1795175598300000}]}}',
        {"": 5},
    ),
]


def make(kind: str, keyed: bool) -> Aggregator:
    """The aggregates the ``LEGACY`` states were written for: one-minute slots."""
    return Aggregator(
        AggregateSpec(
            event="E",
            aggregate=kind,  # type: ignore[arg-type]
            of=None if kind == "count" else "properties.v",
            window_us=H if keyed else None,
            key="properties.k" if keyed else None,
            resolution_us=60_000_000 if keyed else None,
        )
    )


def fed(aggregator: Aggregator, events: list[tuple[int, Any, str]]) -> AggregateState:
    state = aggregator.empty()
    for at, value, key in events:
        state = aggregator.add_micros(state, at, value, key, NOW)
    return state


@pytest.mark.parametrize(("kind", "keyed", "stored", "values"), LEGACY)
def test_states_stored_before_per_kind_slots_read_as_they_did(
    kind: str, keyed: bool, stored: bytes, values: dict[str, Any]
) -> None:
    aggregator = make(kind, keyed)
    state = aggregator.decode(msgspec.Raw(stored))
    assert aggregator.read_micros(state, NOW).values == values
    # Exactly the state the same events give today.
    assert state == fed(aggregator, EVENTS)
    # Fed one more event, it is stored in today's form, and keeps counting right.
    later = (NOW - 1, 9, "a")
    after = aggregator.add_micros(state, *later, NOW)
    encoded = aggregator.encode(after)
    assert encoded.startswith(b"[") and b"null,0,null" not in encoded
    assert aggregator.decode(encoded) == fed(aggregator, [*EVENTS, later])
    assert len(aggregator.encode(state)) < len(stored)


def test_each_kind_stores_only_what_it_needs() -> None:
    """Slots are arrays of their kind's fields; their stretch of time (``at // grain``)
    is not stored."""
    by_kind = {kind: make(kind, keyed=False) for kind in ("count", "sum", "min", "first", "last")}
    stored = {
        kind: aggregator.encode(fed(aggregator, EVENTS)) for kind, aggregator in by_kind.items()
    }
    last_at = T0 + 1_200_000_000
    assert stored["count"] == b'[null,{"":[[%d,5]]}]' % last_at
    assert stored["sum"] == b'[null,{"":[[%d,11,[13.5],true]]}]' % last_at
    assert stored["min"] == b'[null,{"":[[%d,1]]}]' % last_at
    assert stored["first"] == b'[null,{"":[[%d,%d,3]]}]' % (last_at, T0)
    assert stored["last"] == b'[null,{"":[[%d,"x"]]}]' % last_at
    distinct = make("distinct_count", keyed=True)
    assert distinct.encode(fed(distinct, EVENTS[:2])) == (
        b'[%d,{"a":{"3":%d},"b":{"2.5":%d}}]' % (T0 + H, T0, T0 + 5_000_000)
    )


def test_out_of_order_events_land_in_their_own_slot() -> None:
    """An event older than a key's newest slot goes into the slot of its stretch of
    time, found from ``at // grain`` alone (one-minute slots here)."""
    aggregator = make("count", keyed=True)
    minute = 60_000_000
    start = T0 - T0 % minute
    events = [
        (start + 5 * minute, _, "a"),
        (start + 1 * minute, _, "a"),
        (start + 3 * minute, _, "a"),
    ]
    events += [(start + 3 * minute + 1, _, "a"), (start + 1 * minute + 7, _, "a")]
    state = fed(aggregator, events)
    assert [(slot.at - start, slot.count) for slot in state.keys["a"]] == [
        (minute + 7, 2),
        (3 * minute + 1, 2),
        (5 * minute, 1),
    ]
    assert aggregator.decode(aggregator.encode(state)) == state
