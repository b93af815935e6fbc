"""The published JSON Schema and the validator accept and reject the same definitions:
random trees of valid and broken nodes, and valid trees with one field dropped,
added or replaced somewhere inside."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.core.conditions import CONDITION_SCHEMA, validate_condition
from rapport.core.conditions.comparisons import OPERATORS

SCHEMA = jsonschema.Draft202012Validator(CONDITION_SCHEMA)


def messages(tree: Any) -> list[str]:
    return [str(error) for error in validate_condition(tree)]


DURATIONS = st.sampled_from(["1h", "30d", "90m", "1h30m", "2w", "0h", "1 h", "h", "", "1h\n", "1y"])
TIMESTAMPS = st.sampled_from(
    [
        "2026-01-31T09:00:00Z",
        "2026-01-31T09:00:00.5+01:00",
        "2026-01-31T09:00:00",
        "2026-01-31",
        "2026-13-01T00:00:00Z",
        "2026-01-31T09:00:00Z\n",
        "soon",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["gold", ""]),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
    ),
    max_leaves=5,
)


def single(name: str, value: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda v: {name: v}, value)


COMPARED = st.one_of(
    JSON_VALUES,
    st.lists(SCALARS, max_size=3),
    TIMESTAMPS,
    single("ago", DURATIONS),
    single("from_now", DURATIONS),
    single("last", DURATIONS),
    single("next", DURATIONS),
    st.builds(lambda a, b: {"ago": a, "next": b}, DURATIONS, DURATIONS),
)
OPS = st.one_of(st.sampled_from(OPERATORS), st.sampled_from(["equalz", "", 3]))
FIELDS = st.sampled_from(
    ["properties.price", "context.page.url", "traits.plan", "price", "properties", 5]
)


def comparison(
    subject: dict[str, st.SearchStrategy[Any]], extra: dict[str, Any]
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(subject, optional={"op": OPS, "value": COMPARED, **extra})


FILTER = comparison({"field": FIELDS}, {})
TRAIT = comparison({"trait": st.sampled_from(["plan", "address.city", "a..b", "", ".x", 4])}, {})
EVENT = comparison(
    {"event": st.sampled_from(["Product Viewed", ""])},
    {
        "where": st.one_of(st.lists(FILTER, max_size=2), st.just({})),
        "aggregate": st.sampled_from(["count", "sum", "max", "distinct_count", "avg"]),
        "of": FIELDS,
        "window": DURATIONS,
        "key": FIELDS,
        "color": st.just("red"),
    },
)
SEGMENT = st.fixed_dictionaries({"in_segment": st.sampled_from(["vip", "", 3])})
CONSENT = st.fixed_dictionaries(
    {"consent": st.sampled_from(["email", ""])},
    optional={"granted": st.sampled_from([True, False, "yes"])},
)
GOOD_DURATIONS = st.sampled_from(["1h", "30d", "90m", "1h30m", "2w", "45s"])
GOOD_TIMESTAMPS = st.sampled_from(["2026-01-31T09:00:00Z", "2026-01-31T09:00:00.5+01:00"])


def good_comparison(relative: bool) -> st.SearchStrategy[dict[str, Any]]:
    """``op``/``value`` pairs that are valid (the random leaves below mostly are not)."""
    pairs = [
        st.builds(
            lambda op, v: {"op": op, "value": v},
            st.sampled_from(["equals", "not_equals"]),
            JSON_VALUES,
        ),
        st.builds(
            lambda op, v: {"op": op, "value": v},
            st.sampled_from(["in", "not_in"]),
            st.lists(JSON_VALUES, max_size=3),
        ),
        st.builds(
            lambda v: {"op": "contains", "value": v},
            st.one_of(st.booleans(), st.integers(), st.text(max_size=3)),
        ),
        st.builds(
            lambda op, v: {"op": op, "value": v},
            st.sampled_from(["gt", "gte", "lt", "lte"]),
            st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
        ),
        st.just({"op": "exists"}),
        st.builds(
            lambda op, v: {"op": op, "value": v},
            st.sampled_from(["before", "after"]),
            GOOD_TIMESTAMPS,
        ),
    ]
    if relative:
        pairs += [
            st.builds(
                lambda op, k, d: {"op": op, "value": {k: d}},
                st.sampled_from(["before", "after"]),
                st.sampled_from(["ago", "from_now"]),
                GOOD_DURATIONS,
            ),
            st.builds(
                lambda k, d: {"op": "within", "value": {k: d}},
                st.sampled_from(["last", "next"]),
                GOOD_DURATIONS,
            ),
        ]
    return st.one_of(pairs)


GOOD_FIELDS = st.sampled_from(["properties.price", "context.page.url", "traits.plan"])
GOOD_TRAIT = st.builds(
    lambda name, c: {"trait": name, **c},
    st.sampled_from(["plan", "address.city"]),
    good_comparison(relative=True),
)
GOOD_FILTER = st.builds(
    lambda f, c: {"field": f, **c}, GOOD_FIELDS, good_comparison(relative=False)
)


@st.composite
def good_event(draw: st.DrawFn) -> dict[str, Any]:
    node: dict[str, Any] = {"event": "Product Viewed", **draw(good_comparison(relative=True))}
    aggregate = draw(
        st.sampled_from(["count", "sum", "min", "max", "first", "last", "distinct_count", None])
    )
    if aggregate is not None:
        node["aggregate"] = aggregate
        if aggregate != "count":
            node["of"] = draw(GOOD_FIELDS)
    for name, values in (
        ("window", GOOD_DURATIONS),
        ("key", GOOD_FIELDS),
        ("where", st.lists(GOOD_FILTER, max_size=2)),
    ):
        if draw(st.booleans()):
            node[name] = draw(values)
    return node


GOOD_LEAVES = st.one_of(
    GOOD_TRAIT,
    good_event(),
    st.just({"in_segment": "vip"}),
    st.just({"consent": "email", "granted": True}),
)
RANDOM_LEAVES = st.one_of(TRAIT, EVENT, SEGMENT, CONSENT, st.just({}), st.just("plan"))


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` five times out of six: about half the trees come out valid."""
    return st.integers(min_value=0, max_value=5).flatmap(lambda n: bad if n == 0 else good)


