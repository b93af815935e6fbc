"""The whole loop: from the 200 of an event to the message reaching a real SMTP server.

A real ``rapport serve`` process (embedded SQLite, inline processing, the
sender on) talks to a real SMTP server (aiosmtpd, in this process, on
loopback). A published journey sends a transactional email for every
``Order Completed``; customers were identified beforehand through a secret
key (so their addresses are trusted). Clients post one order per customer at
a sustained ``--rate`` (1,000 events/s by default) for ``--seconds``, in
small batches; for each event we note when its request got its 200, and for
each mail when the SMTP server accepted it (matched by the order id in the
subject). Latency = mail accepted - 200 received.

Baseline, same run, same SMTP server: the same number of mails sent directly
with aiosmtplib at the same rate (one connection per worker), measuring
submit -> accepted. It is what the network path and the SMTP server cost on
this machine with no Rapport in between.

Usage: ``python benchmarks/loop.py [--rate 1000] [--seconds 20]``. Prints a
Markdown table and writes JSON to ``benchmarks/out/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.system.server import RapportServer, SenderProcess, create_key, free_port

BATCH = 20
SENDER_LIMITS = "rate_per_second=5000,burst=1000,concurrency=16,queue=144,batch_size=128"
"""One provider here: a queue above batch_size, so it never holds messages for a full
queue; ``queue / concurrency * send_timeout`` (270 s) stays under the lease (300 s)."""
_HEADERS = BytesHeaderParser(policy=compat32)
IDLE_POLL = 0.01
"""A separate sender is not woken by the processor: it polls the outbox this often when idle."""
ORDER = re.compile(r"order (o-\d+)")

TEMPLATE = {
    "id": "order-confirmation",
    "name": "Order confirmation",
    "channel": "email",
    "subject": "Thank you for order {{ event.properties.order_id }}",
    "text": "Hello {{ profile.traits.first_name }}, order {{ event.properties.order_id }} is in.",
}
JOURNEY = {
    "id": "order-confirmation",
    "name": "Order confirmation",
    "triggers": [{"event": "Order Completed"}],
    "reentry": "always",
    "start": "confirm",
    "steps": {
        "confirm": {
            "message": {
                "channel": "email",
                "template": "order-confirmation",
                "category": "transactional",
            }
        }
    },
}


class Sink:
    """An SMTP handler noting when each order's mail was accepted, one line per mail.

    It runs in a process of its own (``sink_main``), so the load generator
    and the SMTP server do not share a GIL; ``time.monotonic`` is the same
    clock in every process on Linux.
    """

    def __init__(self, out: Any) -> None:
        self.out = out

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        at = time.monotonic()
        content = envelope.content
        raw = content if isinstance(content, bytes) else (content or "").encode()
        # Headers only, parsed plainly: the sink shares the 2 cores with Rapport.
        subject = str(_HEADERS.parsebytes(raw).get("Subject", ""))
        found = ORDER.search(subject)
        if found:
            self.out.write(f"{found.group(1)} {at}\n")
            self.out.flush()
        return "250 OK"


def sink_main(port: int, path: str) -> None:
    with open(path, "a") as out:
        controller = Controller(Sink(out), hostname="127.0.0.1", port=port)
        controller.start()
        try:
            while True:
                time.sleep(3600)
        finally:
            controller.stop()


class Accepted:
    """What the sink process noted: order id -> when its mail was accepted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.accepted: dict[str, float] = {}
        self.duplicates = 0
        self._read = 0

    def poll(self) -> int:
        with self.path.open() as lines:
            lines.seek(self._read)
            for line in lines:
                if not line.endswith("\n"):
                    break  # written in part: read again next time
                self._read += len(line)
                key, at = line.split()
                if key in self.accepted:
                    self.duplicates += 1
                else:
                    self.accepted[key] = float(at)
        return len(self.accepted)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def baseline(port: int, count: int, rate: int) -> list[float]:
    """Submit -> accepted for ``count`` direct mails at ``rate``/s."""
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def worker() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=False, start_tls=False)
        await smtp.connect()
        try:
            while True:
                n = await queue.get()
                if n < 0:
                    return
                started = time.perf_counter()
                message = (
                    f"From: bench@localhost\r\nTo: c{n}@example.com\r\n"
                    f"Subject: baseline b-{n}\r\n\r\nhello\r\n"
                )
                await smtp.sendmail("bench@localhost", [f"c{n}@example.com"], message)
                latencies.append(time.perf_counter() - started)
        finally:
            await smtp.quit()

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    started = time.perf_counter()
    for n in range(count):
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        queue.put_nowait(n)
    for _ in workers:
        queue.put_nowait(-1)
    await asyncio.gather(*workers)
    return latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_of(processes: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(cpu_seconds(pid) for pid in pids) for role, pids in processes.items()}


