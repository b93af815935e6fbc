"""Where the tests find a PostgreSQL server, and fresh schemas to work in.

``postgres_dsn()`` answers once per session, trying in turn:

1. ``RAPPORT_TEST_POSTGRES_DSN`` if set (CI sets it; it is used unchecked so a
   wrong value fails loudly instead of skipping);
2. the local service at ``postgresql://postgres@127.0.0.1:5432/test``;
3. a throwaway cluster from the PostgreSQL binaries under
   ``/usr/lib/postgresql/*/bin``, in a temporary directory on a free port,
   stopped and deleted when the interpreter exits.

If none works the calling test is skipped with the reason, except under
``CI=true`` where a missing database must never pass silently: it fails.
Each test works in its own schema (``unique_schema()``), so tests do not see
each other's rows and need no cleanup between them.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

import asyncpg
import pytest

ENV_DSN = "RAPPORT_TEST_POSTGRES_DSN"
LOCAL_SERVICE_DSN = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin/initdb"
_CONNECT_TIMEOUT_SECONDS = 3.0

_found_dsn: str | None = None
_unavailable_reason: str | None = None


def postgres_dsn() -> str:
    """A DSN of a PostgreSQL server the tests may create schemas in."""
    global _found_dsn, _unavailable_reason
    if _found_dsn is None and _unavailable_reason is None:
        _found_dsn, _unavailable_reason = _find_postgres()
    if _found_dsn is not None:
        return _found_dsn
    give_up(_unavailable_reason or "no PostgreSQL found")


def unique_schema() -> str:
    """A schema name no other test uses (a plain lowercase identifier)."""
    return "t_" + secrets.token_hex(8)


async def drop_schema(dsn: str, schema: str) -> None:
    """Remove a test's schema and everything in it."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def give_up(reason: str) -> NoReturn:
    """Skip the test for lack of PostgreSQL, or fail it when running in CI."""
    message = f"PostgreSQL tests cannot run: {reason}"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{message} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


def _find_postgres() -> tuple[str | None, str | None]:
    configured = os.environ.get(ENV_DSN)
    if configured:
        return configured, None
    local_problem = connection_problem(LOCAL_SERVICE_DSN)
    if local_problem is None:
        return LOCAL_SERVICE_DSN, None
    try:
        cluster = ThrowawayCluster.start()
    except ClusterUnavailable as error:
        return None, (
            f"{ENV_DSN} is not set; {LOCAL_SERVICE_DSN} does not answer ({local_problem}); "
            f"and no throwaway cluster could be started ({error})"
        )
    atexit.register(cluster.stop)
    return cluster.dsn, None


def connection_problem(dsn: str) -> str | None:
    """Why ``dsn`` cannot be connected to, or None if it can.

    Runs in a thread with its own event loop, so it works from synchronous
    code and from inside a running loop (async fixtures) alike.
    """
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, _probe(dsn)).result()


async def _probe(dsn: str) -> str | None:
    try:
        conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return f"{type(error).__name__}: {error}"
    await conn.close()
    return None


class ClusterUnavailable(Exception):
    """A throwaway cluster cannot be started here (no binaries, no user...)."""


class ThrowawayCluster:
    """A private PostgreSQL server in a temporary directory (fsync off: tests only)."""

    def __init__(self, bindir: Path, base: Path, run_as: list[str], port: int) -> None:
        self.bindir = bindir
        self.base = base
        self.run_as = run_as
        self.port = port
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @classmethod
    def start(cls) -> ThrowawayCluster:
        bindir = _newest_bindir()
        run_as = _unprivileged_prefix()
        base = Path(tempfile.mkdtemp(prefix="rapport-pg-"))
        if run_as:
            shutil.chown(base, user="postgres", group="postgres")
        cluster = cls(bindir, base, run_as, _free_port())
        try:
            cluster._run(
                "initdb",
                "-D",
                str(cluster.data_dir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
            options = (
                f"-p {cluster.port} -c listen_addresses=127.0.0.1 -k {base} "
                "-c fsync=off -c full_page_writes=off"
            )
            cluster._run(
                "pg_ctl",
                "-D",
                str(cluster.data_dir),
                "-l",
                str(base / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            )
        except ClusterUnavailable:
            shutil.rmtree(base, ignore_errors=True)
            raise
        return cluster

    def stop(self) -> None:
        """Stop the server and delete its directory (safe to call twice)."""
        if self.data_dir.exists():
            subprocess.run(
                [
                    *self.run_as,
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                check=False,
                timeout=60,
            )
        shutil.rmtree(self.base, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [*self.run_as, str(self.bindir / program), *args]
        try:
            subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
        except subprocess.CalledProcessError as error:
            raise ClusterUnavailable(
                f"{program} failed with exit code {error.returncode}: "
                f"{(error.stderr or error.stdout).strip()[-500:]}"
            ) from error
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ClusterUnavailable(f"{program} could not run: {error}") from error


def _newest_bindir() -> Path:
    candidates = [path.parent for path in Path("/").glob(POSTGRES_BIN_GLOB.lstrip("/"))]
    candidates = [path for path in candidates if (path / "pg_ctl").exists()]
    if not candidates:
        raise ClusterUnavailable(f"no initdb and pg_ctl matching {POSTGRES_BIN_GLOB}")

    def major_version(bindir: Path) -> tuple[int, ...]:
        version = bindir.parent.name
        return tuple(int(part) for part in version.split(".") if part.isdigit())

    return max(candidates, key=major_version)


def _unprivileged_prefix() -> list[str]:
    """How to run a server binary: initdb and postgres refuse to run as root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as error:
        raise ClusterUnavailable("running as root and there is no 'postgres' user") from error
    runuser = shutil.which("runuser")
    if runuser is not None:
        return [runuser, "-u", "postgres", "--"]
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        return [setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    raise ClusterUnavailable("running as root and neither runuser nor setpriv is available")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