LEAVES = mostly(GOOD_LEAVES, RANDOM_LEAVES)
TREES = st.recursive(
    LEAVES,
    lambda children: mostly(
        st.one_of(
            single("all", st.lists(children, min_size=1, max_size=3)),
            single("any", st.lists(children, min_size=1, max_size=3)),
            single("not", children),
        ),
        st.one_of(
            single("all", st.lists(children, max_size=1)),
            single("any", st.just([])),
            st.builds(
                lambda a, b: {**a, **b}, single("all", st.lists(children, max_size=2)), SEGMENT
            ),
        ),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(TREES)
def test_schema_and_validator_agree(tree: Any) -> None:
    assert (validate_condition(tree) == []) == SCHEMA.is_valid(tree), (
        messages(tree),
        [error.message for error in SCHEMA.iter_errors(tree)],
    )


GOOD_TREES = st.recursive(
    GOOD_LEAVES,
    lambda children: st.one_of(
        single("all", st.lists(children, min_size=1, max_size=3)),
        single("any", st.lists(children, min_size=1, max_size=3)),
        single("not", children),
    ),
    max_leaves=4,
)
_NODE_FIELDS = ["value", "op", "of", "key", "where", "window", "aggregate", "granted", "trait"]
_OTHER_FIELDS = ["event", "all", "not", "in_segment", "field", "ago", "last", "next", "from_now"]
MUTANT_KEYS = st.sampled_from([*_NODE_FIELDS, *_OTHER_FIELDS, "color"])
MUTANT_VALUES = st.one_of(
    st.sampled_from([*OPERATORS, "count", "sum", "last", "avg", "equalz", "", "1h", "0h"]),
    st.sampled_from(["properties.x", "price", "2026-01-31T09:00:00Z", "2026-02-30T00:00:00Z"]),
    st.sampled_from(
        [True, None, 3, 2.5, [], {}, ["x"], {"ago": "1h"}, {"last": "1d"}, {"next": "x"}]
    ),
    GOOD_LEAVES,
    st.lists(GOOD_LEAVES, min_size=1, max_size=2),
    GOOD_FILTER.map(lambda f: [f]),
    JSON_VALUES,
)


def dicts_in(value: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(value, dict):
        found.append(value)
        for item in value.values():
            found += dicts_in(item)
    elif isinstance(value, list):
        for item in value:
            found += dicts_in(item)
    return found


@st.composite
def mutants(draw: st.DrawFn) -> Any:
    """A valid tree with one field dropped, added or replaced somewhere inside."""
    tree = copy.deepcopy(draw(GOOD_TREES))
    node = draw(st.sampled_from(dicts_in(tree)))
    action = draw(st.sampled_from(["drop", "add", "replace"]))
    if action == "drop" and node:
        del node[draw(st.sampled_from(sorted(node)))]
    elif action == "replace" and node:
        node[draw(st.sampled_from(sorted(node)))] = draw(MUTANT_VALUES)
    else:
        node[draw(MUTANT_KEYS)] = draw(MUTANT_VALUES)
    return tree


@settings(max_examples=300, deadline=None)
@given(mutants())
def test_schema_and_validator_agree_on_single_mutations(tree: Any) -> None:
    assert (validate_condition(tree) == []) == SCHEMA.is_valid(tree), (
        messages(tree),
        [error.message for error in SCHEMA.iter_errors(tree)],
    )
