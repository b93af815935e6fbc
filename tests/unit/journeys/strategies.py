"""Hypothesis strategies for journey documents: valid ones, and values to break them with.

Valid documents exercise every trigger, step and journey-wide rule. Their
step targets are drawn from a small pool of ids, so many name no step or
leave steps unreachable: those are *reference* errors, which the schema
agreement tests ignore and the graph tests rely on.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

IDS = st.sampled_from(["welcome", "wait-2d", "offer_b", "s1", "end"])
DURATIONS = st.sampled_from(["1h", "30d", "90m", "1h30m", "2w", "45s"])
TIMESTAMPS = st.sampled_from(["2026-06-01T09:00:00Z", "2026-06-01T09:00:00.5+02:00"])
TIMES = st.sampled_from(["09:00", "19:30", "00:00", "23:59"])
ZONES = st.sampled_from(["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires"])
TRAITS = st.sampled_from(["birthday", "reservation.at", "timezone"])
FIELDS = st.sampled_from(["properties.order_id", "context.page.url", "traits.email"])
EVENTS = st.sampled_from(["Order Completed", "Product Viewed"])
CONDITIONS = st.sampled_from(
    [
        {"trait": "plan", "op": "equals", "value": "gold"},
        {"in_segment": "vip"},
        {"all": [{"consent": "email", "granted": True}, {"not": {"in_segment": "churned"}}]},
        {"event": "Order Completed", "window": "7d", "op": "gte", "value": 1},
    ]
)
FILTERS = st.lists(
    st.sampled_from(
        [
            {"field": "properties.category", "op": "equals", "value": "jackets"},
            {"field": "properties.price", "op": "gte", "value": 50},
            {"field": "context.page.path", "op": "exists"},
        ]
    ),
    max_size=2,
)
WEEKDAY_LISTS = st.lists(
    st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
    min_size=1,
    max_size=3,
    unique=True,
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["x", ""])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=2), st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
    ),
    max_leaves=4,
)


def with_optional(
    required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(required, optional=optional)


CONDITION_OPTION = {"condition": CONDITIONS}


@st.composite
def offsets(draw: st.DrawFn, per_customer: bool = False) -> dict[str, Any]:
    """``before`` or ``after`` (or neither), ``at`` and ``yearly`` of a date reference;
    ``per_customer``: the offset may be read from a trait (a date wait's may)."""
    node: dict[str, Any] = {}
    side = draw(st.sampled_from(["before", "after", None]))
    if side is not None:
        trait_offset = st.builds(lambda d: {"trait": "reminder_lead", "default": d}, DURATIONS)
        node[side] = draw(st.one_of(DURATIONS, trait_offset) if per_customer else DURATIONS)
    node.update(draw(with_optional({}, {"at": TIMES, "yearly": st.booleans()})))
    return node


SCHEDULES = st.one_of(
    st.builds(lambda t: {"once": t}, TIMESTAMPS),
    with_optional(
        {"every": st.just("day"), "at": TIMES},
        {"time_zone": ZONES, "until": TIMESTAMPS},
    ),
    with_optional(
        {"every": st.just("week"), "days": WEEKDAY_LISTS, "at": TIMES},
        {"time_zone": ZONES, "until": TIMESTAMPS},
    ),
    with_optional(
        {"every": st.just("month"), "day": st.integers(1, 31), "at": TIMES},
        {"time_zone": ZONES},
    ),
)
FAN_OUTS = st.one_of(
    st.fixed_dictionaries({"identifier": st.just("email"), "from": FIELDS}),
    with_optional(
        {
            "event": EVENTS,
            "match": st.dictionaries(FIELDS, FIELDS, min_size=1, max_size=2),
        },
        {"where": FILTERS, "window": DURATIONS},
    ),
    st.fixed_dictionaries({"segment": st.just("vip")}),
)
TRIGGERS = st.one_of(
    with_optional({"event": EVENTS}, {"where": FILTERS, **CONDITION_OPTION}),
    with_optional({"segment_entered": st.just("vip")}, CONDITION_OPTION),
    with_optional({"segment_exited": st.just("vip")}, CONDITION_OPTION),
    st.builds(
        lambda trait, rest, extra: {"date": trait, **rest, **extra},
        TRAITS,
        offsets(),
        with_optional({}, CONDITION_OPTION),
    ),
    with_optional({"schedule": SCHEDULES, "segment": st.just("newsletter")}, CONDITION_OPTION),
    with_optional(
        {"business_event": st.just("Shipment Delayed"), "to": FAN_OUTS},
        {"where": FILTERS, **CONDITION_OPTION},
    ),
)
MESSAGES = st.one_of(
    with_optional(
        {
            "channel": st.sampled_from(["email", "sms", ["sms", "email"], ["push"]]),
            "template": st.just("welcome-1"),
            "category": st.just("transactional"),
        },
        {
            "topic": st.just("orders"),
            "data": st.dictionaries(
                st.sampled_from(["k", "at"]),
                st.one_of(JSON_VALUES, st.builds(lambda t: {"trait": t}, TRAITS)),
            ),
        },
    ),
    st.fixed_dictionaries(
        {
            "channel": st.just("email"),
            "template": st.just("spring-sale"),
            "category": st.just("promotional"),
            "topic": st.just("offers"),
        }
    ),
)
WAITS = st.one_of(
    st.builds(lambda d: {"for": d}, DURATIONS),
    with_optional(
        {
            "until_time": st.one_of(
                TIMES, st.builds(lambda d: {"trait": "usual_time", "default": d}, TIMES)
            )
        },
        {"days": WEEKDAY_LISTS},
    ),
    st.builds(
        lambda trait, rest, extra: {"until_date": trait, **rest, **extra},
        TRAITS,
        offsets(per_customer=True),
        with_optional({}, {"missed": IDS}),
    ),
    with_optional(
        {"event": EVENTS, "timeout": DURATIONS},
        {"where": FILTERS, "correlate": FIELDS, "on_timeout": IDS},
    ),
)
NEXT = {"next": IDS}
VARIANTS = st.one_of(
    st.fixed_dictionaries({"name": st.just("a"), "weight": st.integers(1, 100), "next": IDS}),
    st.fixed_dictionaries(
        {"name": st.just("control"), "weight": st.integers(1, 100), "holdout": st.just(True)}
    ),
    st.fixed_dictionaries(
        {"name": st.just("b"), "weight": st.just(5), "holdout": st.just(False), "next": IDS}
    ),
)
UPDATES = st.fixed_dictionaries(
    {},
    optional={
        "set": st.dictionaries(st.sampled_from(["vip", "plan"]), JSON_VALUES, max_size=2),
        "unset": st.lists(st.just("trial"), max_size=1),
        "increment": st.dictionaries(
            st.just("loyalty_points"), st.one_of(st.integers(-500, 500), st.just(2.5))
        ),
        "add_tags": st.lists(st.just("inconvenienced"), max_size=1),
        "remove_tags": st.lists(st.just("new"), max_size=1),
    },
).filter(bool)
WEBHOOKS = with_optional(
    {"url": st.sampled_from(["https://hooks.example.com/x", "http://10.0.0.1:8080/h?a=1"])},
    {
        "method": st.sampled_from(["POST", "PUT", "GET"]),
        "headers": st.dictionaries(st.just("X-Token"), st.just("abc"), max_size=1),
        "body": JSON_VALUES,
    },
)
STEPS = st.one_of(
    with_optional({"message": MESSAGES}, NEXT),
    with_optional({"wait": WAITS}, NEXT),
    st.fixed_dictionaries(
        {
            "branch": st.lists(
                st.fixed_dictionaries({"when": CONDITIONS, "next": IDS}), min_size=1, max_size=3
            ),
            "otherwise": IDS,
        }
    ),
    st.fixed_dictionaries({"split": st.lists(VARIANTS, min_size=2, max_size=3)}),
    with_optional({"update": UPDATES}, NEXT),
    with_optional({"webhook": WEBHOOKS}, NEXT),
    with_optional({"goal": st.just("purchased")}, NEXT),
    st.fixed_dictionaries({"exit": st.sampled_from(["bought", "done for now"])}),
)
EXIT_CRITERIA = st.one_of(
    with_optional({"event": EVENTS}, {"where": FILTERS, "correlate": FIELDS}),
    st.fixed_dictionaries({"condition": CONDITIONS}),
)
GOALS = st.one_of(
    with_optional(
        {"name": st.just("purchased"), "event": EVENTS, "within": DURATIONS},
        {"where": FILTERS, "correlate": FIELDS, "exit": st.booleans()},
    ),
    with_optional(
        {"name": st.just("vip"), "condition": CONDITIONS, "within": DURATIONS},
        {"exit": st.booleans()},
    ),
)
HOLDS = with_optional(
    {"while": CONDITIONS, "max_age": DURATIONS},
    {"messages": st.sampled_from(["all", "promotional"])},
)
JOURNEYS = with_optional(
    {
        "id": st.just("welcome-series"),
        "name": st.just("Welcome series"),
        "triggers": st.lists(TRIGGERS, min_size=1, max_size=2),
        "start": IDS,
        "steps": st.dictionaries(IDS, STEPS, min_size=1, max_size=4),
    },
    {
        "description": st.just("Three messages over a week."),
        "priority": st.integers(0, 100),
        "correlation_key": FIELDS,
        "reentry": st.one_of(
            st.sampled_from(["never", "always"]), st.builds(lambda d: {"after": d}, DURATIONS)
        ),
        "time_zone": with_optional({}, {"trait": TRAITS, "default": ZONES}),
        "exit_when": st.lists(EXIT_CRITERIA, max_size=2),
        "goals": st.lists(GOALS, max_size=2),
        "hold": HOLDS,
    },
)

# fmt: off
KEYS = st.sampled_from(
    [
        # journey and trigger fields
        "id", "name", "triggers", "start", "steps", "priority", "correlation_key", "reentry",
        "time_zone", "exit_when", "goals", "hold", "event", "where", "condition",
        "segment_entered", "segment_exited", "date", "before", "after", "at", "yearly",
        "schedule", "segment", "business_event", "to", "once", "every", "days", "day", "until",
        "identifier", "from", "match", "window", "trait", "default", "correlate", "within",
        "exit", "while", "max_age", "messages",
        # steps
        "message", "wait", "branch", "split", "update", "webhook", "goal", "next", "otherwise",
        "channel", "template", "topic", "category", "data", "for", "until_time", "until_date",
        "missed", "timeout", "on_timeout", "when", "weight", "holdout", "set", "unset",
        "increment", "add_tags", "remove_tags", "url", "method", "headers", "body",
        "color", "Bad Id",
    ]
)
MUTANT_VALUES = st.one_of(
    st.sampled_from(
        [
            "welcome", "Bad Id", "", "  ", "1h", "0h", "1 h", "2026-06-01T09:00:00Z",
            "2026-02-30T09:00:00Z", "09:00", "24:00", "9:00", "UTC", "not a zone!",
            "properties.x", "price", "email", "fax", "promotional", "transactional", "POST",
            "FETCH", "https://x.io/h", "ftp://x.io", "never", "sometimes", "day", "week", "month",
            "year", "mon", "funday", "all",
        ]
    ),
    st.sampled_from(
        [True, False, None, 0, 1, -1, 5.0, 2.5, 32, 101, 10_001, [], {}, ["mon"], ["mon", "mon"],
         ["email"], ["email", "fax"], {"after": "1h"}, {"after": "x"}, {"a": 1}, {"x.y": 1},
         {"properties.a": "properties.b"}, {"properties.a": "b"}, {"trait": "t"},
         {"trait": "t", "default": "09:00"}]
    ),
    CONDITIONS,
    FILTERS,
    TRIGGERS,
    STEPS,
    SCHEDULES,
    FAN_OUTS,
    WAITS,
    MESSAGES,
    VARIANTS,
    st.lists(VARIANTS, min_size=1, max_size=2),
    st.lists(TRIGGERS, max_size=1),
    JSON_VALUES,
)
# fmt: on


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


_SLUGS = ["a", "a-", "-a", "A", "a" * 100, "a" * 101, "", 3]
_DURATION_EDGES = ["1h", "0h", "1h\n", "1y", 5]
_TIME_EDGES = ["00:00", "23:59", "24:00", "9:00", "09:60", 900]
_FIELD_EDGES = ["properties.x", "x", "properties", "traits.a.b", ""]
_FLAGS = [True, False, "yes", None]
# fmt: off
EDGES: dict[str, list[Any]] = {
    **dict.fromkeys((
        "id", "start", "segment_entered", "segment_exited", "segment", "template", "topic",
        "goal", "next", "otherwise", "missed", "on_timeout",
    ), _SLUGS),
    **dict.fromkeys(
        ("before", "after", "within", "max_age", "timeout", "for", "window"), _DURATION_EDGES
    ),
    **dict.fromkeys(("correlation_key", "correlate", "from", "field"), _FIELD_EDGES),
    **dict.fromkeys(("yearly", "holdout"), _FLAGS),
    "name": ["x", " ", "", "x" * 200, "x" * 201, "a-b", "A"],
    "description": ["", "x" * 2001, 3],
    "priority": [0, 100, 101, -1, 50.0, 2.5, True],
    "at": _TIME_EDGES,
    "default": [*_TIME_EDGES, "UTC", "Etc/GMT+5", "no zone", "/Paris", "1h", "0m"],
    "days": [["mon"], [], ["mon", "mon"], ["fun"], "mon"],
    "day": [1, 31, 0, 32, 15.0, "1"],
    "weight": [1, 10_000, 0, 10_001, 5.0, 2.5, True],
    "channel": ["email", "fax", [], ["sms", "sms"], ["in_app"], ["fax"]],
    "category": ["promotional", "transactional", "marketing"],
    "method": ["DELETE", "post", "FETCH"],
    "url": ["https://x.io", "https://", "http://a b", "ftp://x", "https://x.io/\n"],
    "headers": [{"X-A": "b"}, {"X A": "b"}, {"X": 1}, {}],
    "time_zone": ["UTC", "Etc/GMT+5", "no zone", 5, {"default": "UTC"}, {"trait": "tz"}, {}],
    "every": ["day", "week", "month", "year"],
    "once": ["2026-06-01T09:00:00Z", "2028-02-29T00:00:00Z", "2026-02-29T00:00:00Z", "2026-06-01"],
    "until": ["2026-06-01T09:00:00Z", "2026-06-01"],
    "exit": [True, False, "bought", "", " ", "x" * 201],
    "match": [{"properties.a": "properties.b"}, {}, {"a": "properties.b"}, {"properties.a": "b"}],
    "messages": ["all", "promotional", "none"],
    "reentry": ["never", "always", "sometimes", {"after": "1d"}, {"after": "0d"}, {},
                {"after": "1d", "x": 1}],
    "increment": [{"points": 5}, {"points": True}, {"a.b": 1}, {"points": "5"}, {}],
    "set": [{"a": 1}, {"a.b": 1}, {}, []],
    "unset": [["a"], ["a.b"], [3], []],
    "add_tags": [["x"], [""], [3], "x"],
    "remove_tags": [["x"], [""], [3], "x"],
    "until_time": ["09:00", {"trait": "t", "default": "09:00"}, {"trait": "t"},
                   {"trait": "", "default": "09:00"}, 9],
    "until_date": ["birthday", "a..b", "", ".x"],
    "date": ["birthday", "a..b", "", ".x"],
    "trait": ["birthday", "a..b", "", ".x"],
    "data": [{}, {"a": 1}, [], "x", {"a": {"trait": "x"}}, {"a": {"trait": "a..b"}},
             {"a": {"trait": 3}}, {"a": {"trait": "x", "b": 1}}],
    "before": [*_DURATION_EDGES, {"trait": "lead", "default": "1h"}, {"trait": "lead"},
               {"trait": "a..b", "default": "1h"}, {"trait": "lead", "default": "x"}],
    "body": [None, {"a": [1]}, "text"],
    "identifier": ["email", "", 3],
    "event": ["X", "", 3],
    "business_event": ["X", "", 3],
    "triggers": [[], [{}]],
    "steps": [{}, {"Bad Id": {"exit": "x"}}, []],
    "split": [[], [{"name": "a", "weight": 1, "next": "x"}]],
    "branch": [[], [{"when": {"in_segment": "a"}, "next": "x"}]],
}
# fmt: on


def mutant_value(key: str) -> st.SearchStrategy[Any]:
    """A value to put under ``key``: mostly that key's edge cases, else anything."""
    edges = EDGES.get(key)
    if edges is None:
        return MUTANT_VALUES
    return st.one_of(st.sampled_from(edges), st.sampled_from(edges), MUTANT_VALUES)
