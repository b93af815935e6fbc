"""The reference rules between a journey's steps: what a JSON Schema cannot check.

Steps name each other by id (``next``, ``otherwise``, a case's or a
variant's ``next``, a wait's ``on_timeout`` and ``missed``), so a journey
is a graph. Three rules make it one the runtime can run:

- every target (and ``start``) names a step;
- every step can be reached from ``start`` (an unreachable step is a typo or
  a leftover, never intended);
- every loop waits: following the edges that are taken at once -- all of
  them except a wait's ``next`` and ``on_timeout`` -- never comes back to a
  step. Otherwise one event would make an instance loop forever.

Names must also be unique where they identify something: goal names in a
journey, variant names in a split.

These functions read the raw document and tolerate its structural errors
(reported by the structural checks): a target that is not a string is
simply not an edge.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from rapport.core.conditions.validate import child_path
from rapport.core.journeys.checks import REFERENCE, JourneyError

Edge = tuple[str, str, bool]
"""``(path of the target field, target step id, taken at once)``."""

_LISTED = 8
"""Step ids named in an "unknown step" message, at most."""


def step_edges(step: Any, path: str) -> Iterator[Edge]:
    """The targets a step names; a wait's ``next`` and ``on_timeout`` are not taken at once."""
    if not isinstance(step, dict):
        return
    # In document order: what the step's kind holds, then its own targets.
    for kind in ("branch", "split"):
        items = step.get(kind)
        if isinstance(items, list):
            for index, item in enumerate(items):
                target = item.get("next") if isinstance(item, dict) else None
                if isinstance(target, str):
                    yield (
                        child_path(child_path(child_path(path, kind), index), "next"),
                        target,
                        True,
                    )
    wait = step.get("wait")
    if isinstance(wait, dict):
        for name, at_once in (("on_timeout", False), ("missed", True)):
            target = wait.get(name)
            if isinstance(target, str):
                yield child_path(child_path(path, "wait"), name), target, at_once
    waits = "wait" in step
    for name in ("next", "otherwise"):
        target = step.get(name)
        if isinstance(target, str):
            yield child_path(path, name), target, not (waits and name == "next")


def check_graph(root: dict[str, Any], errors: list[JourneyError]) -> None:
    """Append the reference errors of ``root``'s steps (and of goal names) to ``errors``."""
    _unique_names(root, errors)
    steps = root.get("steps")
    if not isinstance(steps, dict) or not steps:
        return
    ids = [step_id for step_id in steps if isinstance(step_id, str)]
    known = set(ids)
    edges: dict[str, list[tuple[str, bool]]] = {step_id: [] for step_id in ids}
    for step_id in ids:
        for path, target, at_once in step_edges(steps[step_id], child_path("$.steps", step_id)):
            if target in known:
                edges[step_id].append((target, at_once))
            else:
                errors.append(JourneyError(path, _unknown(target, ids), REFERENCE))
    start = root.get("start")
    if isinstance(start, str):
        if start in known:
            _reachable(start, ids, edges, errors)
        else:
            errors.append(JourneyError("$.start", _unknown(start, ids), REFERENCE))
    _loops(ids, edges, errors)


def _unknown(target: str, ids: list[str]) -> str:
    listed = ", ".join(ids[:_LISTED]) + (", ..." if len(ids) > _LISTED else "")
    return f"no step {target!r} in this journey (steps: {listed})"


