"""Property test: when two profiles merge, their computed traits cover both histories.

Random streams are split between two profiles (her phone and her laptop),
each maintained event by event as the processor does; at a random later
instant they merge. Every computed trait of the merged profile must equal
its value recomputed from ALL the events, as if one profile had received
them: revenue adds up, the last product is the later one, views by product
and engagement count both devices.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.core.computed_traits import merge_computed_traits
from rapport.core.model import Profile
from rapport.core.profiles import merge_profiles, new_profile
from tests.unit.computed_traits.helpers import T0, WS, step, track
from tests.unit.computed_traits.test_recomputation import (
    BUILT,
    STEPS,
    Arrival,
    event_of,
    expected,
)

_DECODE = msgspec.json.Decoder(Profile).decode
_ENCODE = msgspec.json.Encoder().encode


@settings(max_examples=200, deadline=None)
@given(STEPS, st.lists(st.booleans(), min_size=30, max_size=30), st.integers(0, 120))
def test_merged_traits_equal_one_profile_fed_both_streams(
    steps: list[tuple[int, int, str, Any]], sides: list[bool], later: int
) -> None:
    now = T0
    phone = new_profile("phone", WS, T0 - timedelta(days=1))
    laptop = new_profile("laptop", WS, T0 - timedelta(days=1))
    arrivals: list[Arrival] = []
    for seq, (advance, offset, kind, value) in enumerate(steps):
        now += timedelta(minutes=advance)
        # Distinct event times: which of two events at the same microsecond on
        # two devices came "last" is not something a merge can know.
        at = now + timedelta(minutes=offset, microseconds=seq)
        arrival = Arrival(seq, now, at, kind, value)
        arrivals.append(arrival)
        if sides[seq]:
            phone = _DECODE(_ENCODE(step(BUILT, phone, event_of(arrival), now)))
        else:
            laptop = _DECODE(_ENCODE(step(BUILT, laptop, event_of(arrival), now)))
    now += timedelta(minutes=later)
    merged = merge_computed_traits(BUILT, merge_profiles(phone, laptop, now), laptop, now)
    merged = _DECODE(_ENCODE(merged))
    wanted = expected(arrivals, now)
    got = {name: None if (t := merged.traits.get(name)) is None else t.value for name in wanted}
    assert got == wanted


def test_lifetime_revenue_of_two_devices_adds_up() -> None:
    from tests.unit.computed_traits.helpers import catalog

    built = catalog(
        revenue=(
            "aggregate",
            {"event": "Order Completed", "aggregate": "sum", "of": "properties.revenue"},
        )
    )
    phone = new_profile("phone", WS, T0)
    laptop = new_profile("laptop", WS, T0)
    phone = step(built, phone, track(1, "Order Completed", T0, revenue=40), T0)
    laptop = step(built, laptop, track(2, "Order Completed", T0, revenue=2), T0)
    now = T0 + timedelta(hours=1)
    merged = merge_computed_traits(built, merge_profiles(phone, laptop, now), laptop, now)
    assert merged.traits["revenue"].value == 42
    assert merged.traits["revenue"].source == "rapport:computed"
