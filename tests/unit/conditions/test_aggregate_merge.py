"""Property: merging two profiles' aggregate states equals one state fed all their events.

When two profiles merge, each kept its own states; ``Aggregator.merge_micros``
must give what a single profile that received both streams would hold:
the same reading for every key and the same next expiry, for every
aggregate kind, windowed or not, keyed or not, with clock jumps. Event
times are distinct (a ``first``/``last`` tie between the two profiles is
the one case documented as keeping one side's value).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.core.conditions.aggregates import AGGREGATES, AggregateSpec, Aggregator

HOUR = 3_600_000_000
VALUES = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
    st.sampled_from([0.1, 0.2, 0.3, 1e16, -1e16, "a", "b", None, True]),
)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[Aggregator, list[tuple[int, Any, str | None, bool]], int]:
    kind = draw(st.sampled_from(AGGREGATES))
    window = draw(st.sampled_from([None, HOUR, 24 * HOUR]))
    keyed = draw(st.booleans())
    spec = AggregateSpec(
        event="Viewed", aggregate=kind, window_us=window, key="properties.k" if keyed else None
    )
    # Events at least a slot apart (24 s: the slot of a one-day window): that
    # is where a state is exact. Within one slot, a profile's own state may
    # drop the slot at its older event before the merge brings the newer one.
    slot = 24_000_000
    times = [
        step * slot
        for step in draw(
            st.lists(
                st.integers(min_value=0, max_value=48 * HOUR // slot),
                min_size=0,
                max_size=30,
                unique=True,
            )
        )
    ]
    events = [
        (
            at,
            draw(VALUES),
            draw(st.sampled_from(["p1", "p2", "p3"])) if keyed else None,
            draw(st.booleans()),  # which of the two profiles received it
        )
        for at in times
    ]
    now = max(times, default=0) + draw(st.integers(min_value=0, max_value=30 * HOUR))
    return Aggregator(spec), events, now


@settings(max_examples=400, deadline=None)
@given(scenario())
def test_merged_states_read_like_one_state_fed_both_streams(
    case: tuple[Aggregator, list[tuple[int, Any, str | None, bool]], int],
) -> None:
    aggregator, events, now = case
    one, a, b = aggregator.empty(), aggregator.empty(), aggregator.empty()
    # Each profile received its events in arrival order (here: list order),
    # with its own clock moving forward to each event's time.
    clock = 0
    for at, value, key, to_a in events:
        clock = max(clock, at)
        one = aggregator.add_micros(one, at, value, key, clock)
        if to_a:
            a = aggregator.add_micros(a, at, value, key, clock)
        else:
            b = aggregator.add_micros(b, at, value, key, clock)
    merged = aggregator.merge_micros(a, b, now)
    expected = aggregator.read_micros(aggregator.expire_micros(one, now), now)
    got = aggregator.read_micros(merged, now)
    assert got.values == expected.values
    assert got.next_expiry_us == expected.next_expiry_us
    # Merging is symmetric up to the documented ties, which distinct times exclude.
    other = aggregator.read_micros(aggregator.merge_micros(b, a, now), now)
    assert other.values == expected.values
