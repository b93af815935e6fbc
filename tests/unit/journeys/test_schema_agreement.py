"""The published JSON Schema and the validator agree on every structural rule:
generated journeys (valid by construction) and the same with one field dropped,
added or replaced anywhere inside, conditions included. Reference errors (step
targets, reachability, loops, correlation, names) are the validator's alone."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource

from rapport.core.journeys import JOURNEY_SCHEMA, STRUCTURE, validate_journey
from rapport.core.journeys.schema import SCHEMA_ID
from tests.unit.journeys.kitchen_sink import BASES
from tests.unit.journeys.strategies import (
    EDGES,
    JOURNEYS,
    KEYS,
    MUTANT_VALUES,
    dicts_in,
    mutant_value,
)

# Crawled once: otherwise every lookup of the embedded condition schema crawls it again.
REGISTRY = Registry().with_resource(SCHEMA_ID, Resource.from_contents(JOURNEY_SCHEMA)).crawl()
SCHEMA = jsonschema.Draft202012Validator(JOURNEY_SCHEMA, registry=REGISTRY)


def structural(document: Any) -> list[str]:
    return [str(e) for e in validate_journey(document) if e.kind == STRUCTURE]


def check_agreement(document: Any) -> None:
    errors = structural(document)
    assert (errors == []) == SCHEMA.is_valid(document), (
        errors,
        [error.message for error in SCHEMA.iter_errors(document)][:5],
    )


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(JOURNEY_SCHEMA)


@settings(max_examples=300, deadline=None)
@given(JOURNEYS)
def test_generated_journeys_are_structurally_valid_for_both(document: Any) -> None:
    assert structural(document) == []
    assert SCHEMA.is_valid(document), [e.message for e in SCHEMA.iter_errors(document)][:5]


@st.composite
def mutants(draw: st.DrawFn) -> Any:
    """A valid journey with one field dropped, added or replaced somewhere inside.

    The field to replace is drawn by name first (then one of the objects
    holding it), so rare fields (a split variant's ``weight``) get their
    share, with the edge cases of that field (``mutant_value``).
    """
    document = copy.deepcopy(draw(JOURNEYS))
    nodes = dicts_in(document)
    action = draw(st.sampled_from(["drop", "add", "replace", "replace"]))
    keys = sorted({key for node in nodes for key in node})
    if action == "add" or not keys:
        node = draw(st.sampled_from(nodes))
        key = draw(KEYS)
        node[key] = copy.deepcopy(draw(mutant_value(key)))
        return document
    key = draw(st.sampled_from(keys))
    node = draw(st.sampled_from([node for node in nodes if key in node]))
    if action == "drop":
        del node[key]
    else:
        node[key] = copy.deepcopy(draw(mutant_value(key)))
    return document


@settings(max_examples=700, deadline=None)
@given(mutants())
def test_schema_and_validator_agree_on_single_mutations(document: Any) -> None:
    check_agreement(document)


@st.composite
def double_mutants(draw: st.DrawFn) -> Any:
    document = draw(mutants())
    nodes = dicts_in(document)
    if nodes:
        node = draw(st.sampled_from(nodes))
        key = draw(KEYS)
        node[key] = copy.deepcopy(draw(mutant_value(key)))
    return document


@settings(max_examples=250, deadline=None)
@given(double_mutants())
def test_schema_and_validator_agree_on_double_mutations(document: Any) -> None:
    check_agreement(document)


@given(st.one_of(MUTANT_VALUES, st.lists(MUTANT_VALUES, max_size=2)))
@settings(max_examples=100, deadline=None)
def test_schema_and_validator_agree_on_things_that_are_not_journeys(document: Any) -> None:
    check_agreement(document)


def edge_cases(base: Any) -> Iterator[Any]:
    """Copies of ``base`` with one field dropped, or replaced by one of its edge cases."""
    for index, node in enumerate(dicts_in(base)):
        for key in list(node):
            for value in (DROP, *EDGES.get(key, ())):
                variant = copy.deepcopy(base)
                target = dicts_in(variant)[index]
                if value is DROP:
                    del target[key]
                else:
                    target[key] = copy.deepcopy(value)
                yield variant


DROP = object()


@pytest.mark.parametrize("base", BASES, ids=lambda base: str(base["id"]))
def test_schema_and_validator_agree_on_every_edge_case_of_every_field(base: Any) -> None:
    assert structural(base) == []
    checked = 0
    for variant in edge_cases(base):
        check_agreement(variant)
        checked += 1
    assert checked > 40
