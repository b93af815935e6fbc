"""Instance ids: the same event, the same ids; later arrivals sort after earlier ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rapport.runtime.journey_effects import EventIds

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_the_same_event_decides_the_same_ids() -> None:
    first, again = EventIds("ws:m-1", T0), EventIds("ws:m-1", T0)
    ids = [first.new_id("jrn") for _ in range(3)]
    assert ids == [again.new_id("jrn") for _ in range(3)]
    assert len(set(ids)) == 3
    assert EventIds("ws:m-2", T0).new_id("jrn") not in ids


def test_ids_follow_the_arrival_instant_so_instances_that_entered_together_sit_together() -> None:
    ids = [EventIds(f"ws:m-{n}", T0 + timedelta(milliseconds=n)).new_id("jrn") for n in range(50)]
    assert ids == sorted(ids)
    assert all(i.startswith("jrn_") and len(i) == len("jrn_") + 11 + 16 for i in ids)
