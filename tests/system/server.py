"""Run a real ``rapport serve`` process for system tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

RAPPORT = [sys.executable, "-m", "rapport.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_key(data_dir: Path, kind: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [*RAPPORT, "keys", "create", "--data-dir", str(data_dir), "--kind", kind],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    key = out.stdout.strip()
    assert "\n" not in key and key.startswith(("wk_", "sk_")), out.stdout
    return key


class RapportServer:
    """A ``rapport serve`` subprocess on a free port."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"serve-{self.port}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> RapportServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # the child keeps its own copy
            self.proc = self._spawn(log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rapport serve exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"rapport serve did not become healthy:\n{self.log()}")

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        command = [*RAPPORT, "serve", "--data-dir", str(self.data_dir)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no chance to flush or clean up."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


class SenderProcess(RapportServer):
    """A ``rapport sender`` subprocess on the same data directory: delivery only, no HTTP."""

    def start(self, timeout: float = 30.0) -> SenderProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"sender-{self.port}.log"
        with self.log_path.open("ab") as log:  # the child keeps its own copy
            command = [*RAPPORT, "sender", "--data-dir", str(self.data_dir)]
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        return self
