"""A wait fires once across a SIGKILL: 10,000 customers wait in a real process that dies.

A real ``rapport serve`` on a SQLite data dir runs a published journey
(message -> wait -> message). Each of 10,000 customers' trigger events is
accepted through ``/v1/batch``; once all 10,000 instances are waiting (and
none has reached the second message), the process is killed with SIGKILL.
A new process on the same data dir must fire every wait exactly once:
10,000 second messages in the outbox under distinct idempotency keys, one
``Journey Timer`` event per instance in the log (the relay may deliver a
timer twice, the log keeps it once), every instance completed with one
"wait over" in its trace.

There is no virtual clock across processes, so the wait is short in real
time (``WAIT``): long enough for the whole ingest to be processed before it
elapses on a slow machine (checked before the kill: no second message yet).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from rapport.core.journeys import JourneyInstance
from rapport.core.journeys.effects import SendEffect
from rapport.storage.sqlite import open_sqlite
from tests.system.server import RapportServer, create_key

pytestmark = pytest.mark.system

CUSTOMERS = 10_000
BATCH = 500
WAIT_SECONDS = 30
"""The wait, in real seconds, from each customer's entry."""

# In-app and transactional: the policy gate (docs/policies.md) lets it through
# without consent or an address, so the outbox shows the journey's own behaviour.
JOURNEY: dict[str, Any] = {
    "id": "restart",
    "name": "Restart",
    "triggers": [{"event": "Signed Up"}],
    "start": "hello",
    "steps": {
        "hello": {
            "message": {
                "channel": "in_app",
                "template": "restart-1",
                "topic": "news",
                "category": "transactional",
            },
            "next": "pause",
        },
        "pause": {"wait": {"for": f"{WAIT_SECONDS}s"}, "next": "tips"},
        "tips": {
            "message": {
                "channel": "in_app",
                "template": "restart-2",
                "topic": "news",
                "category": "transactional",
            }
        },
    },
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def poll(
    client: httpx.Client, path: str, done: Any, timeout: float, server: RapportServer
) -> dict[str, Any]:
    """GET ``path`` until ``done(body)``; fail with the last body and the log at ``timeout``."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            response = client.get(path)
        except httpx.TransportError:  # a busy server may time a read out: ask again
            time.sleep(0.5)
            continue
        assert response.status_code == 200, response.text
        body = response.json()
        if done(body):
            return body
        time.sleep(0.5)
    raise AssertionError(f"{path} never got there: {body}\n{server.log()[-4000:]}")


def instance_counts(server: RapportServer, secret_key: str) -> dict[str, int]:
    with httpx.Client(base_url=server.url, headers=bearer(secret_key), timeout=30) as client:
        response = client.get(f"/api/journeys/{JOURNEY['id']}/metrics")
        assert response.status_code == 200, response.text
        counts: dict[str, int] = response.json()["instances"]
        return counts


NO_SENDER = {"RAPPORT_SENDER": "off"}
"""The waits are what this test is about: messages stay in the outbox to be counted
(delivery after a SIGKILL has its own test)."""


def read_outcome(
    data_dir: Path,
) -> tuple[list[tuple[str, str, str]], list[JourneyInstance], list[str]]:
    """``(outbox as (key, template, profile), instances, Journey Timer message ids)``."""

    async def read() -> tuple[list[tuple[str, str, str]], list[JourneyInstance], list[str]]:
        storage, log = await open_sqlite(data_dir)
        try:
            outbox: list[tuple[str, str, str]] = []
            workspaces: set[str] = set()
            after = 0
            while page := await storage.pending_outbox(2000, after):
                for message in page:
                    assert isinstance(message.effect, SendEffect)
                    workspaces.add(message.workspace_id)
                    outbox.append(
                        (message.idempotency_key, message.effect.template, message.profile_id)
                    )
                after = page[-1].seq
            instances: list[JourneyInstance] = []
            cursor: str | None = None
            # The key's workspace (its id is generated): the one the outbox rows name.
            assert len(workspaces) == 1, workspaces
            (workspace,) = workspaces
            while True:
                found = await storage.list_journey_instances(workspace, JOURNEY["id"], 2000, cursor)
                instances.extend(found.instances)
                if found.next_after is None:
                    break
                cursor = found.next_after
            timers: list[str] = []
            offset = 0
            while entries := await log.read(offset, 5000):
                timers.extend(
                    e.event.message_id for e in entries if e.event.event == "Journey Timer"
                )
                offset = entries[-1].offset
            return outbox, instances, timers
        finally:
            await log.close()
            await storage.close()

    return asyncio.run(read())


def test_every_wait_fires_once_after_a_sigkill(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_key = create_key(data_dir, "write")
    secret_key = create_key(data_dir, "secret")
    server = RapportServer(data_dir, NO_SENDER).start()
    try:
        with httpx.Client(base_url=server.url, headers=bearer(secret_key), timeout=30) as admin:
            response = admin.post("/api/journeys", json=JOURNEY)
            assert response.status_code == 201, response.text
            response = admin.post(f"/api/journeys/{JOURNEY['id']}/publish")
            assert response.status_code == 200, response.text

        started = time.monotonic()
        with httpx.Client(base_url=server.url, auth=(write_key, ""), timeout=60) as client:
            for first in range(0, CUSTOMERS, BATCH):
                batch = [
                    {
                        "type": "track",
                        "event": "Signed Up",
                        "userId": f"customer-{i}",
                        "messageId": f"signup-{i}",
                    }
                    for i in range(first, first + BATCH)
                ]
                response = client.post("/v1/batch", json={"batch": batch})
                assert response.status_code == 200, response.text

        with httpx.Client(base_url=server.url, headers=bearer(secret_key), timeout=30) as admin:
            poll(
                admin,
                f"/api/journeys/{JOURNEY['id']}/metrics",
                lambda body: body["instances"].get("waiting", 0) == CUSTOMERS,
                timeout=WAIT_SECONDS - 5,
                server=server,
            )
        entered_in = time.monotonic() - started
        # Nobody may have gone past the wait yet, or the kill would not hit 10,000 waits.
        assert instance_counts(server, secret_key) == {"waiting": CUSTOMERS}, (
            f"the waits elapsed before the kill (all entered in {entered_in:.1f}s)"
        )
        server.kill()
    finally:
        server.stop()

    outbox, _, timers = read_outcome(data_dir)
    assert len(outbox) == CUSTOMERS and {t for _, t, _ in outbox} == {"restart-1"}
    assert timers == []

    server = RapportServer(data_dir, NO_SENDER).start()
    try:
        with httpx.Client(base_url=server.url, headers=bearer(secret_key), timeout=30) as admin:
            metrics = poll(
                admin,
                f"/api/journeys/{JOURNEY['id']}/metrics",
                lambda body: body["instances"] == {"completed": CUSTOMERS},
                timeout=WAIT_SECONDS + 120,
                server=server,
            )
            assert metrics["steps"]["tips"]["sent"] == CUSTOMERS, metrics
            assert metrics["steps"]["hello"]["sent"] == CUSTOMERS, metrics
            # Let the relay and processor go idle, so a late second delivery would show.
            poll(
                admin,
                "/healthz",
                lambda body: body["lag"] == 0,
                timeout=60,
                server=server,
            )
    finally:
        server.stop()

    outbox, instances, timers = read_outcome(data_dir)
    keys = [key for key, _, _ in outbox]
    assert len(keys) == len(set(keys)) == 2 * CUSTOMERS
    assert len(instances) == CUSTOMERS
    assert len({i.profile_id for i in instances}) == CUSTOMERS
    for instance in instances:
        assert instance.status == "completed", instance
        assert [t.what for t in instance.trace].count("wait over") == 1, instance.trace
    expected = {
        (f"journey:{i.id}:{step}:1", template, i.profile_id)
        for i in instances
        for step, template in (("hello", "restart-1"), ("tips", "restart-2"))
    }
    assert set(outbox) == expected
    assert len(timers) == len(set(timers)) == CUSTOMERS
    assert {t.split(":")[1] for t in timers} == {i.id for i in instances}
