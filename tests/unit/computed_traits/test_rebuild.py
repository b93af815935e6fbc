"""Property test: a trait rebuilt from the timeline (backfill) equals the streamed one.

A random history (several event names, page calls, reactions from the
channels, internal events, late and out-of-order event times, events
already out of the window, clock jumps) is streamed through
``apply_computed_traits`` one event at a time, as if every definition had
always existed; the clock then moves on and the profile's timer refreshes it
(``refresh_computed_traits``). The same history, read the way the backfill
reads it (``history_request``: only the events a computation counts, only
within its window; all of them for a profile with none there), rebuilds
each computation on a profile that never had the traits
(``rebuild_computed_trait``). Every kind must give the same value, and a
trait absent from one must be absent (or ``None``) in the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.core.computed_traits import (
    ComputedTraitCatalog,
    feeds,
    history_request,
    rebuild_computed_trait,
    refresh_computed_traits,
)
from rapport.core.model import Event, Profile
from rapport.core.profiles import apply_event
from tests.unit.computed_traits.helpers import T0, WS, catalog, profile, step

ENGAGEMENT = {
    "window": "2d",
    "activity": {"events": ["Product Viewed", "Order Completed"]},
    "active_time": {"unit": "10m", "target": "1h"},
    "visit_days": {"target": 2},
    "core_actions": {"events": ["Order Completed", "Review Written"]},
}
BUILT = catalog(
    orders=("aggregate", {"event": "Order Completed"}),
    orders_1h=("aggregate", {"event": "Order Completed", "window": "1h"}),
    revenue_3h=(
        "aggregate",
        {
            "event": "Order Completed",
            "aggregate": "sum",
            "of": "properties.revenue",
            "window": "3h",
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
    views_2h_by_product=(
        "aggregate",
        {"event": "Product Viewed", "window": "2h", "key": "properties.product"},
    ),
    engagement=("engagement_score", ENGAGEMENT),
    active_everywhere=(
        "engagement_score",
        {"window": "1d", "visit_days": {"target": 1}, "weights": {"core_actions": 0}},
    ),
    usual_visit=("usual_time", {"window": "1d", "bucket": "30m"}),
    usual_order=("usual_time", {"window": "12h", "events": ["Order Completed"], "pages": False}),
    reminder_lead=(
        "typical_lead",
        {
            "event": "Email Opened",
            "reference": "properties.appointment_at",
            "window": "1d",
            "keep": 3,
        },
    ),
)

KINDS = ["Order Completed", "Product Viewed", "Review Written", "Other", "page", "Email Opened"]
SOURCES = ["write_key:k", "write_key:k", "write_key:k", "rapport:channels", "rapport:segments"]
VALUES = st.one_of(
    st.integers(-50, 50), st.sampled_from([0.5, 2.5, "a", "b", "7"]), st.none(), st.booleans()
)
STEPS = st.lists(
    st.tuples(
        st.integers(0, 240),  # minutes the clock moves before the event arrives
        st.integers(-3000, 5),  # minutes from now to the event's own time
        st.sampled_from(KINDS),
        st.sampled_from(SOURCES),
        VALUES,
        st.integers(-120, 600),  # minutes from the event to the appointment it is about
    ),
    min_size=1,
    max_size=25,
)


@dataclass(frozen=True)
class Arrival:
    seq: int
    now: datetime
    at: datetime
    kind: str
    source: str
    value: Any
    lead: int


def event_of(arrival: Arrival) -> Event:
    common: dict[str, Any] = {
        "workspace_id": WS,
        "message_id": f"m{arrival.seq}",
        "timestamp": arrival.at,
        "received_at": arrival.now,
        "source": arrival.source,
        "context": {"timezone": "Europe/Paris"} if arrival.seq % 3 == 0 else {},
    }
    if arrival.kind == "page":
        return Event(type="page", name="Home", **common)
    appointment = arrival.at + timedelta(minutes=arrival.lead)
    properties = {
        "revenue": arrival.value,
        "product": arrival.value,
        "appointment_at": appointment.isoformat(),
    }
    return Event(type="track", event=arrival.kind, properties=properties, **common)


_DECODE = msgspec.json.Decoder(Profile).decode
_ENCODE = msgspec.json.Encoder().encode


def timeline_name(event: Event) -> str | None:
    """The name the timeline stores (``ProfileEvent.name``)."""
    return event.event if event.event is not None else event.name


def backfilled(
    built: ComputedTraitCatalog, base: Profile, events: list[Event], now: datetime
) -> Profile:
    """What the backfill writes on ``base``: every computation rebuilt from what it reads."""
    current = base
    for computation in built.computations:
        names, since = history_request(computation, now)
        read = [
            e
            for e in events
            if (names is None or timeline_name(e) in names)
            and (since is None or e.timestamp >= since)
        ]
        if since is not None and not any(feeds(built, computation, e) for e in read):
            # ``Backfiller`` asks once more, without the window, for a profile
            # it found nothing for (and that holds neither state nor value).
            read = [e for e in events if names is None or timeline_name(e) in names]
        current = rebuild_computed_trait(built, computation, current, read, now)
        current = _DECODE(_ENCODE(current))
    return current


def trait_values(current: Profile) -> dict[str, Any]:
    return {
        name: None if (trait := current.traits.get(name)) is None else trait.value
        for name in BUILT.by_trait
    }


@settings(max_examples=300, deadline=None)
@given(STEPS, st.integers(0, 3000))
def test_a_rebuilt_trait_equals_the_streamed_one(
    steps: list[tuple[int, int, str, str, Any, int]], later: int
) -> None:
    now = T0
    streamed = profile()
    bare = profile()
    events: list[Event] = []
    for seq, (advance, offset, kind, source, value, lead) in enumerate(steps):
        now += timedelta(minutes=advance)
        arrival = Arrival(seq, now, now + timedelta(minutes=offset), kind, source, value, lead)
        event = event_of(arrival)
        events.append(event)
        streamed = _DECODE(_ENCODE(step(BUILT, streamed, event, now)))
        bare = apply_event(bare, event, now)
    # The definitions are written later; the timer has kept the streamed profile current.
    now += timedelta(minutes=later)
    streamed = refresh_computed_traits(BUILT, streamed, now)
    rebuilt = backfilled(BUILT, bare, events, now)
    assert trait_values(rebuilt) == trait_values(streamed)
    for name, trait in rebuilt.traits.items():
        if name in BUILT.by_trait:
            assert trait.source == "rapport:computed"
    # Walking again (a page replayed after a crash) changes nothing.
    assert backfilled(BUILT, rebuilt, events, now) == rebuilt
    # The timer the rebuilt profile needs is the streamed one's.
    assert BUILT.next_change(rebuilt, now) == BUILT.next_change(streamed, now)
