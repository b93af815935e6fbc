"""Accepted means durable: SIGKILL mid-traffic loses no acknowledged event."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from rapport.storage.sqlite import open_sqlite
from tests.system.server import RapportServer, create_key

pytestmark = pytest.mark.system

SENDERS = 4


def make_batch(sender: int, n: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "track",
            "userId": f"user-{sender}-{i % 7}",
            "event": "Product Viewed",
            "messageId": f"{sender}-{n}-{i}-{uuid.uuid4().hex[:8]}",
            "properties": {"product_id": f"p-{i}", "price": i},
        }
        for i in range(50)
    ]


def sender_loop(
    url: str,
    write_key: str,
    sender: int,
    acked: list[str],
    sent: list[list[dict[str, Any]]],
    stop: threading.Event,
) -> None:
    with httpx.Client(base_url=url, auth=(write_key, ""), timeout=5) as client:
        n = 0
        while not stop.is_set():
            batch = make_batch(sender, n)
            n += 1
            sent.append(batch)
            try:
                response = client.post("/v1/batch", json={"batch": batch})
            except httpx.TransportError:
                return  # the server died mid-request: this batch was not acknowledged
            if response.status_code == 200:
                acked.extend(e["messageId"] for e in batch)


def read_log(data_dir: Path) -> list[str]:
    async def read() -> list[str]:
        storage, log = await open_sqlite(data_dir)
        try:
            ids: list[str] = []
            after = 0
            while batch := await log.read(after, 5000):
                ids.extend(entry.event.message_id for entry in batch)
                after = batch[-1].offset
            return ids
        finally:
            await log.close()
            await storage.close()

    return asyncio.run(read())


def test_sigkill_loses_no_acknowledged_event(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_key = create_key(data_dir, "write")
    server = RapportServer(data_dir).start()
    acked: list[str] = []
    sent: list[list[dict[str, Any]]] = []
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=sender_loop, args=(server.url, write_key, s, acked, sent, stop), daemon=True
        )
        for s in range(SENDERS)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 5_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()  # SIGKILL while the senders are still posting
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert len(acked) >= 1_000, f"too little traffic before the kill: {server.log()}"

    logged = read_log(data_dir)
    counts: dict[str, int] = {}
    for message_id in logged:
        counts[message_id] = counts.get(message_id, 0) + 1
    missing = [m for m in acked if m not in counts]
    assert missing == [], f"{len(missing)} acknowledged events lost"
    assert max(counts.values()) == 1

    # Restart, and let the senders retry everything they ever sent (as SDKs do
    # after a failure): acknowledged events must still be there exactly once.
    server = RapportServer(data_dir).start()
    try:
        with httpx.Client(base_url=server.url, auth=(write_key, ""), timeout=10) as client:
            for batch in sent:
                assert client.post("/v1/batch", json={"batch": batch}).status_code == 200
            # Processing catches up over everything, restart included.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                health = client.get("/healthz").json()
                if health["lag"] == 0 and health["processed_offset"] > 0:
                    break
                time.sleep(0.2)
            assert health["lag"] == 0, health
    finally:
        server.stop()
    logged = read_log(data_dir)
    assert len(logged) == len(set(logged))
    assert set(logged) == {e["messageId"] for batch in sent for e in batch}
