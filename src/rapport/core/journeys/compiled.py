"""A journey version made ready to run: conditions compiled once, event filters built once.

The runtime compiles each running version when it loads it (and again only
when ``journeys_revision()`` moves) and hands the engine the list.
Conditions are addressed by their JSON path in the definition
(``$.steps.check.branch[0].when``), which is what an instance's trace
names when it says why a branch was taken.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rapport.core.conditions import (
    AggregateSpec,
    CompiledCondition,
    EvaluationContext,
    compile_condition,
)
from rapport.core.conditions.comparisons import compile_comparison
from rapport.core.conditions.fields import event_field, key_text
from rapport.core.journeys.model import (
    BranchStep,
    Journey,
    Step,
)
from rapport.core.model import Event

EventTest = Callable[[Event], bool]


@dataclass(frozen=True, slots=True)
class PathCondition:
    """A compiled condition with the JSON path it was written at."""

    path: str
    compiled: CompiledCondition

    def holds(self, context: EvaluationContext) -> bool:
        return self.compiled.evaluate(context)


@dataclass(frozen=True, slots=True)
class CompiledJourney:
    """One version of a journey, compiled.

    ``entry``: this version takes new entries (the newest published one).
    ``status``: its lifecycle status (``published``, ``paused`` or
    ``archived``); instances of an archived version exit at their next
    event or timer.
    """

    journey: Journey
    version: int
    entry: bool = True
    status: str = "published"
    conditions: dict[str, PathCondition] = field(default_factory=dict)
    filters: dict[str, EventTest] = field(default_factory=dict)
    """JSON path of a ``where`` -> the compiled filter."""

    @property
    def id(self) -> str:
        return self.journey.id

    def step(self, step_id: str) -> Step:
        return self.journey.steps[step_id]

    @property
    def aggregates(self) -> dict[str, AggregateSpec]:
        """The event aggregates its conditions read, by id (the runtime maintains them)."""
        found: dict[str, AggregateSpec] = {}
        for condition in self.conditions.values():
            found.update(condition.compiled.aggregates)
        return found

    def condition(self, path: str) -> PathCondition | None:
        return self.conditions.get(path)

    def passes(self, path: str, event: Event) -> bool:
        test = self.filters.get(path)
        return True if test is None else test(event)


def compile_journey(
    journey: Journey, version: int, *, entry: bool = True, status: str = "published"
) -> CompiledJourney:
    """Compile every condition and event filter of ``journey`` (already validated)."""
    conditions: dict[str, PathCondition] = {}
    filters: dict[str, EventTest] = {}

    def condition(path: str, tree: Any) -> None:
        if tree is not None:
            conditions[path] = PathCondition(path, compile_condition(tree))

    def where(path: str, filters_tree: Sequence[Any]) -> None:
        if filters_tree:
            filters[path] = event_filter(filters_tree)

    for index, trigger in enumerate(journey.triggers):
        condition(f"$.triggers[{index}].condition", trigger.condition)
        if hasattr(trigger, "where"):
            where(f"$.triggers[{index}].where", trigger.where)
    for index, criterion in enumerate(journey.exit_when):
        if hasattr(criterion, "where"):
            where(f"$.exit_when[{index}].where", criterion.where)
        else:
            condition(f"$.exit_when[{index}].condition", criterion.condition)
    for index, goal in enumerate(journey.goals):
        condition(f"$.goals[{index}].condition", goal.condition)
        where(f"$.goals[{index}].where", goal.where)
    if journey.hold is not None:
        condition("$.hold.while", journey.hold.condition)
    for step_id, step in journey.steps.items():
        if isinstance(step, BranchStep):
            for index, case in enumerate(step.cases):
                condition(f"$.steps.{step_id}.branch[{index}].when", case.when)
        elif hasattr(step, "where"):
            where(f"$.steps.{step_id}.wait.where", step.where)
    return CompiledJourney(
        journey=journey,
        version=version,
        entry=entry,
        status=status,
        conditions=conditions,
        filters=filters,
    )


def event_filter(where: Sequence[Any]) -> EventTest:
    """A ``where`` list (field filters, as in an event aggregate) as one test."""
    tests: list[tuple[Callable[[Event], Any], Callable[[Any], bool]]] = []
    for node in where:
        test = compile_comparison(node["op"], node.get("value")).test
        if test is None:
            raise ValueError("event filters compare against fixed values only")
        tests.append((event_field(node["field"]), test))

    def passes(event: Event) -> bool:
        return all(test(read(event)) for read, test in tests)

    return passes


def field_key(event: Event, path: str) -> str | None:
    """The value at an event field as a key (text), or None when it holds none."""
    return key_text(event_field(path)(event))
