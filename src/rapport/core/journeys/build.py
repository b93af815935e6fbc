"""From a journey document to its typed reading (``model.Journey``), and what it refers to.

``parse_journey`` validates first (``InvalidJourney`` lists every error), so
the conversions below can trust the shapes they read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from typing import Any

from rapport.core.conditions import compile_condition
from rapport.core.conditions.instants import parse_duration
from rapport.core.journeys.model import (
    BranchCase,
    BranchStep,
    BusinessEventTrigger,
    DateTrigger,
    EventFanOut,
    EventTrigger,
    ExitCriterion,
    ExitOnCondition,
    ExitOnEvent,
    ExitStep,
    FanOut,
    Goal,
    GoalStep,
    Hold,
    IdentifierFanOut,
    Journey,
    MessageStep,
    OffsetTrait,
    Reentry,
    Schedule,
    ScheduleTrigger,
    SegmentFanOut,
    SegmentTrigger,
    SplitStep,
    Step,
    TimeZoneRule,
    Trigger,
    UpdateStep,
    Variant,
    WaitForEventStep,
    WaitForStep,
    WaitUntilDateStep,
    WaitUntilTimeStep,
    WebhookStep,
)
from rapport.core.journeys.schema import WEEKDAYS
from rapport.core.journeys.validate import check_journey
from rapport.core.journeys.validate_steps import is_trait_reference

__all__ = ["assign_variant", "conditions_of", "parse_journey", "referenced_segments"]


def parse_journey(document: Any) -> Journey:
    """The typed journey; raises ``InvalidJourney`` if ``document`` has any error."""
    check_journey(document)
    reentry = document.get("reentry", "never")
    return Journey(
        id=document["id"],
        name=document["name"],
        description=document.get("description", ""),
        priority=int(document.get("priority", 50)),
        triggers=tuple(_trigger(t) for t in document["triggers"]),
        correlation_key=document.get("correlation_key"),
        reentry=(
            Reentry(mode=reentry)
            if isinstance(reentry, str)
            else Reentry(mode="after", cooldown=_duration(reentry["after"]))
        ),
        time_zone=TimeZoneRule(**document.get("time_zone", {})),
        exit_when=tuple(_exit(c) for c in document.get("exit_when", ())),
        goals=tuple(_goal(g) for g in document.get("goals", ())),
        hold=_hold(document["hold"]) if "hold" in document else None,
        start=document["start"],
        steps={step_id: _step(step_id, step) for step_id, step in document["steps"].items()},
    )


def assign_variant(step: SplitStep, journey_id: str, profile_id: str) -> Variant:
    """The variant a customer gets at a split: the same every time, for every version.

    The first 8 bytes of SHA-256 of ``journey id / step id / profile id``
    (as a big-endian integer) modulo the total weight pick a bucket;
    variants own consecutive buckets in their order. The assignment stays
    as long as the journey id, step id and weights do.
    """
    digest = hashlib.sha256(f"{journey_id}/{step.id}/{profile_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % sum(v.weight for v in step.variants)
    for variant in step.variants:
        if bucket < variant.weight:
            return variant
        bucket -= variant.weight
    raise AssertionError("weights are positive")  # pragma: no cover


def conditions_of(journey: Journey) -> Iterator[Any]:
    """Every profile condition the journey holds (triggers, exits, goals, hold, branches)."""
    for trigger in journey.triggers:
        if trigger.condition is not None:
            yield trigger.condition
    for criterion in journey.exit_when:
        if isinstance(criterion, ExitOnCondition):
            yield criterion.condition
    for goal in journey.goals:
        if goal.condition is not None:
            yield goal.condition
    if journey.hold is not None:
        yield journey.hold.condition
    for step in journey.steps.values():
        if isinstance(step, BranchStep):
            for case in step.cases:
                yield case.when


def referenced_segments(journey: Journey) -> frozenset[str]:
    """Segment ids the journey reads: triggers, audiences and ``in_segment`` in conditions."""
    found: set[str] = set()
    for trigger in journey.triggers:
        if isinstance(trigger, SegmentTrigger | ScheduleTrigger):
            found.add(trigger.segment)
        elif isinstance(trigger, BusinessEventTrigger) and isinstance(trigger.to, SegmentFanOut):
            found.add(trigger.to.segment)
    for condition in conditions_of(journey):
        found.update(compile_condition(condition).segments)
    return frozenset(found)


# -- conversions -------------------------------------------------------------------


def _duration(text: str) -> timedelta:
    return timedelta(microseconds=parse_duration(text))


def _time(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _optional_time(node: dict[str, Any], name: str) -> time | None:
    return _time(node[name]) if name in node else None


def _offset(node: dict[str, Any]) -> timedelta:
    """The signed offset; for one read from a trait, its signed default."""
    for name, sign in (("before", -1), ("after", 1)):
        if name in node:
            offset = node[name]
            return sign * _duration(offset["default"] if isinstance(offset, dict) else offset)
    return timedelta(0)


def _offset_trait(node: dict[str, Any]) -> OffsetTrait | None:
    for name in ("before", "after"):
        if isinstance(node.get(name), dict):
            return OffsetTrait(trait=node[name]["trait"], before=name == "before")
    return None


def _days(node: dict[str, Any]) -> tuple[int, ...]:
    return tuple(sorted(WEEKDAYS.index(day) for day in node.get("days", ())))


def _where(node: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(node.get("where", ()))


def _trigger(node: dict[str, Any]) -> Trigger:
    condition = node.get("condition")
    if "event" in node:
        return EventTrigger(event=node["event"], where=_where(node), condition=condition)
    if "segment_entered" in node:
        return SegmentTrigger(segment=node["segment_entered"], entered=True, condition=condition)
    if "segment_exited" in node:
        return SegmentTrigger(segment=node["segment_exited"], entered=False, condition=condition)
    if "date" in node:
        return DateTrigger(
            trait=node["date"],
            offset=_offset(node),
            at=_optional_time(node, "at"),
            yearly=node.get("yearly", False),
            condition=condition,
        )
    if "schedule" in node:
        return ScheduleTrigger(
            schedule=_schedule(node["schedule"]),
            segment=node["segment"],
            catch_up=_duration(node["catch_up"]) if "catch_up" in node else None,
            condition=condition,
        )
    return BusinessEventTrigger(
        event=node["business_event"],
        where=_where(node),
        to=_fan_out(node["to"]),
        condition=condition,
    )


def _schedule(node: dict[str, Any]) -> Schedule:
    if "once" in node:
        return Schedule(once=datetime.fromisoformat(node["once"]))
    return Schedule(
        every=node["every"],
        at=_time(node["at"]),
        days=_days(node),
        day=int(node["day"]) if "day" in node else None,
        time_zone=node.get("time_zone"),
        until=datetime.fromisoformat(node["until"]) if "until" in node else None,
    )


def _fan_out(node: dict[str, Any]) -> FanOut:
    if "identifier" in node:
        return IdentifierFanOut(identifier_type=node["identifier"], field=node["from"])
    if "segment" in node:
        return SegmentFanOut(segment=node["segment"])
    return EventFanOut(
        event=node["event"],
        match=tuple(node["match"].items()),
        where=_where(node),
        window=_duration(node["window"]) if "window" in node else None,
    )


def _exit(node: dict[str, Any]) -> ExitCriterion:
    if "condition" in node:
        return ExitOnCondition(condition=node["condition"])
    return ExitOnEvent(event=node["event"], where=_where(node), correlate=node.get("correlate"))


def _goal(node: dict[str, Any]) -> Goal:
    return Goal(
        name=node["name"],
        within=_duration(node["within"]),
        event=node.get("event"),
        where=_where(node),
        correlate=node.get("correlate"),
        condition=node.get("condition"),
        exit=node.get("exit", True),
    )


def _hold(node: dict[str, Any]) -> Hold:
    return Hold(
        condition=node["while"],
        max_age=_duration(node["max_age"]),
        messages=node.get("messages", "all"),
    )


def _step(step_id: str, node: dict[str, Any]) -> Step:
    following = node.get("next")
    if "message" in node:
        message = node["message"]
        channel = message["channel"]
        data = message.get("data", {})
        return MessageStep(
            id=step_id,
            channels=(channel,) if isinstance(channel, str) else tuple(channel),
            template=message["template"],
            category=message["category"],
            topic=message.get("topic"),
            data={k: v for k, v in data.items() if not is_trait_reference(v)},
            data_traits={k: v["trait"] for k, v in data.items() if is_trait_reference(v)},
            next=following,
        )
    if "wait" in node:
        return _wait(step_id, node["wait"], following)
    if "branch" in node:
        return BranchStep(
            id=step_id,
            cases=tuple(BranchCase(when=c["when"], next=c["next"]) for c in node["branch"]),
            otherwise=node["otherwise"],
        )
    if "split" in node:
        return SplitStep(
            id=step_id,
            variants=tuple(
                Variant(
                    name=v["name"],
                    weight=int(v["weight"]),
                    next=v.get("next"),
                    holdout=v.get("holdout", False),
                )
                for v in node["split"]
            ),
        )
    if "update" in node:
        update = node["update"]
        return UpdateStep(
            id=step_id,
            set=update.get("set", {}),
            unset=tuple(update.get("unset", ())),
            increment=update.get("increment", {}),
            add_tags=tuple(update.get("add_tags", ())),
            remove_tags=tuple(update.get("remove_tags", ())),
            next=following,
        )
    if "webhook" in node:
        webhook = node["webhook"]
        return WebhookStep(
            id=step_id,
            url=webhook["url"],
            method=webhook.get("method", "POST"),
            headers=webhook.get("headers", {}),
            body=webhook.get("body"),
            has_body="body" in webhook,
            next=following,
        )
    if "goal" in node:
        return GoalStep(id=step_id, goal=node["goal"], next=following)
    return ExitStep(id=step_id, reason=node["exit"])


def _wait(step_id: str, wait: dict[str, Any], following: str | None) -> Step:
    if "for" in wait:
        return WaitForStep(id=step_id, duration=_duration(wait["for"]), next=following)
    if "until_time" in wait:
        until = wait["until_time"]
        if isinstance(until, str):
            return WaitUntilTimeStep(id=step_id, at=_time(until), days=_days(wait), next=following)
        return WaitUntilTimeStep(
            id=step_id,
            trait=until["trait"],
            default=_time(until["default"]),
            days=_days(wait),
            next=following,
        )
    if "until_date" in wait:
        return WaitUntilDateStep(
            id=step_id,
            trait=wait["until_date"],
            offset=_offset(wait),
            offset_trait=_offset_trait(wait),
            at=_optional_time(wait, "at"),
            yearly=wait.get("yearly", False),
            next=following,
            missed=wait.get("missed"),
        )
    return WaitForEventStep(
        id=step_id,
        event=wait["event"],
        timeout=_duration(wait["timeout"]),
        where=_where(wait),
        correlate=wait.get("correlate"),
        next=following,
        on_timeout=wait.get("on_timeout"),
    )
