"""Property test: computed traits maintained event by event equal a recomputation.

Random streams of customer events (several names, page calls, late and
out-of-order event times, events already out of the window, clock jumps,
values of several JSON types, keys) go through ``apply_computed_traits`` one
at a time, as the processor feeds them. After every event, every computed
trait on the profile must equal its value recomputed from scratch from the
events received so far, at that instant -- including windowed traits the
event did not feed, whose older events aged out meanwhile. The profile's
encoded states also go through a JSON round trip, as storage would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.core.conditions.fields import key_text
from rapport.core.conditions.instants import to_micros
from rapport.core.model import Event, Profile
from tests.unit.computed_traits.helpers import T0, WS, catalog, profile, step

HOUR = timedelta(hours=1)
ENGAGEMENT = {
    "window": "2d",
    "activity": {"events": ["Product Viewed", "Order Completed"]},
    "active_time": {"unit": "10m", "target": "1h"},
    "visit_days": {"target": 2},
    "core_actions": {"events": ["Order Completed", "Review Written"]},
    "weights": {"active_time": 1, "visit_days": 2, "core_actions": 1.5},
}
BUILT = catalog(
    orders=("aggregate", {"event": "Order Completed"}),
    orders_1h=("aggregate", {"event": "Order Completed", "window": "1h"}),
    revenue_1h=(
        "aggregate",
        {
            "event": "Order Completed",
            "aggregate": "sum",
            "of": "properties.revenue",
            "window": "1h",
        },
    ),
    max_revenue=(
        "aggregate",
        {"event": "Order Completed", "aggregate": "max", "of": "properties.revenue"},
    ),
    last_product_1h=(
        "aggregate",
        {
            "event": "Product Viewed",
            "aggregate": "last",
            "of": "properties.product",
            "window": "1h",
        },
    ),
    views_1h_by_product=(
        "aggregate",
        {"event": "Product Viewed", "window": "1h", "key": "properties.product"},
    ),
    categories_1h=(
        "aggregate",
        {
            "event": "Product Viewed",
            "aggregate": "distinct_count",
            "of": "properties.category",
            "window": "1h",
        },
    ),
    engagement=("engagement_score", ENGAGEMENT),
)

VALUES = st.one_of(
    st.integers(-1000, 1000),
    st.sampled_from([0.1, 0.2, 0.3, 1e16, -1e16, 2.5]),
    st.sampled_from(["a", "7", ""]),
    st.none(),
    st.booleans(),
)


@dataclass(frozen=True)
class Arrival:
    seq: int
    now: datetime
    at: datetime
    kind: str
    """``page`` or a track event name."""
    value: Any


STEPS = st.lists(
    st.tuples(
        st.integers(0, 180),  # minutes the clock moves before the event arrives
        st.integers(-3000, 5),  # minutes from now to the event's own time
        st.sampled_from(["Order Completed", "Product Viewed", "Review Written", "Other", "page"]),
        VALUES,
    ),
    min_size=1,
    max_size=30,
)


def event_of(arrival: Arrival) -> Event:
    common: dict[str, Any] = {
        "workspace_id": WS,
        "message_id": f"m{arrival.seq}",
        "timestamp": arrival.at,
        "received_at": arrival.now,
        "source": "write_key:k",
    }
    if arrival.kind == "page":
        return Event(type="page", name="Home", **common)
    properties = {"revenue": arrival.value, "product": arrival.value, "category": arrival.value}
    return Event(type="track", event=arrival.kind, properties=properties, **common)


def live(
    arrivals: list[Arrival], kinds: tuple[str, ...], window: timedelta | None, now: datetime
) -> list[Arrival]:
    """The events of ``kinds`` that count at ``now``.

    Those that were in the window when they arrived and still are at ``now``.
    """
    matching = [a for a in arrivals if a.kind in kinds]
    if window is None:
        return matching
    return [a for a in matching if a.at > a.now - window and a.at > now - window]


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def expected(arrivals: list[Arrival], now: datetime) -> dict[str, Any]:
    """Every computed trait's value at ``now``, from scratch; ``None`` if never fed."""
    orders = live(arrivals, ("Order Completed",), None, now)
    orders_1h = live(arrivals, ("Order Completed",), HOUR, now)
    views_1h = live(arrivals, ("Product Viewed",), HOUR, now)
    revenue = [a.value for a in orders_1h if is_number(a.value)]
    numbers = [a.value for a in orders if is_number(a.value)]
    products = sorted((a.at, a.seq, a.value) for a in views_1h if a.value is not None)
    keyed: dict[str, int] = {}
    for a in views_1h:
        key = key_text(a.value)
        if key is not None:
            keyed[key] = keyed.get(key, 0) + 1
    values: dict[str, Any] = {
        "orders": len(orders),
        "orders_1h": len(orders_1h),
        "revenue_1h": math.fsum(revenue)
        if any(type(v) is float for v in revenue)
        else sum(revenue),
        "max_revenue": max(numbers) if numbers else None,
        "last_product_1h": products[-1][2] if products else None,
        "views_1h_by_product": dict(sorted(keyed.items())),
        "categories_1h": len(
            {key_text(a.value) for a in views_1h if key_text(a.value) is not None}
        ),
        "engagement": engagement(arrivals, now),
    }
    fed = {a.kind for a in arrivals}
    if "Order Completed" not in fed:
        for name in ("orders", "orders_1h", "revenue_1h", "max_revenue"):
            values[name] = None
    if "Product Viewed" not in fed:
        for name in ("last_product_1h", "views_1h_by_product", "categories_1h"):
            values[name] = None
    if not fed & {"Order Completed", "Product Viewed", "Review Written", "page"}:
        values["engagement"] = None
    return values


def engagement(arrivals: list[Arrival], now: datetime) -> int:
    window = timedelta(days=2)
    activity = live(arrivals, ("Product Viewed", "Order Completed", "page"), window, now)
    actions = live(arrivals, ("Order Completed", "Review Written"), window, now)
    units = len({to_micros(a.at) // 600_000_000 for a in activity})
    days = len({to_micros(a.at) // 86_400_000_000 for a in activity})
    active = min(units * 10, 60) / 60
    visit = min(days, 2) / 2
    done = len({a.kind for a in actions}) / 2
    mixed = (1 * active + 2 * visit + 1.5 * done) / 4.5
    return math.floor(100 * mixed + 0.5)


_DECODE = msgspec.json.Decoder(Profile).decode
_ENCODE = msgspec.json.Encoder().encode


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_incremental_traits_equal_a_recomputation(steps: list[tuple[int, int, str, Any]]) -> None:
    now = T0
    current = profile()
    arrivals: list[Arrival] = []
    for seq, (advance, offset, kind, value) in enumerate(steps):
        now += timedelta(minutes=advance)
        arrival = Arrival(seq, now, now + timedelta(minutes=offset), kind, value)
        arrivals.append(arrival)
        current = _DECODE(_ENCODE(step(BUILT, current, event_of(arrival), now)))
        wanted = expected(arrivals, now)
        assert set(current.traits) <= set(wanted)
        computed = {name: current.traits.get(name) for name in wanted}
        got = {name: None if trait is None else trait.value for name, trait in computed.items()}
        assert got == wanted, (seq, arrival)
        assert all(trait.source == "rapport:computed" for trait in current.traits.values())
