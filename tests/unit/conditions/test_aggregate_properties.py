"""Property tests: the incremental aggregate equals a full recomputation from the events.

Random event streams (random times, late and out-of-order arrivals, events
already out of the window, random keys and values of every JSON type), random
windows and clock jumps. After every step the incremental reading is compared
with a recomputation from every event received so far, and so is the
reported next expiry; states also survive storage (in today's form and in
the form stored before per-kind slots).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.core.conditions.aggregates import (
    AGGREGATES,
    AggregateSpec,
    AggregateState,
    Aggregator,
)
from rapport.core.conditions.fields import key_text
from tests.unit.conditions.legacy import legacy_json

Arrival = tuple[int, int, int, Any, "str | None"]
"""(sequence, arrival time, event time, value, key)"""

VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-5, max_value=5),
    st.floats(allow_nan=False, allow_infinity=False),  # what JSON can carry
    # Values whose sum depends on the order of additions unless it is exact.
    st.sampled_from([0.1, 0.2, 0.3, 1e16, -1e16, 1.0, 1e-16, -2.5, 1e300, 2.0**960]),
    st.sampled_from(["a", "b", "1", "2.5", ""]),
    st.none(),
    st.booleans(),
)
KEYS = st.one_of(st.none(), st.sampled_from(["p1", "p2", "p3", "42"]))


def accepted(kind: str, value: Any) -> bool:
    """Which values each aggregate takes, written out independently of the implementation."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "count":
        return True
    if kind in ("min", "max"):
        return is_number and math.isfinite(value)
    if kind == "sum":
        return is_number and math.isfinite(value) and abs(value) < 2**960
    if kind in ("first", "last"):
        return value is not None
    return key_text(value) is not None


def combine(kind: str, events: list[tuple[int, int, Any]]) -> Any:
    """The aggregate of ``events`` ((time, sequence, value)), from scratch."""
    ordered = sorted(events, key=lambda e: (e[0], e[1]))
    values = [value for _, _, value in ordered]
    if kind == "count":
        return len(values)
    if kind == "sum":
        return math.fsum(values) if any(type(v) is float for v in values) else sum(values)
    if kind == "min":
        return min(values)
    if kind == "max":
        return max(values)
    if kind == "first":
        return values[0]
    if kind == "last":
        return values[-1]
    return len({key_text(v) for v in values})


def recompute(
    spec: AggregateSpec, arrivals: list[Arrival], now: int
) -> tuple[dict[str, Any], int | None]:
    """Values per key and the next expiry at ``now``, from every event received."""
    window = spec.window_us
    by_key: dict[str, list[tuple[int, int, Any]]] = defaultdict(list)
    for sequence, arrived, at, value, key in arrivals:
        if window is not None and (at <= arrived - window or at <= now - window):
            continue
        if not accepted(spec.aggregate, value):
            continue
        if spec.key is not None and key is None:
            continue
        by_key[key if spec.key is not None else ""].append((at, sequence, value))
    values = {key: combine(spec.aggregate, events) for key, events in by_key.items()}
    if window is None or not by_key:
        return values, None
    if spec.aggregate == "distinct_count":
        # A distinct value ages out when its most recent sighting does.
        newest: dict[tuple[str, str | None], int] = {}
        for key, events in by_key.items():
            for at, _, value in events:
                slot = (key, key_text(value))
                newest[slot] = max(newest.get(slot, at), at)
        return values, min(newest.values()) + window
    return values, min(at for events in by_key.values() for at, _, _ in events) + window


