"""S2 at the core: "viewed the same product 3 times within 1 hour".

A tiny driver plays the runtime's part: it feeds events to the aggregate,
re-evaluates the condition after each one, and sets a timer at the instant
the compiled condition reports as its next possible change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rapport.core.conditions import (
    Aggregator,
    CompiledCondition,
    SnapshotContext,
    compile_condition,
)
from rapport.core.conditions.aggregates import AggregateState

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)

S2 = {
    "event": "Product Viewed",
    "key": "properties.product_id",
    "window": "1h",
    "op": "gte",
    "value": 3,
}


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


class Driver:
    """Events and timers for one profile, recording membership transitions."""

    def __init__(self, condition: CompiledCondition) -> None:
        self.condition = condition
        ((self.aggregate_id, spec),) = condition.aggregates.items()
        self.aggregator = Aggregator(spec)
        self.state: AggregateState = self.aggregator.empty()
        self.member = False
        self.timer: datetime | None = None
        self.transitions: list[tuple[datetime, str]] = []

    def context(self, now: datetime) -> SnapshotContext:
        reading = self.aggregator.read(self.state, now)
        return SnapshotContext(now=now, aggregates={self.aggregate_id: reading})

    def evaluate(self, now: datetime) -> None:
        self.state = self.aggregator.expire(self.state, now)
        context = self.context(now)
        member = self.condition.evaluate(context)
        if member != self.member:
            self.transitions.append((now, "entered" if member else "exited"))
            self.member = member
        self.timer = self.condition.next_change(context)
        assert self.timer is None or self.timer > now

    def run_until(self, until: datetime) -> None:
        while self.timer is not None and self.timer <= until:
            self.evaluate(self.timer)

    def view(self, at: datetime, product: str) -> None:
        self.run_until(at)
        self.state = self.aggregator.add(self.state, at, None, product, at)
        self.evaluate(at)


def test_enters_on_the_third_view_and_exits_when_the_first_is_an_hour_old() -> None:
    driver = Driver(compile_condition(S2))
    driver.view(minutes(0), "jacket")
    driver.view(minutes(5), "scarf")
    driver.view(minutes(10), "jacket")
    assert driver.transitions == []  # the second view of the jacket is not enough
    driver.view(minutes(20), "jacket")
    assert driver.transitions == [(minutes(20), "entered")]
    assert driver.timer == minutes(60)  # when the first jacket view turns one hour old

    assert driver.condition.evaluate(driver.context(minutes(60) - TICK))
    assert not driver.condition.evaluate(driver.context(minutes(60)))

    driver.run_until(minutes(200))
    assert driver.transitions == [(minutes(20), "entered"), (minutes(60), "exited")]
    assert driver.timer is None  # every view aged out: nothing left to change by time


def test_a_fourth_view_moves_the_exit_to_when_the_second_is_an_hour_old() -> None:
    driver = Driver(compile_condition(S2))
    for at in (0, 10, 20, 30):
        driver.view(minutes(at), "jacket")
    driver.run_until(minutes(300))
    assert driver.transitions == [(minutes(20), "entered"), (minutes(70), "exited")]


def test_three_views_of_different_products_do_not_count() -> None:
    driver = Driver(compile_condition(S2))
    for at, product in ((0, "jacket"), (1, "coat"), (2, "jacket"), (3, "coat"), (4, "hat")):
        driver.view(minutes(at), product)
    driver.run_until(minutes(300))
    assert driver.transitions == []


def test_views_more_than_an_hour_apart_do_not_count() -> None:
    driver = Driver(compile_condition(S2))
    for at in (0, 40, 80, 120):  # at most two of them inside any hour
        driver.view(minutes(at), "jacket")
    driver.run_until(minutes(300))
    assert driver.transitions == []


def test_a_late_view_inside_the_hour_counts_and_exit_follows_event_time() -> None:
    driver = Driver(compile_condition(S2))
    driver.view(minutes(30), "jacket")
    driver.view(minutes(40), "jacket")
    # Sent at minute 45 but it happened at minute 15 (an offline device).
    driver.run_until(minutes(45))
    driver.state = driver.aggregator.add(driver.state, minutes(15), None, "jacket", minutes(45))
    driver.evaluate(minutes(45))
    driver.run_until(minutes(300))
    assert driver.transitions == [(minutes(45), "entered"), (minutes(75), "exited")]


def test_the_condition_declares_what_it_depends_on() -> None:
    condition = compile_condition(S2)
    assert condition.events == {"Product Viewed"}
    assert condition.time_dependent
    assert condition.traits == frozenset() and condition.segments == frozenset()
    ((_, spec),) = condition.aggregates.items()
    assert (spec.event, spec.aggregate, spec.key, spec.window_us) == (
        "Product Viewed",
        "count",
        "properties.product_id",
        3_600_000_000,
    )
