"""The real Segment and RudderStack Python SDKs, unchanged, against ``rapport serve``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.system.conftest import RunningRapport

pytestmark = pytest.mark.system


def wait_for_profile(
    rapport: RunningRapport, ref: str, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = httpx.get(f"{rapport.server.url}/api/profiles/{ref}", headers=rapport.admin)
        if response.status_code == 200:
            body = response.json()
            if ready(body):
                return body
        time.sleep(0.1)
    raise AssertionError(f"profile {ref} never became ready; last seen: {body}")


def events_of(rapport: RunningRapport, ref: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{rapport.server.url}/api/profiles/{ref}/events",
        headers=rapport.admin,
        params={"limit": 100},
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def send_story(client: Any, prefix: str) -> None:
    """Anonymous browsing on two devices, a sign-up, then an alias of device two."""
    client.page(anonymous_id=f"{prefix}-anon-1", name="Home", properties={"path": "/"})
    client.track(
        anonymous_id=f"{prefix}-anon-1",
        event="Product Viewed",
        properties={"product_id": "jacket-01", "price": 240},
    )
    client.page(anonymous_id=f"{prefix}-anon-2", name="Store finder")
    client.identify(
        user_id=f"{prefix}-user",
        anonymous_id=f"{prefix}-anon-1",
        traits={"email": f"{prefix}@Example.com", "name": "Dana Reyes", "plan": "gold"},
    )
    client.alias(previous_id=f"{prefix}-anon-2", user_id=f"{prefix}-user")
    client.track(
        user_id=f"{prefix}-user",
        event="Order Completed",
        properties={"order_id": f"{prefix}-o1", "revenue": 130},
    )


def check_merged_profile(rapport: RunningRapport, prefix: str) -> None:
    profile = wait_for_profile(
        rapport, f"user_id:{prefix}-user", lambda body: body["event_count"] >= 6
    )
    identifiers = {(i["type"], i["value"]) for i in profile["identifiers"]}
    assert {
        ("user_id", f"{prefix}-user"),
        ("anonymous_id", f"{prefix}-anon-1"),
        ("anonymous_id", f"{prefix}-anon-2"),
        ("email", f"{prefix}@example.com"),
    } <= identifiers
    assert profile["traits"]["name"]["value"] == "Dana Reyes"
    assert profile["traits"]["plan"]["source"].startswith("write_key:")
    assert profile["traits"]["plan"]["observed_at"]
    assert profile["merged_from"], "the second device's profile was merged in"
    # Every id the customer ever had resolves to the same profile.
    for ref in (f"anonymous_id:{prefix}-anon-2", f"email:{prefix}@example.com"):
        assert wait_for_profile(rapport, ref, lambda _: True)["id"] == profile["id"]
    events = events_of(rapport, f"user_id:{prefix}-user")
    kinds = [(e["type"], e.get("event") or e.get("name")) for e in events]
    assert kinds == [
        ("track", "Order Completed"),
        ("alias", None),
        ("identify", None),
        ("page", "Store finder"),
        ("track", "Product Viewed"),
        ("page", "Home"),
    ]
    assert all(e["receivedAt"] and e["messageId"] for e in events)


def test_segment_python_sdk(running_rapport: RunningRapport) -> None:
    from segment.analytics.client import Client

    errors: list[Exception] = []
    client = Client(
        running_rapport.write_key,
        host=running_rapport.server.url,
        on_error=lambda error, _batch: errors.append(error),
        max_retries=1,
    )
    send_story(client, "seg")
    client.flush()
    client.shutdown()
    assert errors == []
    check_merged_profile(running_rapport, "seg")


def test_rudder_python_sdk(running_rapport: RunningRapport) -> None:
    from rudderstack.analytics.client import Client

    errors: list[Exception] = []
    client = Client(
        running_rapport.write_key,
        host=running_rapport.server.url,
        on_error=lambda error, _batch: errors.append(error),
        max_retries=1,
        gzip=True,
    )
    send_story(client, "rud")
    client.flush()
    client.shutdown()
    assert errors == []
    check_merged_profile(running_rapport, "rud")


def test_segment_sdk_sees_clear_error_for_wrong_key(running_rapport: RunningRapport) -> None:
    from segment.analytics.client import Client
    from segment.analytics.request import APIError

    client = Client(
        "wk_not-a-real-key",
        host=running_rapport.server.url,
        max_retries=0,
        sync_mode=True,  # in sync mode the SDK raises the server's error
    )
    with pytest.raises(APIError) as caught:
        client.track(user_id="x", event="Nope")
    assert caught.value.status == 401
    assert caught.value.code == "invalid_key"
