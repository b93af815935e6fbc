"""What the validator says, and where: paths of structural errors, embedded conditions
and filters, and the reference rules a schema cannot express (targets, reachability,
loops, correlation, names, time zones)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from rapport.core.journeys import REFERENCE, STRUCTURE, InvalidJourney, check_journey
from rapport.core.journeys import validate_journey as validate
from tests.unit.journeys.kitchen_sink import KITCHEN_SINK, SCHEDULED


def journey(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": "j",
        "name": "J",
        "triggers": [{"event": "Signed Up"}],
        "start": "a",
        "steps": {"a": {"wait": {"for": "1d"}, "next": "b"}, "b": {"exit": "done"}},
    }
    document.update(changes)
    return document


def errors(document: Any) -> list[tuple[str, str, str]]:
    return [(e.path, e.message, e.kind) for e in validate(document)]


def paths(document: Any) -> list[str]:
    return [e.path for e in validate(document)]


def test_the_kitchen_sinks_are_valid() -> None:
    assert validate(KITCHEN_SINK) == []
    assert validate(SCHEDULED) == []


def test_a_document_that_is_not_an_object() -> None:
    assert errors([]) == [("$", "expected a journey object, got an array", STRUCTURE)]


def test_missing_and_unknown_fields_at_the_root() -> None:
    assert errors({"id": "j", "colour": 1}) == [
        (
            "$.colour",
            "unknown field 'colour' (allowed here: id, name, description, priority, triggers,"
            " correlation_key, reentry, time_zone, exit_when, goals, hold, start, steps)",
            STRUCTURE,
        ),
        ("$", "missing field 'name'", STRUCTURE),
        ("$", "missing field 'triggers'", STRUCTURE),
        ("$", "missing field 'start'", STRUCTURE),
        ("$", "missing field 'steps'", STRUCTURE),
    ]


def test_a_trigger_holds_exactly_one_kind() -> None:
    document = journey(triggers=[{"where": []}, {"event": "A", "date": "birthday"}, "A"])
    assert errors(document) == [
        ("$.triggers[0]", "a trigger holds one of event, segment_entered, segment_exited,"
         " date, schedule, business_event; found 'where'", STRUCTURE),
        ("$.triggers[1]", "a trigger holds exactly one of event, segment_entered,"
         " segment_exited, date, schedule, business_event; found 'event' and 'date'", STRUCTURE),
        ("$.triggers[2]", "expected a trigger object, got a string", STRUCTURE),
    ]  # fmt: skip


def test_conditions_and_filters_report_paths_inside_the_journey() -> None:
    document = journey(
        triggers=[
            {
                "event": "Viewed",
                "where": [{"field": "price", "op": "gt", "value": 3}],
                "condition": {"all": [{"trait": "plan", "op": "gte", "value": "x"}]},
            }
        ],
        hold={"while": {"in_segment": ""}, "max_age": "1d"},
    )
    assert paths(document) == [
        "$.triggers[0].where[0].field",
        "$.triggers[0].condition.all[0].value",
        "$.hold.while.in_segment",
    ]


def test_event_filters_cannot_compare_with_relative_times() -> None:
    document = journey(
        exit_when=[
            {"event": "X", "where": [{"field": "properties.at", "op": "within", "value": {}}]}
        ]
    )
    assert errors(document) == [
        (
            "$.exit_when[0].where[0].op",
            "'within' compares with the current time; event filters cannot",
            STRUCTURE,
        )
    ]


def test_step_errors_name_the_step() -> None:
    steps = {
        "a": {"message": {"channel": ["sms", "fax"], "template": "t", "category": "transactional"}},
        "b": {"wait": {"for": "1d", "event": "X"}},
        "c": {"split": [{"name": "x", "weight": 0, "next": "a"}]},
        "d": {"update": {}},
        "e": {"webhook": {"url": "ftp://x", "headers": {"Bad Header": 1}}},
        "Bad Id": {"exit": " "},
    }
    document = journey(start="a", steps=steps)
    assert [(p, m) for p, m, k in errors(document) if k == STRUCTURE] == [
        ("$.steps.a.message.channel[1]", "must be one of email, sms, push, in_app; got 'fax'"),
        ("$.steps.b.wait", "a wait holds exactly one of for, until_time, until_date, event;"
         " found 'for' and 'event'"),
        ("$.steps.c.split", "must hold at least 2 variants"),
        ("$.steps.c.split[0].weight", "must be an integer from 1 to 10000"),
        ("$.steps.d.update", "needs at least one of set, unset, increment, add_tags,"
         " remove_tags"),
        ("$.steps.e.webhook.url", "must be an http(s) URL such as 'https://x.io/h'"),
        ('$.steps.e.webhook.headers["Bad Header"]', "must be an HTTP header name"),
        ('$.steps.e.webhook.headers["Bad Header"]', "must be a string"),
        ('$.steps["Bad Id"]', "a step id is 1-100 lowercase letters, digits, '-' or '_'"),
        ('$.steps["Bad Id"].exit', "must be a string that is not blank"),
    ]  # fmt: skip


def test_holdouts_take_no_next_and_others_need_one() -> None:
    split = [
        {"name": "a", "weight": 1},
        {"name": "b", "weight": 1, "holdout": True, "next": "t"},
    ]
    document = journey(start="s", steps={"s": {"split": split}, "t": {"exit": "done"}})
    assert [(p, m) for p, m, _ in errors(document)] == [
        ("$.steps.s.split[0]", "missing field 'next' (or 'holdout: true')"),
        ("$.steps.s.split[1].next", "a holdout variant takes no step: it has no 'next'"),
    ]


def test_goals_take_an_event_or_a_condition() -> None:
    goals = [
        {"name": "a", "within": "1d"},
        {"name": "b", "within": "1d", "event": "X", "condition": {"in_segment": "v"}},
        {"name": "c", "within": "1d", "condition": {"in_segment": "v"}, "where": []},
    ]
    assert [(p, m) for p, m, _ in errors(journey(goals=goals))] == [
        ("$.goals[0]", "missing field 'event' or 'condition' (what reaches the goal)"),
        ("$.goals[1]", "a goal is reached by an 'event' or by a 'condition', not both"),
        ("$.goals[2].where", "'where' needs a goal 'event'"),
    ]


def test_numbers_must_be_finite_and_values_shallow() -> None:
    deep: Any = 1
    for _ in range(70):
        deep = [deep]
    steps = {
        "a": {"update": {"increment": {"points": math.inf}, "set": {"x": deep}}},
    }
    found = paths(journey(start="a", steps=steps))
    assert found[0] == "$.steps.a.update.set.x" + "[0]" * 65
    assert found[1] == "$.steps.a.update.increment.points"


def test_unknown_targets_and_start_are_reference_errors() -> None:
    document = journey(start="nope")
    document["steps"]["a"]["next"] = "c"
    assert errors(document) == [
        ("$.steps.a.next", "no step 'c' in this journey (steps: a, b)", REFERENCE),
        ("$.start", "no step 'nope' in this journey (steps: a, b)", REFERENCE),
    ]


def test_a_stranded_part_is_reported_once_at_its_entrance() -> None:
    steps = {
        "a": {"exit": "done"},
        "b": {"wait": {"for": "1d"}, "next": "c"},
        "c": {"wait": {"for": "1d"}, "next": "b"},
        "d": {"wait": {"for": "1d"}, "next": "e"},
        "e": {"exit": "done"},
    }
    assert errors(journey(steps=steps)) == [
        ("$.steps.d", "step 'd' cannot be reached from the start step 'a'"
         " (nor can the 1 step after it)", REFERENCE),
        ("$.steps.b", "step 'b' cannot be reached from the start step 'a'"
         " (nor can the 1 step after it)", REFERENCE),
    ]  # fmt: skip


def test_loops_must_wait() -> None:
    steps = {
        "a": {"branch": [{"when": {"in_segment": "v"}, "next": "b"}], "otherwise": "w"},
        "b": {"update": {"add_tags": ["x"]}, "next": "a"},
        "w": {"wait": {"until_date": "d", "missed": "a"}, "next": "a"},
    }
    found = errors(journey(steps=steps))
    assert found == [
        ("$.steps.a", "steps loop without waiting: a -> b -> a (one event would run this loop"
         " forever: put a wait on it)", REFERENCE),
    ]  # fmt: skip
    # Through a wait's next (or on_timeout) a loop is a schedule, not a hang.
    steps["b"]["next"] = "w"
    steps["w"]["wait"] = {"event": "X", "timeout": "1d", "on_timeout": "a"}
    assert errors(journey(steps=steps)) == []
    self_loop = {"a": {"goal": "g", "next": "a"}}
    assert [p for p, _, _ in errors(journey(steps=self_loop))] == ["$.steps.a"]


def test_correlation_rules() -> None:
    document = journey(
        triggers=[{"event": "A"}, {"date": "birthday"}],
        correlation_key="properties.order_id",
    )
    assert errors(document) == [
        (
            "$.triggers[1]",
            "a journey with a correlation_key is entered by events only ('event' or"
            " 'business_event' triggers): this trigger has no key",
            REFERENCE,
        )
    ]
    document = journey(
        exit_when=[{"event": "X", "correlate": "properties.id"}],
        goals=[{"name": "g", "event": "Y", "correlate": "properties.id", "within": "1d"}],
    )
    document["steps"]["a"] = {
        "wait": {"event": "Z", "correlate": "properties.id", "timeout": "1d"},
        "next": "b",
    }
    assert paths(document) == [
        "$.exit_when[0].correlate",
        "$.goals[0].correlate",
        "$.steps.a.wait.correlate",
    ]


def test_names_must_be_unique_and_zones_real() -> None:
    document = copy.deepcopy(KITCHEN_SINK)
    document["goals"][1]["name"] = "reviewed"
    document["steps"]["ab"]["split"][1]["name"] = "sms-first"
    document["time_zone"]["default"] = "Mars/Olympus_Mons"
    assert errors(document) == [
        ("$.time_zone.default", "unknown time zone 'Mars/Olympus_Mons'", REFERENCE),
        ("$.goals[1].name", "goal name 'reviewed' is used twice", REFERENCE),
        ("$.steps.ab.split[1].name", "variant name 'sms-first' is used twice", REFERENCE),
    ]


def test_check_journey_raises_with_every_error() -> None:
    with pytest.raises(InvalidJourney) as raised:
        check_journey(journey(id="Bad", start="zzz"))
    assert [e.path for e in raised.value.errors] == ["$.id", "$.start"]


def test_a_schedule_trigger_takes_a_catch_up_duration() -> None:
    schedule = {"schedule": {"every": "day", "at": "08:00"}, "segment": "news"}
    assert errors(journey(triggers=[{**schedule, "catch_up": "2h"}])) == []
    assert paths(journey(triggers=[{**schedule, "catch_up": "soon"}])) == ["$.triggers[0].catch_up"]
    assert paths(journey(triggers=[{"event": "Signed Up", "catch_up": "2h"}])) == [
        "$.triggers[0].catch_up"
    ], "only a schedule has runs to catch up"