def same(a: Any, b: Any) -> bool:
    """Equal, with ``1 == 1.0`` but not ``True == 1``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return (type(a) is type(b) and a == b) or (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


@st.composite
def scenarios(
    draw: st.DrawFn, resolution: int | None, kinds: tuple[str, ...] = AGGREGATES
) -> tuple[AggregateSpec, list[Any]]:
    kind = draw(st.sampled_from(kinds))
    window = draw(st.one_of(st.none(), st.integers(min_value=1, max_value=2000)))
    keyed = draw(st.booleans())
    spec = AggregateSpec(
        event="E",
        aggregate=kind,
        of=None if kind == "count" else "properties.v",
        window_us=window,
        key="properties.k" if keyed else None,
        resolution_us=resolution,
    )
    span = window or 2000
    advance = st.one_of(
        st.integers(min_value=0, max_value=3 * span), st.sampled_from([0, 0, 1, span, span - 1])
    )
    offset = st.one_of(  # event time relative to now: late, on the window's edge, ahead
        st.integers(min_value=-2 * span, max_value=span // 5),
        st.sampled_from([0, 0, -1, 1, -span, -span + 1, -span - 1]),
    )
    step = st.one_of(
        st.tuples(st.just("event"), advance, offset, VALUES, KEYS),
        st.tuples(st.just("tick"), st.integers(min_value=0, max_value=5 * span)),
        # Move the clock to just before, at or just after the next expiry.
        st.tuples(st.just("expiry"), st.sampled_from([-1, 0, 1])),
        # Another event at the previous one's time and key (ties between events).
        st.tuples(st.just("tie"), VALUES),
        # The previous event's value and key again, earlier (a late, older sighting).
        st.tuples(st.just("echo"), st.integers(min_value=0, max_value=span)),
    )
    return spec, draw(st.lists(step, max_size=40))


def run_stream(spec: AggregateSpec, steps: list[Any], check: Any) -> None:
    aggregator = Aggregator(spec)
    state = aggregator.empty()
    now = 1_000_000
    arrivals: list[Arrival] = []
    for sequence, step in enumerate(steps):
        if step[0] in ("tie", "echo"):
            if not arrivals:
                continue
            _, _, previous_at, previous_value, previous_key = arrivals[-1]
            if step[0] == "tie":
                step = ("event", 0, previous_at - now, step[1], previous_key)
            else:
                step = ("event", 0, previous_at - step[1] - now, previous_value, previous_key)
        if step[0] == "expiry":
            if state.next_expiry is None:
                continue
            now = max(now, state.next_expiry + step[1])
        else:
            now += step[1]
        if step[0] == "event":
            _, _, offset, value, key = step
            state = aggregator.add_micros(state, now + offset, value, key, now)
            arrivals.append((sequence, now, now + offset, value, key))
        else:
            state = aggregator.expire_micros(state, now)
        check(aggregator, state, arrivals, now)


def check_against_recomputation(
    aggregator: Aggregator, state: AggregateState, arrivals: list[Arrival], now: int
) -> None:
    spec = aggregator.spec
    expected, expected_expiry = recompute(spec, arrivals, now)
    reading = aggregator.read_micros(state, now)
    assert same(dict(reading.values), expected), (reading.values, expected)
    assert reading.next_expiry_us == expected_expiry
    assert state.next_expiry == expected_expiry  # kept exact in the state itself
    # Reading a state that was not expired since, later on, is still right.
    for later in (
        now + 1234,
        expected_expiry,
        None if expected_expiry is None else expected_expiry - 1,
    ):
        if later is not None:
            again = aggregator.read_micros(state, later)
            assert same(dict(again.values), recompute(spec, arrivals, later)[0])
    # The state survives storage, in the form stored today and in the earlier one.
    check_storage(aggregator, state, now, expected)


def check_storage(
    aggregator: Aggregator, state: AggregateState, now: int, expected: dict[str, Any]
) -> None:
    encoded = aggregator.encode(state)
    assert msgspec.json.encode(state) == encoded  # what any encoder writes (backfills)
    stored = aggregator.decode(encoded)
    assert stored == state
    assert same(dict(aggregator.read_micros(stored, now).values), expected)
    assert aggregator.decode(legacy_json(aggregator, state)) == state


@pytest.mark.parametrize("kind", AGGREGATES)
def test_incremental_aggregate_equals_recomputation(kind: str) -> None:
    @settings(max_examples=250, deadline=None)
    @given(scenarios(resolution=1, kinds=(kind,)))
    def check(scenario: tuple[AggregateSpec, list[Any]]) -> None:
        spec, steps = scenario
        run_stream(spec, steps, check_against_recomputation)

    check()


@settings(max_examples=200, deadline=None)
@given(scenarios(resolution=None))
def test_default_resolution_is_exact_for_events_apart(
    scenario: tuple[AggregateSpec, list[Any]],
) -> None:
    """With the default resolution (window / 3600), streams whose events of one key are
    never in the same slot give exactly the recomputed values."""
    spec, steps = scenario
    if spec.window_us is not None:
        spec = msgspec.structs.replace(spec, window_us=spec.window_us * 3600)
        steps = [
            (s[0], s[1] * 3600, s[2] * 3600, *s[3:])
            if s[0] == "event"
            else (s[0], s[1] * 3600 if s[0] in ("tick", "echo") else s[1])
            for s in steps
        ]
    run_stream(spec, steps, check_against_recomputation)


# -- coarse resolution: slots of several events ---------------------------------------------


def simulate_slots(
    spec: AggregateSpec, arrivals: list[Arrival], now: int
) -> tuple[dict[str, Any], int | None]:
    """The documented slot semantics, naively: events of one key in the same
    resolution-wide stretch share a slot, which ages out when its newest event does."""
    window, resolution = spec.window_us, spec.resolution_us
    assert window is not None and resolution is not None
    groups: list[dict[str, Any]] = []

    def alive(group: dict[str, Any], instant: int) -> bool:
        return max(at for at, _, _ in group["events"]) > instant - window

    for sequence, arrived, at, value, key in arrivals:
        groups = [group for group in groups if alive(group, arrived)]
        if at <= arrived - window or not accepted(spec.aggregate, value):
            continue
        if spec.key is not None and key is None:
            continue
        name = key if spec.key is not None else ""
        index = at // resolution
        for group in groups:
            if group["key"] == name and group["index"] == index:
                group["events"].append((at, sequence, value))
                break
        else:
            groups.append({"key": name, "index": index, "events": [(at, sequence, value)]})
    live = sorted((g for g in groups if alive(g, now)), key=lambda g: g["index"])
    values: dict[str, Any] = {}
    for name in {g["key"] for g in live}:
        mine = [g["events"] for g in live if g["key"] == name]
        everything = [event for events in mine for event in events]
        if spec.aggregate == "first":
            values[name] = min(mine[0], key=lambda e: (e[0], e[1]))[2]
        elif spec.aggregate == "last":
            values[name] = max(mine[-1], key=lambda e: (e[0], e[1]))[2]
        else:
            values[name] = combine(spec.aggregate, everything)
    if not live:
        return values, None
    return values, min(max(at for at, _, _ in g["events"]) for g in live) + window


@pytest.mark.parametrize("kind", [kind for kind in AGGREGATES if kind != "distinct_count"])
def test_coarse_slots_follow_the_documented_semantics(kind: str) -> None:
    @settings(max_examples=150, deadline=None)
    @given(
        scenarios(resolution=None, kinds=(kind,)).filter(lambda s: s[0].window_us is not None),
        st.integers(min_value=2, max_value=400),
    )
    def check_stream(scenario: tuple[AggregateSpec, list[Any]], resolution: int) -> None:
        run_coarse(scenario, resolution)

    check_stream()


def run_coarse(scenario: tuple[AggregateSpec, list[Any]], resolution: int) -> None:
    spec, steps = scenario
    spec = msgspec.structs.replace(spec, resolution_us=resolution)

    def check(
        aggregator: Aggregator, state: AggregateState, arrivals: list[Arrival], now: int
    ) -> None:
        expected, expected_expiry = simulate_slots(aggregator.spec, arrivals, now)
        reading = aggregator.read_micros(state, now)
        assert same(dict(reading.values), expected), (reading.values, expected)
        assert reading.next_expiry_us == expected_expiry
        assert state.next_expiry == expected_expiry
        check_storage(aggregator, state, now, expected)

    run_stream(spec, steps, check)
