"""`make demo` runs `rapport demo`: the whole loop, for real, in one process.

The demo starts its own SMTP sink and SMS/push sink, loads the shop's
definitions through the admin API and plays the customer stories in real
time. These tests run it as `make demo` does, read its live account, and
check through the admin API that what the account says was delivered really
went through the SMTP sink (the sender recorded the Message-ID the sink saw).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from rapport.demo.run import MARKER, prepare_data_dir
from tests.system.server import RAPPORT, free_port

pytestmark = pytest.mark.system

WELCOME = re.compile(r'EMAIL  Mei Tanaka\s+to mei@example\.com: "Welcome to the shop!"')
JACKET = re.compile(
    r'EMAIL  Dana Reyes\s+to dana@example\.com: "15% off coats and jackets"'
    r" \[leather-jacket-nudge/offer\]"
)


class Demo:
    """A `rapport demo` subprocess whose output goes to a file."""

    def __init__(self, data_dir: Path, out: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.out = out
        with out.open("wb") as sink:
            self.process = subprocess.Popen(
                [*RAPPORT, "demo", "--data-dir", str(data_dir), "--port", str(self.port)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )

    def text(self) -> str:
        return self.out.read_text(encoding="utf-8")

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 40) -> str:
        deadline = time.monotonic() + timeout
        while not pattern.search(self.text()):
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no {pattern.pattern!r} in:\n{self.text()}"
            time.sleep(0.1)
        return self.text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def secret_key(self) -> str:
        return next(line.split()[-1] for line in self.text().splitlines() if "secret key" in line)


def test_demo_delivers_real_email_and_explains_why(tmp_path: Path) -> None:
    demo = Demo(tmp_path / "demo", tmp_path / "demo.out")
    try:
        # The delivered line, then (once the account has asked the API) its "why".
        account = demo.wait_for(re.compile(WELCOME.pattern + r".*\n +why: .*\n"))
        assert "FAILED" not in account and "!  " not in account, account
        lines = account.splitlines()
        welcome = next(i for i, line in enumerate(lines) if WELCOME.search(line))
        assert "[welcome-series/welcome]" in lines[welcome]
        why = lines[welcome + 1]
        assert "why: Mei Tanaka signs up" in why, why
        assert "'marketing' granted" in why and "email to mei@example.com" in why, why

        admin = {"Authorization": f"Bearer {demo.secret_key()}"}
        messages = httpx.get(f"{demo.base}/api/profiles/user_id:u-mei/messages", headers=admin)
        assert messages.status_code == 200, messages.text
        [sent] = [m for m in messages.json()["messages"] if m["template"]["id"] == "welcome-1"]
        assert (sent["status"], sent["channel"], sent["address"]) == (
            "sent",
            "email",
            "mei@example.com",
        )
        # The account printed it only because the SMTP sink holds a mail with this
        # Message-ID: the one the sender recorded when the sink accepted it.
        assert sent["delivery"]["provider_message_id"].startswith("<")

        # Her anonymous browsing joined her profile when she signed up.
        anon = httpx.get(f"{demo.base}/api/profiles/anonymous_id:anon-mei-1", headers=admin)
        assert anon.status_code == 200 and anon.json()["id"] == sent["profile_id"]

        # Dana's third view of the jacket: a segment, a journey, an email seconds later.
        account = demo.wait_for(JACKET)
        assert re.search(r"SEG    Dana Reyes\s+entered segment hesitating-over-outerwear", account)
        dana = httpx.get(f"{demo.base}/api/profiles/email:dana@example.com", headers=admin)
        assert "hesitating-over-outerwear" in dana.json()["segments"]
    finally:
        assert demo.stop() == 0, demo.text()


def test_demo_starts_over_on_its_own_data_and_refuses_foreign_data(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    for run in (1, 2):
        demo = Demo(data, tmp_path / f"demo-{run}.out")
        try:
            demo.wait_for(WELCOME)
            admin = {"Authorization": f"Bearer {demo.secret_key()}"}
            messages = httpx.get(f"{demo.base}/api/profiles/user_id:u-mei/messages", headers=admin)
            # The second run starts from scratch: one welcome, not one per run.
            assert [m["template"]["id"] for m in messages.json()["messages"]] == ["welcome-1"]
        finally:
            assert demo.stop() == 0, demo.text()

    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not the demo's")
    assert prepare_data_dir(foreign) is False
    assert (foreign / "keep.txt").read_text() == "not the demo's"
    assert prepare_data_dir(data) is True
    assert [p.name for p in data.iterdir()] == [MARKER]
