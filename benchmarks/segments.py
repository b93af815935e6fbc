"""Per-event cost of streaming segments, beside a baseline with no segments in the same run.

One processor on the SQLite backend, with the default settings (steps of up
to ``processing_batch_size`` events, ``profile_cache_size`` profiles kept in
memory), processes the same event stream from the event log, each run on a
fresh data directory:

a. **baseline** — no segment definitions: identity resolution, traits and
   timeline only (what ``benchmarks/ingest.py`` calls processing);
b. **mixed** — 200 active definitions of the kinds a marketing team writes:
   trait comparisons (plan equals, city in, a flag exists), relative times on
   trait timestamps (logged in within 30 days), windowed counts with and
   without ``key`` (viewed the same product 3 times in an hour, 2 orders in
   90 days), sums (revenue >= 500 in 30 days), distinct counts,
   ``all``/``any``/``not`` combinations, consent and ``in_segment``
   references, spread over five event names so that one event affects only
   some of them;
c. **worst case** — 200 definitions that all aggregate ``Product Viewed``, the
   most common event: every view feeds their aggregates and re-evaluates all
   200.

Rounds of definitions after the first two are the same rules per city
("gold plan, Lyon"), as workspaces with many segments have them; without
that, every customer would sit in dozens of identical copies.

Each run first processes an untimed warm-up part of the stream (the
customers exist, their aggregates and memberships are filled in), then
appends the timed part and measures only its processing, which includes the
``Segment Entered`` / ``Segment Exited`` events the changes append to the
log and the processor then processes too: the cost of a customer event is
everything it causes. Costs are per customer event; the column "of which in
``update_memberships``" is the time spent evaluating (feeding aggregates,
re-evaluating the affected segments), measured by wrapping that function;
the rest of the added cost is processing the membership events and storing
larger profiles. Runs are interleaved (a, b, c, a, b, c...) and the median
of each is reported, because this machine is shared and noisy. Time comes
from a virtual clock fixed just after the last event, so every run sees the
same windows.

With ``--trip``, one more variant runs the mixed definitions with the
membership events left out of every processing commit: memberships change
in the profiles exactly as before, but no ``Segment Entered`` / ``Exited``
row is stored, relayed, appended or processed. The mixed run minus that
one is what the events' trip costs (outbox row, relay, log, processing,
timeline row); the rest of the added cost is evaluation, timers and larger
profiles.

Backfilling a new definition over existing profiles is measured by
``benchmarks/backfill.py``.

Usage: ``python benchmarks/segments.py [--events 20000] [--customers 2000]
[--repeat 3] [--no-worst] [--trip]``. Prints a Markdown table (paste into
docs/benchmarks.md) and writes JSON to ``benchmarks/out/segments.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from rapport.core.clock import VirtualClock
from rapport.core.conditions import compile_condition
from rapport.core.model import Event, Profile
from rapport.core.segments import (
    DYNAMIC,
    MembershipChange,
    SegmentCatalog,
    SegmentDraft,
    update_memberships,
)
from rapport.runtime import processor as processor_module
from rapport.runtime.logging import configure_logging
from rapport.runtime.segment_effects import SEGMENT_EVENT_SOURCE
from rapport.runtime.service import Rapport
from rapport.settings import load_settings
from rapport.storage.base import ProcessingBatch, Storage

if TYPE_CHECKING:
    from rapport.core.segments import Settled

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
STREAM_SPAN = timedelta(minutes=50)
"""The stream's events are spread over the 50 minutes before NOW: inside every window."""
APPEND_BATCH = 500
TARGET_ADDED_US = 100.0

CATEGORIES = ("shoes", "jackets", "coats", "bags", "hats", "shirts", "jeans", "socks")
PLANS = ("free", "basic", "gold", "platinum")
CITIES = ("Austin", "Lyon", "Berlin", "Osaka", "Lima", "Oslo", "Pune", "Accra", "Quito", "Perth")
CONSENTS = ("marketing", "analytics", "ads")
FLAGS = ("phone", "company", "is_employee", "newsletter")


# -- the event stream ----------------------------------------------------------