def _reachable(
    start: str, ids: list[str], edges: dict[str, list[tuple[str, bool]]], errors: list[JourneyError]
) -> None:
    """One error per region of steps ``start`` cannot reach, at the step that leads into it.

    A mistyped target typically strands a whole tail of the journey: naming
    each of its steps would bury the one that matters.
    """
    reached = _closure([start], edges)
    stranded = [step_id for step_id in ids if step_id not in reached]
    targeted = {t for step_id in stranded for t, _ in edges[step_id] if t != step_id}
    # Regions are entered at steps nothing targets; a stranded loop has no
    # such step, so its first step in the document stands for it.
    heads = [step_id for step_id in stranded if step_id not in targeted]
    heads += [step_id for step_id in stranded if step_id in targeted]
    covered: set[str] = set()
    for head in heads:
        if head in covered:
            continue
        region = _closure([head], edges) - reached - covered
        covered |= region
        after = len(region) - 1
        more = f" (nor can the {after} step{'s' if after > 1 else ''} after it)" if after else ""
        errors.append(
            JourneyError(
                child_path("$.steps", head),
                f"step {head!r} cannot be reached from the start step {start!r}{more}",
                REFERENCE,
            )
        )


def _closure(roots: list[str], edges: dict[str, list[tuple[str, bool]]]) -> set[str]:
    seen = set(roots)
    pending = list(roots)
    while pending:
        for target, _ in edges[pending.pop()]:
            if target not in seen:
                seen.add(target)
                pending.append(target)
    return seen


def _loops(
    ids: list[str], edges: dict[str, list[tuple[str, bool]]], errors: list[JourneyError]
) -> None:
    """One error per group of steps that loop through edges taken at once."""
    at_once = {step_id: [t for t, now in edges[step_id] if now] for step_id in ids}
    for component in _strongly_connected(ids, at_once):
        first = component[0]
        if len(component) == 1 and first not in at_once[first]:
            continue
        cycle = _cycle_through(first, set(component), at_once)
        errors.append(
            JourneyError(
                child_path("$.steps", first),
                "steps loop without waiting: "
                + " -> ".join(cycle)
                + " (one event would run this loop forever: put a wait on it)",
                REFERENCE,
            )
        )


def _strongly_connected(ids: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, each in document order, iteratively."""
    order = {step_id: position for position, step_id in enumerate(ids)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in ids:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, next_edge = work.pop()
            if next_edge == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges[node]
            if next_edge < len(targets):
                work.append((node, next_edge + 1))
                target = targets[next_edge]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component, key=order.__getitem__))
    return sorted(components, key=lambda component: order[component[0]])


def _cycle_through(first: str, members: set[str], edges: dict[str, list[str]]) -> list[str]:
    """The shortest loop from ``first`` back to itself inside one component."""
    came_from: dict[str, str] = {}
    queue = deque([first])
    while queue:
        node = queue.popleft()
        for target in edges[node]:
            if target == first:
                path = [node]
                while path[-1] != first:
                    path.append(came_from[path[-1]])
                return [*reversed(path), first]
            if target in members and target not in came_from:
                came_from[target] = node
                queue.append(target)
    return [first, first]  # unreachable for a real component; keeps the message well-formed


def _unique_names(root: dict[str, Any], errors: list[JourneyError]) -> None:
    goals = root.get("goals")
    if isinstance(goals, list):
        _report_twice(
            [
                (f"$.goals[{i}].name", g.get("name"))
                for i, g in enumerate(goals)
                if isinstance(g, dict)
            ],
            "goal",
            errors,
        )
    steps = root.get("steps")
    if isinstance(steps, dict):
        for step_id, step in steps.items():
            variants = step.get("split") if isinstance(step, dict) else None
            if isinstance(variants, list):
                split_path = child_path(child_path("$.steps", step_id), "split")
                _report_twice(
                    [
                        (child_path(child_path(split_path, i), "name"), v.get("name"))
                        for i, v in enumerate(variants)
                        if isinstance(v, dict)
                    ],
                    "variant",
                    errors,
                )


def _report_twice(names: list[tuple[str, Any]], what: str, errors: list[JourneyError]) -> None:
    seen: set[str] = set()
    for path, name in names:
        if isinstance(name, str):
            if name in seen:
                errors.append(JourneyError(path, f"{what} name {name!r} is used twice", REFERENCE))
            seen.add(name)
