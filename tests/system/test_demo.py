"""`make demo` runs `rapport demo`: it must start, load its sample data and explain itself."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.system.server import RAPPORT, free_port

pytestmark = pytest.mark.system


def test_demo_serves_sample_profiles_and_segments(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "demo.out"
    with out.open("wb") as sink:
        demo = subprocess.Popen(
            [*RAPPORT, "demo", "--data-dir", str(tmp_path / "demo"), "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "Press Ctrl-C" not in out.read_text():
            assert demo.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        guide = out.read_text()
        secret = next(line.split()[-1] for line in guide.splitlines() if "secret key" in line)
        admin = {"Authorization": f"Bearer {secret}"}
        base = f"http://127.0.0.1:{port}"
        dana = httpx.get(f"{base}/api/profiles/anonymous_id:anon-dana-app", headers=admin)
        assert dana.status_code == 200
        body = dana.json()
        assert ("email", "dana@example.com") in {
            (i["type"], i["value"]) for i in body["identifiers"]
        }
        assert set(body["segments"]) == {"jacket-lookers", "marketable-buyers"}
        assert f"{base}/api/profiles/email:dana@example.com" in guide
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=20) == 0
