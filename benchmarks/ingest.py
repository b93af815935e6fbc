"""Ingest and processing throughput, each beside a baseline measured in the same run.

1. Baseline: what this machine does with no HTTP and no Rapport logic — msgspec
   decode of the same batch bodies + append of the events to a SQLite table,
   one transaction per 100-event batch, same journal/synchronous settings as
   Rapport's event log.
2. Rapport ingest: a real ``rapport serve`` process; clients post the same
   bodies to ``/v1/batch`` over keep-alive connections; only 200s count.
   Twice: with processing off (as beside a ``rapport worker``), and inline.
   Inline, processing gives way to ingest while it is less than half of
   ``max_processing_lag`` (200,000) behind, so this burst of 100,000 events
   measures ingest first and processing after; the table says how many
   events were processed during the burst. Sustained inline ingest is bounded
   by the processing rate (step 3): past the lag limit it gets 429s.
3. Processing: events/s fully processed into profiles (identity resolution +
   traits + timeline) by one processor on the SQLite backend, with the
   baseline of step 1 for scale.

Usage: ``python benchmarks/ingest.py [--events 100000] [--clients 8]``.
Prints a Markdown table (paste into docs/benchmarks.md) and writes JSON to
``benchmarks/out/``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from base64 import b64encode
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.system.server import RapportServer, create_key

BATCH = 100


def make_event(i: int, users: int) -> dict[str, Any]:
    user = i % users
    base: dict[str, Any] = {
        "messageId": uuid.uuid4().hex,
        "timestamp": "2026-11-20T10:00:00.000Z",
        "anonymousId": f"anon-{user:07d}",
        "context": {"ip": "203.0.113.9", "library": {"name": "analytics.js", "version": "5.2"}},
    }
    if i % 10 == 0:
        base.update(
            type="identify",
            userId=f"user-{user:07d}",
            traits={"email": f"c{user}@example.com", "plan": "gold", "city": "Austin"},
        )
    else:
        base.update(
            type="track",
            event="Product Viewed",
            properties={"product_id": f"sku-{i % 997:04d}", "price": 129.5, "category": "shoes"},
        )
    return base


def make_bodies(n_events: int, users: int) -> list[bytes]:
    events = [make_event(i, users) for i in range(n_events)]
    return [
        msgspec.json.encode({"batch": events[i : i + BATCH], "sentAt": "2026-11-20T10:00:01Z"})
        for i in range(0, n_events, BATCH)
    ]


def baseline(bodies: list[bytes], synchronous: str) -> tuple[float, float]:
    """(events/s, CPU microseconds per event): decode each body, append its events
    in one transaction."""
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "baseline.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("CREATE TABLE log (offset INTEGER PRIMARY KEY, message_id TEXT, body BLOB)")
        encode = msgspec.json.encode
        decode = msgspec.json.decode
        start = time.perf_counter()
        cpu_start = time.process_time()
        n = 0
        for body in bodies:
            batch = decode(body)["batch"]
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO log (message_id, body) VALUES (?, ?)",
                [(e["messageId"], encode(e)) for e in batch],
            )
            db.execute("COMMIT")
            n += len(batch)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        db.close()
    return n / elapsed, cpu / n * 1e6


def post_all(url: str, write_key: str, bodies: list[bytes], clients: int) -> tuple[float, int]:
    """Post every body with ``clients`` keep-alive connections; events/s of 200s."""
    host, port = url.removeprefix("http://").split(":")
    auth = "Basic " + b64encode(f"{write_key}:".encode()).decode()
    queue = list(reversed(bodies))
    lock = threading.Lock()
    accepted = [0]
    statuses: dict[int, int] = {}

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        while True:
            with lock:
                if not queue:
                    break
                body = queue.pop()
            while True:
                conn.request(
                    "POST",
                    "/v1/batch",
                    body=body,
                    headers={"Authorization": auth, "Content-Type": "application/json"},
                )
                response = conn.getresponse()
                response.read()
                with lock:
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status == 429:
                    time.sleep(float(response.getheader("Retry-After") or 1))
                    continue
                if response.status == 200:
                    with lock:
                        accepted[0] += BATCH
                break
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if set(statuses) - {200, 429}:
        raise RuntimeError(f"unexpected statuses: {statuses}")
    return accepted[0] / elapsed, statuses.get(429, 0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rapport_ingest(
    bodies: list[bytes], clients: int, processing: str
) -> tuple[float, int, float, int]:
    """(events/s accepted, 429 count, server CPU microseconds per accepted event,
    events processed by the end of the ingest run)."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        write_key = create_key(data_dir, "write")
        env = {"RAPPORT_LOG_LEVEL": "warning", "RAPPORT_PROCESSING": processing}
        server = RapportServer(data_dir, env=env).start()
        assert server.proc is not None
        try:
            post_all(server.url, write_key, bodies[: max(1, len(bodies) // 20)], clients)  # warm
            cpu_before = cpu_seconds(server.proc.pid)
            eps, throttled = post_all(server.url, write_key, bodies, clients)
            cpu = cpu_seconds(server.proc.pid) - cpu_before
            health = json.loads(urlopen(f"{server.url}/healthz", timeout=10).read())
            return eps, throttled, cpu / (len(bodies) * BATCH) * 1e6, health["processed_offset"]
        finally:
            server.stop()


def processing(bodies: list[bytes]) -> float:
    """Events/s through one processor (identity + traits + timeline) on SQLite."""
    from rapport.core.model import Event
    from rapport.runtime.service import Rapport
    from rapport.settings import load_settings

    async def run() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            settings = load_settings({"data_dir": tmp}, environ={})
            runtime = await Rapport.open(settings)
            try:
                ws = await runtime.storage.ensure_workspace(
                    "default", "ws_bench", runtime.clock.now()
                )
                now = datetime.now(UTC)
                to_event = msgspec.convert
                for body in bodies:
                    raw = msgspec.json.decode(body)["batch"]
                    events = [
                        to_event(
                            {
                                **e,
                                "workspaceId": ws.id,
                                "receivedAt": now,
                                "source": "write_key:bench",
                            },
                            Event,
                        )
                        for e in raw
                    ]
                    await runtime.event_log.append(events)
                end = await runtime.event_log.end_offset()
                await runtime.processor.load_offset()
                start = time.perf_counter()
                while runtime.processor.processed_offset < end:
                    await runtime.processor.run_once()
                elapsed = time.perf_counter() - start
                return end / elapsed
            finally:
                await runtime.close()

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--synchronous", default="FULL")
    args = parser.parse_args()
    bodies = make_bodies(args.events, args.users)
    avg_event = sum(len(b) for b in bodies) / args.events
    base, base_cpu = baseline(bodies, args.synchronous)
    ingest_only, throttled_only, only_cpu, _ = rapport_ingest(bodies, args.clients, "off")
    ingest, throttled, inline_cpu, processed_meanwhile = rapport_ingest(
        bodies, args.clients, "inline"
    )
    sent = args.events + max(1, len(bodies) // 20) * BATCH  # with the warm-up
    processed = processing(bodies)
    base_end, _ = baseline(bodies, args.synchronous)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "events": args.events,
        "avg_event_bytes": round(avg_event),
        "baseline_decode_append_eps": round(base),
        "baseline_again_at_end_eps": round(base_end),
        "baseline_cpu_us_per_event": round(base_cpu, 2),
        "ingest_only_cpu_us_per_event": round(only_cpu, 2),
        "ingest_inline_cpu_us_per_event": round(inline_cpu, 2),
        "ingest_only_eps": round(ingest_only),
        "ingest_only_ratio": round(ingest_only / base, 3),
        "ingest_only_429s": throttled_only,
        "ingest_inline_eps": round(ingest),
        "ingest_inline_ratio": round(ingest / base, 3),
        "ingest_inline_429s": throttled,
        "ingest_inline_processed_meanwhile": processed_meanwhile,
        "ingest_inline_sent": sent,
        "processing_eps": round(processed),
        "processing_ratio": round(processed / base, 3),
        "clients": args.clients,
        "synchronous": args.synchronous,
    }
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "ingest.json").write_text(json.dumps(result, indent=2))
    print("| measure | events/s | vs baseline | CPU µs/event |\n| --- | ---: | ---: | ---: |")
    print(
        f"| baseline: msgspec decode + SQLite append (100/txn) | {base:,.0f} | 1.00 "
        f"| {base_cpu:.1f} |"
    )
    print(
        f"| Rapport `/v1/batch` accepted, durable, processing in another process "
        f"({args.clients} clients) | {ingest_only:,.0f} | {ingest_only / base:.2f} "
        f"| {only_cpu:.1f} |"
    )
    print(
        f"| Rapport `/v1/batch` accepted, durable, processing inline "
        f"({args.clients} clients; {processed_meanwhile:,} of {sent:,} events processed "
        f"meanwhile) | {ingest:,.0f} | {ingest / base:.2f} | {inline_cpu:.1f} |"
    )
    print(
        f"| Rapport processed into profiles (1 processor) | {processed:,.0f} "
        f"| {processed / base:.2f} | |"
    )
    print(f"| baseline again, at the end of the run | {base_end:,.0f} | {base_end / base:.2f} | |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
