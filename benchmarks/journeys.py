"""Journeys at scale: pending waits held, timers fired, beside a baseline in the same run.

On SQLite (a data directory under ``benchmarks/out/``, git-ignored) a
journey is published -- trigger ``Signed Up`` -> ``wait 1h`` -> one email --
and N customers enter it: N trigger events are appended to the log and the
processor handles them (the **seeding**, timed separately). The virtual
clock moves 0.1 s per 1,000 events, so the N due instants are spread at
10,000 per virtual second: the firing rate the issue targets. Resident
memory (``VmRSS``) is read after N/10 and after N entries: holding the waits
must not grow memory with N beyond the storage caches.

The data directory is then copied, and the timers fired twice:

1. **burst** -- the clock jumps past every due instant at once; the relay
   delivers the due rows to the log and the processor runs each instance's
   next step, until none is left. Firings/s end to end; lateness here is
   queueing (the last firing waits for all the others) and is reported as
   such;
2. **paced** -- the virtual clock follows the wall clock from the first due
   instant, so timers come due at 10,000/s as they would in production; the
   loop delivers what is due and processes it. Lateness of a firing = wall
   time its step committed - wall time the clock passed its due instant
   (the due instant is read back from the timer's message id).

**Baseline**: a fresh data dir, the processor handling the same N plain
events with no journey published (events/s), in the same run.

Usage: ``python benchmarks/journeys.py [--customers 1000000] [--seed-only]
[--modes burst,paced]`` (``--seed-only`` stops after the seeding: baseline,
seeding, memory; ``--modes`` fires in those modes only). Prints a Markdown
table and writes JSON to ``benchmarks/out/journeys.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rapport.core.clock import VirtualClock
from rapport.core.model import Event
from rapport.runtime.journey_admin import check_document
from rapport.runtime.journey_effects import JOURNEY_TIMER
from rapport.runtime.logging import configure_logging
from rapport.runtime.service import Rapport
from rapport.settings import load_settings
from rapport.storage.base import ProcessingBatch

OUT = Path(__file__).with_name("out")
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
WORKSPACE = "ws_bench"
CHUNK = 1_000
"""Events appended per chunk; the virtual clock moves ``CHUNK_STEP`` between chunks."""
CHUNK_STEP = timedelta(seconds=0.1)
WAIT = timedelta(hours=1)
READ_PAGE = 10_000

JOURNEY: dict[str, Any] = {
    "id": "nudge",
    "name": "Nudge after an hour",
    "triggers": [{"event": "Signed Up"}],
    "start": "pause",
    "steps": {
        "pause": {"wait": {"for": "1h"}, "next": "hello"},
        "hello": {
            "message": {
                "channel": "email",
                "template": "nudge-1",
                "category": "promotional",
                "topic": "news",
            }
        },
    },
}


def signup(n: int, when: datetime) -> Event:
    return Event(
        message_id=f"m-{n:09d}",
        type="track",
        event="Signed Up",
        user_id=f"user-{n:09d}",
        workspace_id=WORKSPACE,
        timestamp=when,
        received_at=when,
        source="write_key:wk_web",
    )


def rss_mb() -> float:
    """Current resident memory (``VmRSS``), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def open_runtime(data: Path, clock: VirtualClock) -> Rapport:
    settings = load_settings({"data_dir": str(data)}, environ={})
    runtime = await Rapport.open(settings, clock=clock)
    await runtime.storage.ensure_workspace("default", WORKSPACE, NOW)
    await runtime.processor.load_offset()
    return runtime


async def drain(runtime: Rapport) -> None:
    while await runtime.processor.run_once():
        pass


