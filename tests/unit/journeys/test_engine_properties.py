"""Properties of the journey engine over arbitrary event and time sequences."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.journeys.engine_harness import Harness, compile_doc

JOURNEY = compile_doc(
    {
        "id": "orders",
        "name": "Orders",
        "triggers": [{"event": "Order Shipped"}],
        "correlation_key": "properties.order_id",
        "reentry": "always",
        "exit_when": [{"event": "Order Cancelled", "correlate": "properties.order_id"}],
        "goals": [{"name": "reviewed", "event": "Review Written", "within": "3d"}],
        "hold": {
            "while": {"trait": "open_tickets", "op": "gt", "value": 0},
            "max_age": "6h",
            "messages": "promotional",
        },
        "start": "delivered",
        "steps": {
            "delivered": {
                "wait": {
                    "event": "Order Delivered",
                    "correlate": "properties.order_id",
                    "timeout": "1d",
                    "on_timeout": "late",
                },
                "next": "ask",
            },
            "ask": {
                "message": {
                    "channel": "email",
                    "template": "ask",
                    "topic": "t",
                    "category": "promotional",
                },
                "next": "again",
            },
            "again": {"wait": {"for": "5h"}, "next": "ask-2"},
            "ask-2": {
                "message": {
                    "channel": "email",
                    "template": "ask-2",
                    "topic": "t",
                    "category": "promotional",
                }
            },
            "late": {
                "message": {"channel": "sms", "template": "late", "category": "transactional"}
            },
        },
    }
)

ACTIONS = st.one_of(
    st.tuples(
        st.sampled_from(["Order Shipped", "Order Delivered", "Order Cancelled", "Review Written"]),
        st.sampled_from(["A", "B", 1]),
    ),
    st.tuples(st.just("wait"), st.integers(min_value=1, max_value=30)),
    st.tuples(st.just("ticket"), st.integers(min_value=0, max_value=1)),
)


def run(actions: list[tuple[str, object]]) -> Harness:
    h = Harness(JOURNEY)
    for kind, value in actions:
        if kind == "wait":
            assert isinstance(value, int)
            h.advance(timedelta(hours=value))
        elif kind == "ticket":
            h.set_traits(open_tickets=value)
        else:
            h.track(kind, order_id=value)
        ticket_open = h.profile.traits.get("open_tickets")
        if ticket_open is not None and ticket_open.value:
            # Promotions are held while a ticket is open.
            assert not [s for s in h.outcomes[-1].sends if s.category == "promotional"]
        live = Counter((i.journey_id, i.profile_id, i.correlation_key) for i in h.live())
        assert all(count == 1 for count in live.values()), live
        # Every live instance has exactly one pending timer row, and ended ones none.
        assert set(h.timers) == {f"journey:{i.id}" for i in h.live() if i.timer_at is not None}
    return h


@settings(max_examples=60, deadline=None)
@given(st.lists(ACTIONS, max_size=25))
def test_one_live_instance_per_key_and_replays_are_identical(
    actions: list[tuple[str, object]],
) -> None:
    first = run(actions)
    second = run(actions)
    encode = msgspec.json.encode
    assert [encode(o) for o in first.outcomes] == [encode(o) for o in second.outcomes]
    # A step visit sends at most once: an idempotency key is never produced twice.
    sends = [e for o in first.outcomes for e in o.sends]
    assert len({s.idempotency_key for s in sends}) == len(sends)
