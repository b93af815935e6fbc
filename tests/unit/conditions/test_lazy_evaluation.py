"""Aggregates are read only when a condition asks, cheap leaves first, one context per event."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rapport.core.conditions import (
    AggregateReading,
    ProfileContext,
    SnapshotContext,
    compile_condition,
)
from rapport.core.conditions.aggregates import EMPTY_READING, AggregateState, Aggregator
from rapport.core.conditions.compile import aggregate_spec
from rapport.core.model import Event, Membership, Profile, TraitValue
from rapport.core.segments import (
    MembershipChange,
    SegmentCatalog,
    SegmentDefinition,
    update_memberships,
)
from tests.unit.segment_helpers import active_segment

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GOLD = {"trait": "plan", "op": "equals", "value": "gold"}
VIEWED = {"event": "Product Viewed", "window": "1h", "op": "gte", "value": 1}
VIEWED_TWICE_IN_2H = {"event": "Product Viewed", "window": "2h", "op": "gte", "value": 2}
VIEWS_1H = aggregate_spec(VIEWED).id
VIEWS_2H = aggregate_spec(VIEWED_TWICE_IN_2H).id


def gold_profile(plan: str = "gold", segments: dict[str, Membership] | None = None) -> Profile:
    return Profile(
        id="p1",
        workspace_id="ws",
        created_at=NOW,
        updated_at=NOW,
        traits={"plan": TraitValue(value=plan, source="s", observed_at=NOW, received_at=NOW)},
        segments=segments or {},
    )


class RecordingReader:
    """An aggregate source that remembers which aggregates were asked for."""

    def __init__(self, readings: dict[str, AggregateReading]) -> None:
        self.readings = readings
        self.asked: list[str] = []

    def __call__(self, aggregate_id: str) -> AggregateReading:
        self.asked.append(aggregate_id)
        return self.readings.get(aggregate_id, EMPTY_READING)


def test_a_failing_trait_skips_the_aggregate_written_before_it() -> None:
    condition = compile_condition({"all": [VIEWED, GOLD]})
    reader = RecordingReader({VIEWS_1H: AggregateReading({"": 3})})
    silver = ProfileContext(gold_profile("silver"), NOW, read_aggregate=reader)
    assert not condition.evaluate(silver)
    assert reader.asked == []
    assert condition.evaluate(ProfileContext(gold_profile(), NOW, read_aggregate=reader))
    assert reader.asked == [VIEWS_1H]


def test_a_holding_membership_decides_any_without_reading_aggregates() -> None:
    condition = compile_condition({"any": [VIEWED, {"in_segment": "vip"}]})
    reader = RecordingReader({})
    context = ProfileContext(gold_profile(), NOW, segments={"vip"}, read_aggregate=reader)
    assert condition.evaluate(context)
    assert reader.asked == []
    context.segments = set()
    assert not condition.evaluate(context), "the context reads the segments it holds now"
    assert reader.asked == [VIEWS_1H]


def test_ready_readings_and_a_reader_are_exclusive() -> None:
    with pytest.raises(ValueError, match="either"):
        ProfileContext(gold_profile(), NOW, aggregates={}, read_aggregate=RecordingReader({}))


LEAVES: list[dict[str, Any]] = [
    GOLD,
    VIEWED,
    {"in_segment": "vip"},
    {"not": {"consent": "email", "granted": True}},
    {"trait": "seen", "op": "within", "value": {"last": "1d"}},
]


@pytest.mark.parametrize("combinator", ["all", "any"])
def test_reordering_children_changes_no_result(combinator: str) -> None:
    contexts = [
        SnapshotContext(
            now=NOW,
            traits={"plan": plan, "seen": (NOW - timedelta(hours=hours)).isoformat()},
            consents=consents,
            segments=segments,
            aggregates={VIEWS_1H: AggregateReading({"": views})},
        )
        for plan, hours, consents, segments, views in itertools.product(
            ("gold", "free"), (2, 48), ({}, {"email": True}), ((), ("vip",)), (0, 1)
        )
    ]
    for children in itertools.permutations(LEAVES, 3):
        written = list(children)
        condition = compile_condition({combinator: written})
        for context in contexts:
            values = [compile_condition(child).evaluate(context) for child in written]
            expected = all(values) if combinator == "all" else any(values)
            assert condition.evaluate(context) is expected


def definition(segment_id: str, condition: Any) -> SegmentDefinition:
    return active_segment(segment_id, condition, NOW)


def test_one_event_reads_each_aggregate_once_and_only_if_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read = Aggregator.read_micros
    reads: list[str] = []

    def counting_read(self: Aggregator, state: AggregateState, now: int) -> AggregateReading:
        reads.append(self.spec.id)
        return read(self, state, now)

    monkeypatch.setattr(Aggregator, "read_micros", counting_read)
    catalog = SegmentCatalog(
        [
            definition("gold", GOLD),
            definition("gold-viewer", {"all": [VIEWED, {"in_segment": "gold"}]}),
            definition(
                "silver-viewer",
                {"all": [VIEWED_TWICE_IN_2H, {"trait": "plan", "op": "equals", "value": "silver"}]},
            ),
            # Reads a membership entered by the same event: sees it through the shared context.
            definition("loyal-viewer", {"all": [{"in_segment": "gold-viewer"}, VIEWED]}),
        ]
    )
    profile = gold_profile(segments={"gold": Membership(version=1, entered_at=NOW)})
    view = Event(
        workspace_id="ws",
        message_id="m1",
        type="track",
        event="Product Viewed",
        timestamp=NOW,
        received_at=NOW,
        source="test",
        user_id="u",
    )
    after, changes = update_memberships(catalog, profile, profile, view, NOW)
    assert changes == [
        MembershipChange("gold-viewer", 1, True),
        MembershipChange("loyal-viewer", 1, True),
    ]
    assert set(after.segments) == {"gold", "gold-viewer", "loyal-viewer"}
    assert set(after.aggregates) == {VIEWS_1H, VIEWS_2H}, "both aggregates count the view"
    assert reads == [VIEWS_1H], "the 2h window is read by no segment that got that far"