async def rapport_loop(
    server: RapportServer,
    write_key: str,
    secret: str,
    customers: int,
    rate: int,
    sink: Accepted,
    processes: dict[str, list[int]],
) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        r = await client.put(f"/api/templates/{TEMPLATE['id']}", json=TEMPLATE, headers=admin)
        assert r.status_code in (200, 201), r.text
        r = await client.put(f"/api/journeys/{JOURNEY['id']}", json=JOURNEY, headers=admin)
        assert r.status_code in (200, 201), r.text
        r = await client.post(f"/api/journeys/{JOURNEY['id']}/publish", headers=admin)
        assert r.status_code == 200, r.text
        # Identify every customer server-side first: trusted addresses.
        people = [
            {
                "type": "identify",
                "userId": f"u{n}",
                "traits": {"email": f"c{n}@example.com", "first_name": f"C{n}"},
            }
            for n in range(customers)
        ]
        for i in range(0, customers, 500):
            r = await client.post(
                "/v1/batch", json={"batch": people[i : i + 500]}, auth=(secret, "")
            )
            assert r.status_code == 200, r.text
        await asyncio.sleep(2)  # let processing catch up before the measured part

        answered: dict[str, float] = {}
        statuses: dict[int, int] = {}

        async def post(batch: list[dict[str, Any]]) -> None:
            response = await client.post("/v1/batch", json={"batch": batch}, auth=(write_key, ""))
            at = time.monotonic()
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                for event in batch:
                    answered[event["properties"]["order_id"]] = at

        cpu_before = cpu_of(processes)
        started = time.perf_counter()
        tasks = []
        for i in range(0, customers, BATCH):
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            batch = [
                {
                    "type": "track",
                    "event": "Order Completed",
                    "userId": f"u{n}",
                    "properties": {"order_id": f"o-{n}", "revenue": 50},
                }
                for n in range(i, min(customers, i + BATCH))
            ]
            tasks.append(asyncio.create_task(post(batch)))
        await asyncio.gather(*tasks)
        sent_for = time.perf_counter() - started
        deadline = time.perf_counter() + 120
        # The SMTP server runs in its own process: poll what it noted.
        while sink.poll() < len(answered) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        cpu_after = cpu_of(processes)
    latencies = [sink.accepted[k] - at for k, at in answered.items() if k in sink.accepted]
    return {
        "events": customers,
        "answered_200": len(answered),
        "statuses": statuses,
        "achieved_rate": round(customers / sent_for),
        "mails": len(latencies),
        "duplicates": sink.duplicates,
        "p50_ms": round(1000 * percentile(latencies, 0.5), 1) if latencies else None,
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1) if latencies else None,
        "max_ms": round(1000 * max(latencies), 1) if latencies else None,
        # CPU of each part while the orders were posted and their mails sent, per order.
        "cpu_ms_per_order": {
            role: round(1000 * (cpu_after[role] - cpu_before[role]) / customers, 3)
            for role in processes
        },
    }


async def wait_for_port(port: int) -> None:
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"the SMTP sink did not listen on {port}")


async def run(
    rate: int, seconds: int, keep: Path | None = None, senders: int = 0
) -> dict[str, Any]:
    customers = rate * seconds
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        accepted = Path(tmp) / "accepted.txt"
        accepted.touch()
        sink = multiprocessing.get_context("spawn").Process(
            target=sink_main, args=(port, str(accepted)), daemon=True
        )
        sink.start()
        try:
            await wait_for_port(port)
            direct = await baseline(port, customers, rate)
            data = (keep or Path(tmp)) / "data"
            env = {
                "RAPPORT_SMTP_HOST": "127.0.0.1",
                "RAPPORT_SMTP_PORT": str(port),
                "RAPPORT_SMTP_TLS": "none",
                "RAPPORT_LOG_LEVEL": "warning",
                # A local relay takes far more than the default 50/s meant for a
                # remote provider's quota: limits sized for the offered rate.
                "RAPPORT_SENDER_LIMITS": SENDER_LIMITS,
            }
            write_key = create_key(data, "write")
            secret = create_key(data, "secret")
            # ``senders`` > 0: the serving process only ingests and processes;
            # that many ``rapport sender`` processes deliver, polling the outbox.
            serve_env = {**env, "RAPPORT_SENDER": "off"} if senders else env
            sender_env = {**env, "RAPPORT_SENDER_LIMITS": SENDER_LIMITS + f",idle_poll={IDLE_POLL}"}
            server = RapportServer(data, serve_env).start()
            workers = [SenderProcess(data, sender_env).start() for _ in range(senders)]
            try:
                processes = {
                    "serve": [server.pid],
                    "senders": [worker.pid for worker in workers],
                    "smtp_sink": [sink.pid or 0],
                    "load_generator": [os.getpid()],
                }
                loop = await rapport_loop(
                    server, write_key, secret, customers, rate, Accepted(accepted), processes
                )
            finally:
                for worker in workers:
                    worker.stop()
                server.stop()
        finally:
            sink.terminate()
            sink.join(10)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "rate": rate,
        "seconds": seconds,
        "sender_processes": senders,
        "baseline_p50_ms": round(1000 * percentile(direct, 0.5), 1),
        "baseline_p99_ms": round(1000 * percentile(direct, 0.99), 1),
        "rapport": loop,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="events per second")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument(
        "--senders",
        type=int,
        default=0,
        help="sender processes beside serve (0: serve delivers itself, the default set-up)",
    )
    parser.add_argument("--keep", type=Path, help="keep the server's data here (a new folder)")
    args = parser.parse_args()
    result = asyncio.run(run(args.rate, args.seconds, args.keep, args.senders))
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "loop.json").write_text(json.dumps(result, indent=2))
    r = result["rapport"]
    print(
        f"| {result['when']} | rate {result['rate']}/s for {result['seconds']} s |"
        f" sender processes {result['sender_processes']} |"
    )
    print("| | p50 | p99 | max |")
    print("| --- | --- | --- | --- |")
    print(
        f"| baseline: direct SMTP submit | {result['baseline_p50_ms']} ms | "
        f"{result['baseline_p99_ms']} ms | |"
    )
    print(
        f"| Rapport: 200 of the event -> mail accepted | {r['p50_ms']} ms | {r['p99_ms']} ms | "
        f"{r['max_ms']} ms |"
    )
    print(f"CPU ms per order: {r['cpu_ms_per_order']}")
    print(
        f"mails {r['mails']}/{r['answered_200']} answered, duplicates {r['duplicates']}, "
        f"statuses {r['statuses']}, achieved {r['achieved_rate']} events/s"
    )


if __name__ == "__main__":
    main()
