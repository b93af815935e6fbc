"""Which aggregates an event may feed, found without testing every one of them.

A workspace often has many aggregates over the same event that differ by a
text filter: views of shoes, views of bags, views of coats. Testing each
one's filters for every view costs a call per aggregate. ``EventDispatch``
groups those aggregates by the field of their first ``equals`` filter
against a text, reads that field once per event and looks its value up:
only the aggregates whose text it is remain candidates. Candidates are still
tested in full (``Aggregator.matches``): the lookup only leaves out
aggregates whose ``equals`` filter cannot hold, since text equals text only
when both are the same string (``comparisons``: strings compare exactly,
and no other kind of value equals a text).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rapport.core.conditions.aggregates import Aggregator
from rapport.core.conditions.fields import event_field
from rapport.core.model import Event

Counting = tuple[str, Aggregator]
"""``(aggregate id, aggregator)``."""


class EventDispatch:
    """The aggregates over one event name, grouped by a text they require."""

    __slots__ = ("_by_field", "_open", "all")

    def __init__(self, aggregators: Sequence[Counting]) -> None:
        self.all: tuple[Counting, ...] = tuple(aggregators)
        """Every aggregate over the event name, in the order given."""
        opened: list[Counting] = []
        grouped: dict[str, dict[str, list[Counting]]] = {}
        for counting in aggregators:
            path, text = _required_text(counting[1])
            if path is None:
                opened.append(counting)
            else:
                grouped.setdefault(path, {}).setdefault(text, []).append(counting)
        self._open = tuple(opened)
        self._by_field: tuple[tuple[Callable[[Event], Any], dict[str, tuple[Counting, ...]]], ...]
        self._by_field = tuple(
            (event_field(path), {text: tuple(group) for text, group in by_text.items()})
            for path, by_text in sorted(grouped.items())
        )

    def candidates(self, event: Event) -> Sequence[Counting]:
        """The aggregates ``event`` may match (a superset of those it matches)."""
        if not self._by_field:
            return self._open
        found = list(self._open)
        for read, by_text in self._by_field:
            value = read(event)
            if isinstance(value, str):
                group = by_text.get(value)
                if group is not None:
                    found.extend(group)
        return found


def _required_text(aggregator: Aggregator) -> tuple[str | None, str]:
    """The field and text of the aggregate's first ``equals`` filter against a text, if any."""
    for condition in aggregator.spec.where:
        value = condition.get("value")
        if condition.get("op") == "equals" and type(value) is str:
            return condition["field"], value
    return None, ""
