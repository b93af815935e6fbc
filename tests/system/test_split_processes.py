"""`rapport serve` with processing off + a separate `rapport worker`, on one data dir."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.system.server import RAPPORT, RapportServer, create_key

pytestmark = pytest.mark.system


def test_worker_processes_what_serve_ingests(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_key = create_key(data_dir, "write")
    secret_key = create_key(data_dir, "secret")
    server = RapportServer(data_dir, env={"RAPPORT_PROCESSING": "off"}).start()
    admin = {"Authorization": f"Bearer {secret_key}"}
    worker: subprocess.Popen[bytes] | None = None
    try:
        batch = [
            {"type": "identify", "userId": "u-1", "traits": {"email": "a@example.com"}},
            {"type": "track", "userId": "u-1", "event": "Order Completed"},
        ]
        response = httpx.post(f"{server.url}/v1/batch", json={"batch": batch}, auth=(write_key, ""))
        assert response.status_code == 200
        time.sleep(0.5)
        # Accepted and durable, but nobody processes yet.
        assert httpx.get(f"{server.url}/api/profiles/user_id:u-1", headers=admin).status_code == 404
        assert httpx.get(f"{server.url}/healthz").json()["lag"] == 2

        worker = subprocess.Popen(
            [*RAPPORT, "worker", "--data-dir", str(data_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        status = 0
        while time.monotonic() < deadline:
            profile = httpx.get(f"{server.url}/api/profiles/email:a@example.com", headers=admin)
            status = profile.status_code
            if status == 200 and profile.json()["event_count"] == 2:
                break
            time.sleep(0.1)
        assert status == 200
        deadline = time.monotonic() + 5
        while httpx.get(f"{server.url}/healthz").json()["lag"] != 0:
            assert time.monotonic() < deadline, "serve never saw the worker's progress"
            time.sleep(0.1)
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=20) == 0
        server.stop()
