"""docs/computed-traits.md cannot drift from the code: every example definition is
valid, every example condition too, the error example shows the real errors,
the field tables list exactly the fields the validator accepts, and the worked
engagement example computes what the page says."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rapport.core.computed_traits import (
    AGGREGATE,
    RESERVED_NAMES,
    ComputedTraitCatalog,
    is_trait_id,
    validate_compute,
)
from rapport.core.computed_traits.engagement import engagement_score, engagement_spec
from rapport.core.computed_traits.validate import AGGREGATE_FIELDS, ENGAGEMENT_FIELDS
from rapport.core.conditions import validate_condition
from tests.unit.computed_traits.helpers import definition

DOC = Path(__file__).resolve().parents[3] / "docs" / "computed-traits.md"
FENCE = re.compile(r"^ *```(\w*)\n(.*?)^ *```", re.DOTALL | re.MULTILINE)


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


def examples() -> tuple[list[dict[str, Any]], list[Any]]:
    definitions: list[dict[str, Any]] = []
    conditions: list[Any] = []
    for body in blocks("json"):
        parsed = json.loads(body)
        (definitions if "compute" in parsed else conditions).append(parsed)
    return definitions, conditions


def test_every_example_definition_is_valid_and_compiles() -> None:
    definitions, _ = examples()
    assert len(definitions) >= 6
    stored = []
    for example in definitions:
        assert set(example) <= {"id", "description", "kind", "compute"}, example
        assert is_trait_id(example["id"]) and example["id"] not in RESERVED_NAMES
        kind = example.get("kind", AGGREGATE)
        assert validate_compute(kind, example["compute"]) == [], example
        stored.append(definition(example["id"], example["compute"], kind))
    built = ComputedTraitCatalog(stored)
    assert built.invalid == {}
    assert sorted(built.by_trait) == sorted(d["id"] for d in definitions)


def test_every_example_condition_is_valid() -> None:
    _, conditions = examples()
    assert len(conditions) >= 3
    for example in conditions:
        assert validate_condition(example) == [], example


def test_the_error_example_shows_the_real_errors() -> None:
    (error_block,) = [body for body in blocks("text") if "$." in body]
    body, shown = error_block.strip().split("\n\n")
    example = json.loads(body)
    errors = [str(e) for e in validate_compute(example.get("kind", AGGREGATE), example["compute"])]
    assert errors == [line.strip() for line in shown.splitlines()]


def test_the_field_tables_match_the_validator() -> None:
    assert table_keys("## Aggregates") == list(AGGREGATE_FIELDS)
    assert table_keys("## Engagement score") == list(ENGAGEMENT_FIELDS)
    assert table_keys("## A definition")[:4] == ["id", "description", "kind", "compute"]


def test_the_worked_engagement_example() -> None:
    definitions, _ = examples()
    (engagement,) = [d for d in definitions if d["id"] == "engagement"]
    spec = engagement_spec(engagement["compute"])
    assert engagement_score(spec, 18, 4, 2) == 64
    assert "+ 0.2667) + ½) = 64`" in DOC.read_text()
