"""docs/journeys.md and examples/journeys cannot drift from the language: every
example is checked against the validator and the published JSON Schema, there is
one for every trigger, step and wait, the reference tables list exactly the kinds
the schema defines, and the error example shows the real errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from rapport.core.journeys import JOURNEY_SCHEMA, parse_document, parse_journey, validate_journey
from rapport.core.journeys.schema import SCHEMA_ID, STEP_KINDS, TRIGGER_KINDS, WAIT_KINDS

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "journeys.md"
EXAMPLES = sorted((ROOT / "examples" / "journeys").glob("*.yaml"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
REGISTRY = Registry().with_resource(SCHEMA_ID, Resource.from_contents(JOURNEY_SCHEMA)).crawl()
SCHEMA = jsonschema.Draft202012Validator(JOURNEY_SCHEMA, registry=REGISTRY)


def blocks(kind: str) -> list[str]:
    return [body for info, body in FENCE.findall(DOC.read_text()) if info == kind]


def table_keys(heading: str) -> list[str]:
    """The first column of the first table after ``heading``, without backticks."""
    text = DOC.read_text()
    section = text[text.index(heading + "\n") :]
    table = re.search(r"^\|.*?(?=\n\n)", section, re.DOTALL | re.MULTILINE)
    assert table is not None
    rows = table.group(0).splitlines()[2:]
    return [row.split("|")[1].strip().strip("`") for row in rows]


def doc_examples() -> list[Any]:
    return [parse_document(body, "yaml") for body in blocks("yaml")]


def assert_valid(document: Any) -> None:
    assert validate_journey(document) == [], (document.get("id"), validate_journey(document))
    assert SCHEMA.is_valid(document), [e.message for e in SCHEMA.iter_errors(document)][:3]
    parse_journey(document)


def test_every_example_on_the_page_is_a_valid_journey() -> None:
    examples = doc_examples()
    assert len(examples) >= 25
    ids = [example["id"] for example in examples]
    assert len(set(ids)) == len(ids), "every example has its own id"
    for example in examples:
        assert_valid(example)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_story_example_is_a_valid_journey(path: Path) -> None:
    assert_valid(parse_document(path.read_text(), "yaml"))


def test_the_story_examples_cover_s1_s2_s4_s5_s8() -> None:
    stories = {path.name.split("-")[0] for path in EXAMPLES}
    assert {"s1", "s2", "s4", "s5", "s8"} <= stories


def test_there_is_an_example_of_every_trigger_step_and_wait() -> None:
    examples = doc_examples()
    triggers = {
        kind for e in examples for t in e["triggers"] for kind in TRIGGER_KINDS if kind in t
    }
    assert triggers == set(TRIGGER_KINDS)
    steps = [step for e in examples for step in e["steps"].values()]
    assert {kind for step in steps for kind in STEP_KINDS if kind in step} == set(STEP_KINDS)
    waits = {
        kind for step in steps if "wait" in step for kind in WAIT_KINDS if kind in step["wait"]
    }
    assert waits == set(WAIT_KINDS)
    fan_outs = {
        kind
        for e in examples
        for t in e["triggers"]
        if "business_event" in t
        for kind in ("identifier", "event", "segment")
        if kind in t["to"]
    }
    assert fan_outs >= {"event"}  # the identifier and segment fan-outs are shown in the table
    schedules = {
        ("once" if "once" in t["schedule"] else t["schedule"]["every"])
        for e in examples
        for t in e["triggers"]
        if "schedule" in t
    }
    assert schedules >= {"once", "week"}
    for rule in ("exit_when", "goals", "hold", "reentry", "correlation_key", "time_zone"):
        assert any(rule in e for e in examples), rule


def test_the_reference_tables_list_the_schemas_kinds() -> None:
    assert table_keys("## Triggers") == list(TRIGGER_KINDS)
    assert table_keys("## Steps") == list(STEP_KINDS)
    assert set(table_keys("## A definition")) == set(JOURNEY_SCHEMA["properties"])
    documented_fan_outs = [
        key.split(":")[0].strip("{") for key in table_keys("| `to` | customers |")
    ]
    assert documented_fan_outs == ["identifier", "event", "segment"]


def test_the_error_example_shows_the_real_errors() -> None:
    (body,) = blocks("text")
    definition, shown = body.strip().split("\n\n")
    document = json.loads(definition)
    assert [str(error) for error in validate_journey(document)] == shown.splitlines()
    assert not SCHEMA.is_valid(document)
