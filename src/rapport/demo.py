"""``rapport demo``: embedded Rapport with sample shop traffic, ready to explore.

It starts the real server, sends a small shop's worth of events through the
real Segment-compatible ingest API (anonymous browsing, sign-ups that merge
anonymous history, purchases, consent, an alias) and prints where to look.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import datetime, timedelta
from typing import Any

import httpx
import uvicorn

from rapport.api.app import create_app
from rapport.runtime.service import Rapport
from rapport.settings import Settings

CUSTOMERS = [
    {
        "anon": "anon-dana-phone",
        "user": "u-dana",
        "email": "Dana@Example.com",
        "name": "Dana Reyes",
        "city": "Austin",
        "loyalty_id": "L-1001",
    },
    {
        "anon": "anon-sam-laptop",
        "user": "u-sam",
        "email": "sam@example.com",
        "name": "Sam Okafor",
        "city": "Leeds",
        "loyalty_id": "L-1002",
    },
    {
        "anon": "anon-mei-tablet",
        "user": "u-mei",
        "email": "mei@example.com",
        "name": "Mei Tanaka",
        "city": "Osaka",
        "loyalty_id": "L-1003",
    },
]


SEGMENTS: list[dict[str, Any]] = [
    {
        "id": "jacket-lookers",
        "name": "Looked at the leather jacket",
        "condition": {
            "event": "Product Viewed",
            "where": [{"field": "properties.product_id", "op": "equals", "value": "jacket-01"}],
            "aggregate": "count",
            "window": "7d",
            "op": "gte",
            "value": 1,
        },
    },
    {
        "id": "marketable-buyers",
        "name": "Bought something and agreed to marketing",
        "condition": {
            "all": [
                {"event": "Order Completed", "aggregate": "count", "op": "gte", "value": 1},
                {"consent": "marketing", "granted": True},
            ]
        },
    },
]


def sample_batch(now: datetime) -> list[dict[str, Any]]:
    """A day of a small shop: browse anonymously, sign up, buy, consent."""
    events: list[dict[str, Any]] = []
    t = now - timedelta(hours=6)

    def at(minutes: int) -> str:
        return (t + timedelta(minutes=minutes)).isoformat()

    for n, c in enumerate(CUSTOMERS):
        base = n * 40
        events += [
            {
                "type": "page",
                "anonymousId": c["anon"],
                "name": "Home",
                "timestamp": at(base),
                "properties": {"path": "/"},
            },
            {
                "type": "track",
                "anonymousId": c["anon"],
                "event": "Product Viewed",
                "timestamp": at(base + 2),
                "properties": {
                    "product_id": "jacket-01",
                    "name": "Leather jacket",
                    "category": "coats-jackets",
                    "price": 240,
                },
            },
            {
                "type": "track",
                "anonymousId": c["anon"],
                "event": "Product Viewed",
                "timestamp": at(base + 5),
                "properties": {
                    "product_id": "shoe-77",
                    "name": "Trail runner",
                    "category": "running-shoes",
                    "price": 130,
                },
            },
            # Signing up ties the anonymous browsing to a known customer.
            {
                "type": "identify",
                "anonymousId": c["anon"],
                "userId": c["user"],
                "timestamp": at(base + 9),
                "traits": {
                    "email": c["email"],
                    "name": c["name"],
                    "city": c["city"],
                    "loyalty_id": c["loyalty_id"],
                },
                "context": {
                    "consent": {"categoryPreferences": {"marketing": n != 1, "analytics": True}}
                },
            },
            {
                "type": "track",
                "userId": c["user"],
                "event": "Order Completed",
                "timestamp": at(base + 15),
                "properties": {
                    "order_id": f"o-{1000 + n}",
                    "revenue": 130 + 50 * n,
                    "products": [{"product_id": "shoe-77", "quantity": 1}],
                },
            },
        ]
    # Dana also uses the app on a second device, then logs in there.
    events += [
        {
            "type": "screen",
            "anonymousId": "anon-dana-app",
            "name": "Store finder",
            "timestamp": at(200),
        },
        {"type": "alias", "previousId": "anon-dana-app", "userId": "u-dana", "timestamp": at(201)},
        {
            "type": "track",
            "userId": "u-dana",
            "event": "Support Chat Started",
            "timestamp": at(230),
            "properties": {"topic": "backorder"},
        },
    ]
    # Fixed message ids: running the demo again on the same data dir replays
    # the same events, which dedup then stores once.
    for n, event in enumerate(events):
        event["messageId"] = f"demo-{n:03d}"
    return events


async def run_demo(settings: Settings) -> None:
    runtime = await Rapport.open(settings)
    await runtime.start()
    write_key = await runtime.create_key("write")
    secret_key = await runtime.create_key("secret")
    config = uvicorn.Config(
        create_app(runtime), host=settings.host, port=settings.port, log_level="warning"
    )
    server = uvicorn.Server(config)
    serve_task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serve_task.done():
                serve_task.result()
                return
            await asyncio.sleep(0.05)
        base = f"http://{settings.host}:{settings.port}"
        admin = {"Authorization": f"Bearer {secret_key}"}
        async with httpx.AsyncClient(base_url=base, headers=admin) as client:
            # Segments are data, defined through the same API a console would use.
            for segment in SEGMENTS:
                response = await client.put(f"/api/segments/{segment['id']}", json=segment)
                response.raise_for_status()
        async with httpx.AsyncClient(base_url=base, auth=(write_key, "")) as client:
            response = await client.post(
                "/v1/batch", json={"batch": sample_batch(runtime.clock.now())}
            )
            response.raise_for_status()
        end = await runtime.event_log.end_offset()
        await runtime.processor.wait_processed(end, 30)
        print_guide(base, write_key, secret_key, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await asyncio.wait(
            [serve_task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serve_task
        await runtime.close()


def print_guide(base: str, write_key: str, secret_key: str, settings: Settings) -> None:
    auth = f"-H 'Authorization: Bearer {secret_key}'"
    print(
        f"""
Rapport is running at {base}  (data in {settings.sqlite_dir.resolve()})
Sample traffic for {len(CUSTOMERS)} customers went in through the Segment-compatible API.

  write key  (ingest, safe in web pages): {write_key}
  secret key (admin API):                 {secret_key}

Look around:
  curl {auth} {base}/api/profiles/email:dana@example.com
  curl {auth} {base}/api/profiles/user_id:u-dana/events
  curl {auth} {base}/api/profiles/anonymous_id:anon-dana-app     # merged: same profile
  curl {auth} {base}/api/profiles/loyalty_id:L-1001              # the loyalty card too
  curl {auth} {base}/api/segments                                # streaming segments
  curl -u {write_key}: {base}/v1/track \\
       -d '{{"userId": "u-dana", "event": "Order Delivered"}}'
  open {base}/docs        (OpenAPI: {base}/openapi.json)
  curl {base}/metrics

Press Ctrl-C to stop.""",
        flush=True,
    )
