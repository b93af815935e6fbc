"""docs/conditions.md cannot drift from the language: every example is checked
against the validator and the published JSON Schema, and the reference tables
list exactly the node kinds, operators and aggregates the schema defines."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from rapport.core.conditions import CONDITION_SCHEMA, validate_condition

DOC = Path(__file__).resolve().parents[3] / "docs" / "conditions.md"
SCHEMA = jsonschema.Draft202012Validator(CONDITION_SCHEMA)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


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


def schema_enum(definition: str, field: str) -> list[str]:
    """Every ``op``/``aggregate`` name a schema definition accepts, in order."""
    node = CONDITION_SCHEMA["$defs"][definition]
    branches = node.get("oneOf", [node])
    names: list[str] = []
    for branch in branches:
        accepted = branch["properties"][field]
        names += accepted.get("enum", [accepted.get("const")])
    return names


def test_every_json_and_yaml_example_is_valid() -> None:
    examples: list[Any] = [json.loads(body) for body in blocks("json")]
    examples += [yaml.safe_load(body) for body in blocks("yaml")]
    assert len(examples) >= 15
    for example in examples:
        assert validate_condition(example) == [], example
        assert SCHEMA.is_valid(example), example


def test_the_error_example_shows_the_real_errors() -> None:
    (body,) = blocks("text")
    definition, shown = body.strip().split("\n\n")
    errors = [str(error) for error in validate_condition(json.loads(definition))]
    assert errors == shown.splitlines()
    assert not SCHEMA.is_valid(json.loads(definition))


def test_node_kinds_match_the_schema() -> None:
    refs = [
        ref["$ref"].rsplit("/", 1)[1] for ref in CONDITION_SCHEMA["$defs"]["condition"]["oneOf"]
    ]
    assert table_keys("## Node shapes") == refs


def test_operators_match_the_schema() -> None:
    documented = table_keys("### Operators")
    assert sorted(documented) == sorted(schema_enum("comparison", "op"))
    fixed_only = set(schema_enum("comparison", "op")) - set(schema_enum("fixed_comparison", "op"))
    assert fixed_only == {"within"}  # as the event filter paragraph says


def test_aggregates_match_the_schema() -> None:
    documented = table_keys(
        "| aggregate | value over the matching events in the window | with no events |"
    )
    assert documented == CONDITION_SCHEMA["$defs"]["event"]["properties"]["aggregate"]["enum"]


def test_event_fields_match_the_schema() -> None:
    documented = table_keys("## Event aggregates")
    properties = CONDITION_SCHEMA["$defs"]["event"]["properties"]
    assert documented == [*properties, "op`, `value"]  # the last row documents both