def make_events(n_events: int, customers: int, workspace_id: str) -> list[Event]:
    """The same stream for every run: 75% Product Viewed, 7% Product Added, 5% Order
    Completed, 3% Email Opened, 10% identify (traits, sometimes consent)."""
    rng = random.Random(20261120)
    start = NOW - STREAM_SPAN
    step = STREAM_SPAN / n_events
    events = []
    for i in range(n_events):
        customer = rng.randrange(customers)
        when = start + step * i
        common: dict[str, Any] = {
            "workspace_id": workspace_id,
            "message_id": f"bench-{i:08d}",
            "timestamp": when,
            "received_at": when + timedelta(milliseconds=40),
            "source": "write_key:bench",
            "anonymous_id": f"anon-{customer:07d}",
            "context": {"ip": "203.0.113.9", "library": {"name": "analytics.js"}},
        }
        draw = rng.random()
        if draw < 0.10:
            events.append(identify(rng, customer, when, common))
            continue
        if draw < 0.85:
            # A customer keeps coming back to a handful of products.
            product = (customer * 13 + rng.randrange(4)) % 997
            name = "Product Viewed"
            properties: dict[str, Any] = {
                "product_id": f"sku-{product:04d}",
                "category": CATEGORIES[(product // 2) % len(CATEGORIES)],
                "price": round(10 + (product * 7.3) % 290, 2),
            }
        elif draw < 0.92:
            product = (customer * 13 + rng.randrange(4)) % 997
            name = "Product Added"
            properties = {
                "product_id": f"sku-{product:04d}",
                "price": round(10 + (product * 7.3) % 290, 2),
                "quantity": 1 + rng.randrange(3),
            }
        elif draw < 0.97:
            name = "Order Completed"
            properties = {
                "order_id": f"order-{i:08d}",
                "revenue": round(rng.uniform(20, 400), 2),
                "currency": "EUR",
            }
        else:
            name = "Email Opened"
            properties = {"campaign": f"c{rng.randrange(5)}"}
        events.append(Event(type="track", event=name, properties=properties, **common))
    return events


def identify(rng: random.Random, customer: int, when: datetime, common: dict[str, Any]) -> Event:
    traits: dict[str, Any] = {
        "email": f"c{customer}@example.com",
        # Plans change now and then, so trait segments see entries and exits.
        "plan": PLANS[(customer + rng.randrange(5)) % len(PLANS)]
        if rng.random() < 0.3
        else PLANS[customer % len(PLANS)],
        "city": CITIES[customer % len(CITIES)],
        # Some customers come back after weeks away, so "logged in within 7 days" selects.
        "last_login_at": (when - timedelta(days=customer % 60)).isoformat(),
        "signed_up_at": (NOW - timedelta(days=customer % 120)).isoformat(),
    }
    if customer % 3 == 0:
        flag = FLAGS[customer % len(FLAGS)]
        traits[flag] = f"+1512555{customer:04d}" if flag == "phone" else True
    context = dict(common["context"])
    if rng.random() < 0.5:
        context["consent"] = {
            "categoryPreferences": {
                category: rng.random() < 0.6 for category in CONSENTS[: 1 + customer % 3]
            }
        }
    return Event(
        type="identify",
        user_id=f"user-{customer:07d}",
        traits=traits,
        **{**common, "context": context},
    )


# -- the definitions -------------------------------------------------------------


def views(category: str | None, window: str, at_least: int, *, keyed: bool = True) -> Any:
    node: dict[str, Any] = {"event": "Product Viewed", "window": window}
    if category is not None:
        node["where"] = [{"field": "properties.category", "op": "equals", "value": category}]
    if keyed:
        node["key"] = "properties.product_id"
    node.update(op="gte", value=at_least)
    return node


def orders(window: str, at_least: int) -> Any:
    return {"event": "Order Completed", "window": window, "op": "gte", "value": at_least}


def revenue(window: str, at_least: int) -> Any:
    return {
        "event": "Order Completed",
        "aggregate": "sum",
        "of": "properties.revenue",
        "window": window,
        "op": "gte",
        "value": at_least,
    }


def pick(options: tuple[Any, ...], k: int) -> Any:
    return options[k % len(options)]


MIXED: tuple[tuple[str, Callable[[int], Any]], ...] = (
    ("plan", lambda k: {"trait": "plan", "op": "equals", "value": pick(PLANS, k)}),
    (
        "city",
        lambda k: {"trait": "city", "op": "in", "value": [pick(CITIES, k), pick(CITIES, k + 3)]},
    ),
    ("flag", lambda k: {"trait": pick(FLAGS, k), "op": "exists"}),
    (
        "logged-in",
        lambda k: {
            "trait": "last_login_at",
            "op": "within",
            "value": {"last": pick(("1h", "1d", "7d", "30d"), k)},
        },
    ),
    (
        "signed-up",
        lambda k: {
            "trait": "signed_up_at",
            "op": "before" if k % 3 == 2 else "within",
            "value": {"ago": "90d"} if k % 3 == 2 else {"last": pick(("7d", "30d"), k)},
        },
    ),
    (
        "same-product",
        lambda k: views(pick((*CATEGORIES, None), k), pick(("1h", "30m", "2h"), k), 3 + k % 2),
    ),
    ("orders", lambda k: orders(pick(("90d", "30d", "7d"), k), 1 + k % 3)),
    ("revenue", lambda k: revenue(pick(("7d", "30d", "90d"), k), pick((100, 250, 500, 1000), k))),
    (
        "categories",
        lambda k: {
            "event": "Product Viewed",
            "aggregate": "distinct_count",
            "of": "properties.category",
            "window": pick(("1h", "30m", "15m"), k),
            "op": "gte",
            "value": 3,
        },
    ),
    (
        "carts",
        lambda k: {
            "event": "Product Added",
            "where": [{"field": "properties.price", "op": "gt", "value": pick((50, 100, 200), k)}],
            "window": pick(("1h", "1d"), k),
            "op": "gte",
            "value": 1 + k % 2,
        },
    ),
    (
        "opened",
        lambda k: {
            "event": "Email Opened",
            "where": [{"field": "properties.campaign", "op": "equals", "value": f"c{k % 5}"}],
            "window": "7d",
            "op": "gte",
            "value": 1,
        },
    ),
    (
        "buyer-reachable",
        lambda k: {
            "all": [
                {"trait": "plan", "op": "in", "value": [pick(PLANS, k), pick(PLANS, k + 1)]},
                orders(pick(("30d", "90d"), k), 1),
                {"consent": "marketing", "granted": True},
            ]
        },
    ),
    (
        "intent",
        lambda k: {
            "any": [
                views(pick(CATEGORIES, k), "1h", 3),
                {
                    "event": "Product Added",
                    "where": [{"field": "properties.price", "op": "gt", "value": 100}],
                    "window": pick(("1h", "2h"), k),
                    "op": "gte",
                    "value": 2,
                },
            ]
        },
    ),
    (
        "browser-not-buyer",
        lambda k: {
            "all": [
                {"not": orders("90d", 1)},
                views(None, pick(("1d", "1w"), k), 8 + 2 * (k % 4), keyed=False),
            ]
        },
    ),
    ("consent", lambda k: {"consent": pick(CONSENTS, k), "granted": k % 2 == 0}),
    (
        "vip",
        # Reads two segments of the same round, created before it.
        lambda k: {
            "all": [
                {"in_segment": segment_id(0, k, "plan")},
                {"not": {"in_segment": segment_id(6, k, "orders")}},
            ]
        },
    ),
)


WORST: tuple[tuple[str, Callable[[int], Any]], ...] = (
    ("same-product", lambda k: views(pick(CATEGORIES, k), pick(("1h", "30m", "2h"), k), 2 + k % 3)),
    ("views", lambda k: views(None, pick(("1h", "1d", "1w", "15m"), k), 3 + k % 5, keyed=False)),
    (
        "products",
        lambda k: {
            "event": "Product Viewed",
            "aggregate": "distinct_count",
            "of": "properties.product_id",
            "window": pick(("1h", "1d", "1w"), k),
            "op": "gte",
            "value": 2 + k % 3,
        },
    ),
    (
        "viewed-value",
        lambda k: {
            "event": "Product Viewed",
            "aggregate": "sum",
            "of": "properties.price",
            "window": pick(("1h", "1d"), k),
            "op": "gte",
            "value": pick((200, 500, 1000), k),
        },
    ),
    (
        "pricey",
        lambda k: {
            "event": "Product Viewed",
            "aggregate": "max",
            "of": "properties.price",
            "window": pick(("30m", "1d"), k),
            "op": "gt",
            "value": pick((100, 200, 250), k),
        },
    ),
    (
        "plan-browser",
        lambda k: {
            "all": [
                {"trait": "plan", "op": "equals", "value": pick(PLANS, k)},
                views(pick(CATEGORIES, k + 1), "1h", 2),
            ]
        },
    ),
    ("not-browsing", lambda k: {"not": views(pick(CATEGORIES, k + 2), pick(("1h", "1d"), k), 1)}),
    (
        "either-category",
        lambda k: {
            "any": [views(pick(CATEGORIES, k), "1h", 3), views(pick(CATEGORIES, k + 3), "1h", 3)]
        },
    ),
)


def segment_id(family: int, k: int, label: str) -> str:
    return f"s{k:02d}-{family:02d}-{label}"


NATIONWIDE_ROUNDS = 2
"""Rounds after these are the same rules per city ("gold plan, Lyon"): without that,
rounds repeating a rule would put every customer in dozens of copies of it."""


def definitions(
    families: tuple[tuple[str, Callable[[int], Any]], ...], count: int
) -> list[tuple[str, Any]]:
    """``count`` definitions, round ``k`` giving each family its ``k``-th variant."""
    out = []
    for index in range(count):
        k, family = divmod(index, len(families))
        label, build = families[family]
        condition = build(k)
        if k >= NATIONWIDE_ROUNDS:
            city = {"trait": "city", "op": "equals", "value": pick(CITIES, k)}
            condition = {"all": [condition, city]}
        out.append((segment_id(family, k, label), condition))
    return out


# -- one run ------------------------------------------------------------------


class MembershipTimer:
    """Wraps the processor's ``update_memberships`` to add up the time spent in it.

    That is the evaluation itself (aggregates fed, segments re-evaluated);
    the rest of the added cost is processing the membership events and
    storing the larger profiles.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._wrapped = update_memberships

    def __call__(
        self,
        catalog: SegmentCatalog,
        before: Profile | None,
        after: Profile,
        event: Event,
        now: datetime,
        settled: Settled | None = None,
    ) -> tuple[Profile, list[MembershipChange]]:
        start = time.perf_counter()
        try:
            if settled is None:
                return self._wrapped(catalog, before, after, event, now)
            return self._wrapped(catalog, before, after, event, now, settled)
        finally:
            self.seconds += time.perf_counter() - start

    def __enter__(self) -> MembershipTimer:
        # The processor calls the name it imported: replaced there, for this run only.
        vars(processor_module)["update_memberships"] = self
        return self

    def __exit__(self, *exc: object) -> None:
        vars(processor_module)["update_memberships"] = self._wrapped


def leave_out_membership_events(storage: Storage) -> None:
    """Make ``storage`` drop membership events from processing commits (``--trip``).

    Only the stored rows go: the step that decided them is unchanged, so
    memberships, timers and profiles are the same as in the mixed run.
    """
    commit = storage.commit_processing

    async def commit_without(batch: ProcessingBatch) -> None:
        kept = [row for row in batch.scheduled if row.event.source != SEGMENT_EVENT_SOURCE]
        await commit(msgspec.structs.replace(batch, scheduled=kept))

    # The processor calls the storage's method: replaced on this instance only.
    vars(storage)["commit_processing"] = commit_without


@dataclass(frozen=True)
class RunResult:
    seconds: float
    cpu_seconds: float
    evaluation_seconds: float
    log_entries: int
    produced: dict[str, int]


def run(
    warmup: list[Event],
    events: list[Event],
    workspace_id: str,
    segments: list[tuple[str, Any]],
    *,
    without_membership_events: bool = False,
) -> RunResult:
    """Process ``warmup`` (untimed: profiles and memberships exist), then time ``events``.

    ``without_membership_events``: ``leave_out_membership_events`` for the timed part.
    """

    async def go() -> RunResult:
        with tempfile.TemporaryDirectory() as tmp:
            settings = load_settings({"data_dir": tmp}, environ={})
            runtime = await Rapport.open(settings, clock=VirtualClock(NOW))
            try:
                ws = await runtime.storage.ensure_workspace("default", workspace_id, NOW)
                if ws.id != workspace_id:
                    raise RuntimeError(f"workspace id {ws.id!r}, expected {workspace_id!r}")
                for sid, condition in segments:
                    draft = SegmentDraft(
                        workspace_id=ws.id, id=sid, name=sid, kind=DYNAMIC, condition=condition
                    )
                    await runtime.storage.put_segment(draft, NOW, create_only=True)
                await runtime.processor.load_offset()
                await append(runtime, warmup)
                await drain(runtime)
                if without_membership_events:
                    leave_out_membership_events(runtime.storage)
                measured_from = await append(runtime, events)
                with MembershipTimer() as timer:
                    start = time.perf_counter()
                    cpu_start = time.process_time()
                    end = await drain(runtime)
                    elapsed = time.perf_counter() - start
                    cpu = time.process_time() - cpu_start
                produced: Counter[str] = Counter()
                offset = measured_from + len(events)
                while offset < end:
                    entries = await runtime.event_log.read(offset, 5000)
                    produced.update(str(entry.event.event) for entry in entries)
                    offset = entries[-1].offset
                failed = await runtime.storage.list_rejections(ws.id, 5)
                if failed:
                    raise RuntimeError(f"events failed, latest: {failed[0]}")
                return RunResult(elapsed, cpu, timer.seconds, end - measured_from, dict(produced))
            finally:
                await runtime.close()

    return asyncio.run(go())


async def append(runtime: Rapport, events: list[Event]) -> int:
    """Append ``events`` to the log; the offset before the first of them."""
    before = await runtime.event_log.end_offset()
    for i in range(0, len(events), APPEND_BATCH):
        await runtime.event_log.append(events[i : i + APPEND_BATCH])
    return before


async def drain(runtime: Rapport) -> int:
    """Process until the log is exhausted, membership events appended meanwhile included.

    Membership events reach the log through the relay after the commit that
    scheduled them (the processor's outbox), so the relay runs here too.
    """
    while await runtime.processor.run_once() + await runtime.relay.run_due() > 0:
        pass
    end = await runtime.event_log.end_offset()
    if runtime.processor.processed_offset != end:
        raise RuntimeError(f"stopped at {runtime.processor.processed_offset} of {end}")
    return end


@dataclass(frozen=True)
class Summary:
    name: str
    definitions: int
    eps: float
    us_per_event: float
    cpu_us_per_event: float
    evaluation_us_per_event: float
    entered: int
    exited: int
    log_entries_per_event: float
    runs_us: list[float]


def summarise(name: str, count: int, results: list[RunResult], n_events: int) -> Summary:
    """Medians over the runs of one variant, per customer event."""

    def median_us(seconds: list[float]) -> float:
        return statistics.median(s / n_events * 1e6 for s in seconds)

    us = median_us([r.seconds for r in results])
    # The stream and the clock are the same every run: so are the changes.
    last = results[-1]
    return Summary(
        name=name,
        definitions=count,
        eps=1e6 / us,
        us_per_event=us,
        cpu_us_per_event=median_us([r.cpu_seconds for r in results]),
        evaluation_us_per_event=median_us([r.evaluation_seconds for r in results]),
        entered=last.produced.get("Segment Entered", 0),
        exited=last.produced.get("Segment Exited", 0),
        log_entries_per_event=last.log_entries / n_events,
        runs_us=[round(r.seconds / n_events * 1e6, 1) for r in results],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed events first (default: --events / 2)"
    )
    parser.add_argument("--segments", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-worst", action="store_true", help="skip the worst-case run")
    parser.add_argument(
        "--trip",
        action="store_true",
        help="also run the mixed definitions without delivering membership events",
    )
    args = parser.parse_args()

    configure_logging("warning")
    workspace_id = "ws_bench"
    warmup_count = args.events // 2 if args.warmup is None else args.warmup
    stream = make_events(warmup_count + args.events, args.customers, workspace_id)
    warmup, events = stream[:warmup_count], stream[warmup_count:]
    variants: list[tuple[str, list[tuple[str, Any]]]] = [
        ("baseline: no segments", []),
        (f"{args.segments} mixed segments", definitions(MIXED, args.segments)),
    ]
    if not args.no_worst:
        variants.append(
            (f"{args.segments} segments all on `Product Viewed`", definitions(WORST, args.segments))
        )
    trip_name = f"{args.segments} mixed segments, membership events not delivered"
    if args.trip:
        variants.append((trip_name, definitions(MIXED, args.segments)))
    for _, segments in variants:
        for _, condition in segments:
            # The processor would leave an invalid definition out: measure all of them or stop.
            compile_condition(condition)
    results: dict[str, list[RunResult]] = {name: [] for name, _ in variants}
    for _ in range(args.repeat):
        for name, segments in variants:
            results[name].append(
                run(
                    warmup,
                    events,
                    workspace_id,
                    segments,
                    without_membership_events=name == trip_name,
                )
            )
    summaries = [
        summarise(name, len(segments), results[name], args.events) for name, segments in variants
    ]
    base = summaries[0]
    mixed = summaries[1]
    added = mixed.us_per_event - base.us_per_event
    kinds = Counter(e.event if e.type == "track" else e.type for e in events)

    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "events": args.events,
        "warmup_events": warmup_count,
        "customers": args.customers,
        "stream": dict(kinds.most_common()),
        "repeat": args.repeat,
        "runs": [
            {
                "name": s.name,
                "definitions": s.definitions,
                "events_per_s": round(s.eps),
                "us_per_event": round(s.us_per_event, 1),
                "added_us_per_event": round(s.us_per_event - base.us_per_event, 1),
                "evaluation_us_per_event": round(s.evaluation_us_per_event, 1),
                "cpu_us_per_event": round(s.cpu_us_per_event, 1),
                "added_cpu_us_per_event": round(s.cpu_us_per_event - base.cpu_us_per_event, 1),
                "segment_entered": s.entered,
                "segment_exited": s.exited,
                "log_entries_per_event": round(s.log_entries_per_event, 2),
                "us_per_event_each_run": s.runs_us,
            }
            for s in summaries
        ],
        "target_added_us_per_event": TARGET_ADDED_US,
        "mixed_added_us_per_event": round(added, 1),
        "target_met": added <= TARGET_ADDED_US,
    }
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "segments.json").write_text(json.dumps(result, indent=2))

    print(
        "| run | events/s | µs/event | added µs/event | of which in `update_memberships` "
        "| CPU µs/event | log entries per event | Segment Entered / Exited |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for s in summaries:
        print(
            f"| {s.name} | {s.eps:,.0f} | {s.us_per_event:.1f} "
            f"| {s.us_per_event - base.us_per_event:+.1f} "
            f"| {s.evaluation_us_per_event - base.evaluation_us_per_event:+.1f} "
            f"| {s.cpu_us_per_event:.1f} | {s.log_entries_per_event:.2f} "
            f"| {s.entered:,} / {s.exited:,} |"
        )
    mix = ", ".join(f"{n:,} {k}" for k, n in kinds.most_common())
    print(
        f"\n{args.events:,} customer events timed ({mix}) from {args.customers:,} customers, "
        f"after {warmup_count:,} untimed; median of {args.repeat} interleaved runs; "
        "per customer event, the membership events it causes included."
    )
    trip = next((s for s in summaries if s.name == trip_name), None)
    if trip is not None:
        print(
            "Membership events' trip (mixed minus not delivered): "
            f"{mixed.us_per_event - trip.us_per_event:+.1f} µs/event, "
            f"CPU {mixed.cpu_us_per_event - trip.cpu_us_per_event:+.1f} µs/event."
        )
    verdict = "met" if added <= TARGET_ADDED_US else "NOT met"
    print(
        f"Target: {args.segments} segments add at most {TARGET_ADDED_US:.0f} µs/event: "
        f"{verdict} ({added:+.1f} µs with the mixed definitions)."
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
