"""Backfill of a new segment over existing profiles, beside a baseline in the same run.

A SQLite data directory is filled with N synthetic profiles (three
identifiers, five traits with provenance, a few memberships; the first run
builds it, later runs with the same ``--profiles`` reuse it from
``benchmarks/out/``, which is git-ignored). Then:

1. **baseline** -- what this machine does with no Rapport logic: read every
   profile row of the workspace in id order, 1,000 per query, and decode it
   with msgspec (the least any walk over stored profiles must do);
2. **backfill** -- a new segment ``plan equals gold`` (half the profiles
   match) is written through the storage, which starts its job, and the
   processor walks it page by page (``Processor.run_backfill_page``) until
   the job is done: each page read, every profile evaluated, the matching
   ones written back with their membership, one ``Segment Entered`` outbox
   row each, and the job's progress, all committed durably
   (``synchronous=FULL``).

With ``--deliver``, the relay then appends the Entered events to the log and
the processor processes them (timed separately: that is the event path, not
the backfill).

Usage: ``python benchmarks/backfill.py [--profiles 1000000] [--deliver]``.
Prints a Markdown table and writes JSON to ``benchmarks/out/backfill.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rapport.core.clock import VirtualClock
from rapport.core.model import Identifier, Membership, Profile, TraitValue
from rapport.core.segments import DYNAMIC, SegmentDraft
from rapport.runtime.logging import configure_logging
from rapport.runtime.service import Rapport
from rapport.settings import load_settings
from rapport.storage.base import ProcessingBatch

OUT = Path(__file__).with_name("out")
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
WORKSPACE = "ws_bench"
SEED_CHUNK = 10_000
PLANS = ("gold", "silver")
CITIES = ("Austin", "Lyon", "Osaka", "Lagos", "Lima")


def synthetic_profile(n: int) -> Profile:
    seen = NOW - timedelta(days=n % 90)

    def trait(value: object) -> TraitValue:
        return TraitValue(
            value=value, source="write_key:wk_web", observed_at=seen, received_at=seen
        )

    return Profile(
        id=f"prof_{n:09d}",
        workspace_id=WORKSPACE,
        created_at=seen - timedelta(days=30),
        updated_at=seen,
        identifiers=[
            Identifier("anonymous_id", f"anon-{n:09d}"),
            Identifier("email", f"c{n}@example.com"),
            Identifier("user_id", f"user-{n:09d}"),
        ],
        traits={
            "email": trait(f"c{n}@example.com"),
            "plan": trait(PLANS[n % 2]),
            "city": trait(CITIES[n % len(CITIES)]),
            "orders": trait(n % 7),
            "newsletter": trait(n % 3 == 0),
        },
        first_seen=seen - timedelta(days=30),
        last_seen=seen,
        event_count=10 + n % 40,
        segments={"active": Membership(version=1, entered_at=seen)},
    )


async def seed(runtime: Rapport, count: int) -> None:
    await runtime.storage.ensure_workspace("default", WORKSPACE, NOW)
    for start in range(0, count, SEED_CHUNK):
        profiles = [synthetic_profile(n) for n in range(start, min(count, start + SEED_CHUNK))]
        await runtime.storage.commit_processing(
            ProcessingBatch(consumer="seed", offset=0, profiles=profiles)
        )


def baseline(db: Path) -> tuple[float, int]:
    """Seconds to read and decode every profile of the workspace, 1,000 per query."""
    decode = msgspec.json.Decoder(Profile).decode
    conn = sqlite3.connect(db)
    try:
        start = time.perf_counter()
        cursor, count = "", 0
        while True:
            rows = conn.execute(
                "SELECT id, doc FROM profiles WHERE workspace_id = ? AND id > ?"
                " ORDER BY id LIMIT 1000",
                (WORKSPACE, cursor),
            ).fetchall()
            if not rows:
                break
            for _, doc in rows:
                decode(doc)
            count += len(rows)
            cursor = rows[-1][0]
        return time.perf_counter() - start, count
    finally:
        conn.close()


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(count: int, deliver: bool) -> dict[str, object]:
    data = OUT / f"backfill-{count}"
    marker = data / "seeded"
    if not marker.exists():
        shutil.rmtree(data, ignore_errors=True)
        settings = load_settings({"data_dir": str(data)}, environ={})
        runtime = await Rapport.open(settings, clock=VirtualClock(NOW))
        try:
            started = time.perf_counter()
            await seed(runtime, count)
            print(f"seeded {count:,} profiles in {time.perf_counter() - started:.1f} s")
        finally:
            await runtime.close()
        marker.touch()
    # Each run starts from the seeded state: the walk writes memberships.
    work = OUT / f"backfill-{count}-run"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(data, work)

    base_seconds, base_count = baseline(work / "rapport.db")
    settings = load_settings({"data_dir": str(work)}, environ={})
    clock = VirtualClock(NOW)
    runtime = await Rapport.open(settings, clock=clock)
    result: dict[str, object] = {}
    try:
        draft = SegmentDraft(
            workspace_id=WORKSPACE,
            id="gold",
            name="Gold plan",
            kind=DYNAMIC,
            condition={"trait": "plan", "op": "equals", "value": "gold"},
        )
        await runtime.storage.put_segment(draft, NOW)
        await runtime.processor.load_offset()
        rss_before = max_rss_mb()
        started = time.perf_counter()
        cpu_started = time.process_time()
        pages = 0
        while await runtime.processor.run_backfill_page():
            pages += 1
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        job = await runtime.storage.get_backfill(WORKSPACE, "gold")
        assert job is not None and not job.running, job
        result = {
            "profiles": job.processed,
            "entered": job.entered,
            "pages": pages,
            "backfill_seconds": round(seconds, 2),
            "backfill_cpu_seconds": round(cpu, 2),
            "backfill_profiles_per_s": round(job.processed / seconds),
            "baseline_seconds": round(base_seconds, 2),
            "baseline_profiles": base_count,
            "baseline_profiles_per_s": round(base_count / base_seconds),
            "max_rss_mb_before": round(rss_before),
            "max_rss_mb_after": round(max_rss_mb()),
        }
        if deliver:
            started = time.perf_counter()
            while True:
                delivered = await runtime.relay.run_due()
                processed = 0
                while await runtime.processor.run_once():
                    processed += 1
                if not delivered and not processed:
                    break
            result["deliver_seconds"] = round(time.perf_counter() - started, 2)
    finally:
        await runtime.close()
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--deliver", action="store_true", help="also deliver the Entered events")
    args = parser.parse_args()
    configure_logging("warning")
    OUT.mkdir(exist_ok=True)
    result = asyncio.run(run(args.profiles, args.deliver))
    result["when"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
    print("| measure | profiles | seconds | profiles/s |")
    print("| --- | ---: | ---: | ---: |")
    print(
        f"| baseline: read + decode every profile row | {result['baseline_profiles']:,}"
        f" | {result['baseline_seconds']} | {result['baseline_profiles_per_s']:,} |"
    )
    print(
        f"| backfill of `plan equals gold` ({result['entered']:,} enter) | {result['profiles']:,}"
        f" | {result['backfill_seconds']} | {result['backfill_profiles_per_s']:,} |"
    )
    if "deliver_seconds" in result:
        print(f"| delivering + processing the Entered events | | {result['deliver_seconds']} | |")
    print(json.dumps(result))
    (OUT / "backfill.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