async def feed(runtime: Rapport, clock: VirtualClock, count: int) -> dict[int, float]:
    """Append and process ``count`` signups, ``CHUNK`` at a time; RSS (MB) at each tenth."""
    marks = {max(1, count * tenth // 10) for tenth in range(1, 11)}
    found: dict[int, float] = {}
    for start in range(0, count, CHUNK):
        stop = min(count, start + CHUNK)
        now = clock.now()
        await runtime.event_log.append([signup(n, now) for n in range(start, stop)])
        await drain(runtime)
        clock.advance(CHUNK_STEP)
        for mark in marks:
            if start < mark <= stop:
                found[mark] = round(rss_mb())
    return found


def timed_commits(runtime: Rapport) -> list[tuple[float, int]]:
    """Record ``(wall time, offset)`` after every processing commit."""
    commits: list[tuple[float, int]] = []
    original: Callable[[ProcessingBatch], Awaitable[None]] = runtime.storage.commit_processing

    async def commit(batch: ProcessingBatch) -> None:
        await original(batch)
        commits.append((time.perf_counter(), batch.offset))

    setattr(runtime.storage, "commit_processing", commit)  # noqa: B010 -- an instance hook
    return commits


async def fire(data: Path, paced: bool, expected: int) -> dict[str, Any]:
    """Fire every pending timer of ``data``; firings/s and lateness percentiles."""
    end = NOW + CHUNK_STEP * ((expected + CHUNK - 1) // CHUNK)
    clock = VirtualClock(end)
    runtime = await open_runtime(data, clock)
    try:
        first_due = await runtime.storage.next_scheduled_at()
        assert first_due is not None, "no pending wait"
        after = await runtime.event_log.end_offset()
        commits = timed_commits(runtime)
        last_due = end + WAIT
        started = time.perf_counter()
        cpu_started = time.process_time()
        if not paced:
            clock.set(last_due)
        while True:
            if paced:
                clock.set(first_due + timedelta(seconds=time.perf_counter() - started))
            delivered = await runtime.relay.run_due()
            processed = 0
            while step := await runtime.processor.run_once():
                processed += step
            if not delivered and not processed:
                if await runtime.storage.next_scheduled_at() is None:
                    break
                await asyncio.sleep(0.001)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        lateness = await lateness_of(runtime, after, commits, started, first_due, paced)
        metrics = (await runtime.storage.journey_metrics(WORKSPACE, "nudge")).by_step()
        sent = metrics.get("hello", {}).get("sent", 0)
        assert len(lateness) == expected == sent, (len(lateness), expected, metrics)
        lateness.sort()
        return {
            "firings": len(lateness),
            "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 2),
            "firings_per_s": round(len(lateness) / seconds),
            "cpu_us_per_firing": round(cpu * 1e6 / len(lateness), 1),
            "lateness_p50_s": round(lateness[len(lateness) // 2], 3),
            "lateness_p99_s": round(lateness[min(len(lateness) - 1, len(lateness) * 99 // 100)], 3),
            "lateness_max_s": round(lateness[-1], 3),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
    finally:
        await runtime.close()


async def lateness_of(
    runtime: Rapport,
    after: int,
    commits: list[tuple[float, int]],
    started: float,
    first_due: datetime,
    paced: bool,
) -> list[float]:
    """Seconds from each timer's due instant (on the wall clock) to its step's commit."""
    found: list[float] = []
    index = 0
    while entries := await runtime.event_log.read(after, READ_PAGE):
        for entry in entries:
            after = entry.offset
            if entry.event.event != JOURNEY_TIMER:
                continue
            while commits[index][1] < entry.offset:
                index += 1
            # message id: journey:<instance id>:<sequence>:<due instant, ISO 8601>
            due = datetime.fromisoformat(entry.event.message_id.split(":", 3)[3])
            due_wall = started + ((due - first_due).total_seconds() if paced else 0.0)
            found.append(max(0.0, commits[index][0] - due_wall))
    return found


async def run(count: int, modes: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {"customers": count}
    base_dir = OUT / f"journeys-{count}-baseline"
    shutil.rmtree(base_dir, ignore_errors=True)
    clock = VirtualClock(NOW)
    runtime = await open_runtime(base_dir, clock)
    try:
        started = time.perf_counter()
        await feed(runtime, clock, count)
        seconds = time.perf_counter() - started
        result["baseline_seconds"] = round(seconds, 2)
        result["baseline_events_per_s"] = round(count / seconds)
    finally:
        await runtime.close()
        shutil.rmtree(base_dir, ignore_errors=True)

    data = OUT / f"journeys-{count}"
    shutil.rmtree(data, ignore_errors=True)
    clock = VirtualClock(NOW)
    runtime = await open_runtime(data, clock)
    try:
        check_document(JOURNEY)
        await runtime.storage.save_journey(WORKSPACE, "nudge", JOURNEY, NOW)
        await runtime.storage.transition_journey(WORKSPACE, "nudge", "publish", NOW)
        # Publishing stores its signal as a row due at once (``journey_signals``):
        # delivered here, as a running relay would, so that the firings below
        # start from the waits alone (the processor skips the signal).
        await runtime.relay.run_due()
        rss_before = rss_mb()
        started = time.perf_counter()
        rss = await feed(runtime, clock, count)
        seconds = time.perf_counter() - started
        result["rss_mb_by_customers"] = rss
        result["rss_mb_at_tenth"] = rss[max(1, count // 10)]
        result["rss_mb_at_all"] = rss[count]
        page = await runtime.storage.list_journey_instances(WORKSPACE, "nudge", 10)
        assert page.instances and page.instances[0].status == "waiting", page
        result["rss_mb_before_seeding"] = round(rss_before)
        result["seed_seconds"] = round(seconds, 2)
        result["seed_events_per_s"] = round(count / seconds)
        result["db_mb"] = round((data / "rapport.db").stat().st_size / 2**20)
    finally:
        await runtime.close()

    burst_dir = OUT / f"journeys-{count}-burst"
    shutil.rmtree(burst_dir, ignore_errors=True)
    try:
        if "burst" in modes:
            if "paced" in modes:  # each mode fires the same waits: a copy for the first
                shutil.copytree(data, burst_dir)
            result["burst"] = await fire(
                burst_dir if "paced" in modes else data, paced=False, expected=count
            )
            shutil.rmtree(burst_dir, ignore_errors=True)
        if "paced" in modes:
            result["paced"] = await fire(data, paced=True, expected=count)
    finally:
        shutil.rmtree(burst_dir, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument(
        "--seed-only",
        action="store_true",
        help="stop after seeding: baseline, seeding time and memory only",
    )
    parser.add_argument(
        "--modes",
        default="burst,paced",
        help="comma-separated firing modes: burst, paced (default both)",
    )
    args = parser.parse_args()
    if args.customers < 1:
        parser.error("--customers must be at least 1")
    modes = [] if args.seed_only else [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(modes) <= {"burst", "paced"}:
        parser.error("--modes: burst and/or paced")
    configure_logging("warning")
    OUT.mkdir(exist_ok=True)
    load_before = os.getloadavg()
    result = asyncio.run(run(args.customers, modes))
    # The machine is shared: the load beside the figures says how far to trust them.
    result["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    result["when"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
    n = result["customers"]
    print("| measure | count | seconds | per s | p50 late | p99 late |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| baseline: plain events, no journey | {n:,} | {result['baseline_seconds']}"
        f" | {result['baseline_events_per_s']:,} | | |"
    )
    print(
        f"| seeding: trigger events, instance enters + waits | {n:,} | {result['seed_seconds']}"
        f" | {result['seed_events_per_s']:,} | | |"
    )
    labels = {"burst": "burst (all due at once)", "paced": "paced (10,000 due/s)"}
    fired = [(label, result[key]) for key, label in labels.items() if key in result]
    for name, row in fired:
        print(
            f"| timer firings, {name} | {row['firings']:,} | {row['seconds']}"
            f" | {row['firings_per_s']:,} | {row['lateness_p50_s']} s"
            f" | {row['lateness_p99_s']} s |"
        )
    for name, row in fired:
        print(f"CPU per firing, {name}: {row['cpu_us_per_firing']} us (all threads)")
    print(f"RSS (MB) by customers waiting: {result['rss_mb_by_customers']}")
    print(f"load average (1, 5, 15 min): {result['load_average']}")
    print(json.dumps(result))
    (OUT / "journeys.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
