"""The demo's live account names the customer even when a merge lands mid-poll."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from rapport.demo.account import Account
from rapport.demo.sinks import Inbox


def _api(profile_id: str, message_profile_id: str, provider_id: str) -> httpx.MockTransport:
    """The admin API as it answers when her profiles merge between two reads:
    the profile read still sees the pre-merge id, the messages read the merged one."""

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body: dict[str, Any]
        if path == "/api/profiles/user_id:u-mei":
            body = {"id": profile_id, "segments": []}
        elif path == "/api/profiles/user_id:u-mei/messages":
            message = {
                "idempotency_key": "k1",
                "status": "sent",
                "profile_id": message_profile_id,
                "journey": {"id": "welcome-series", "step_id": "welcome"},
                "delivery": {"provider_message_id": provider_id},
            }
            body = {"messages": [message]}
        elif path == "/api/messages/k1":
            body = {"trigger": {"message_id": "m1"}, "gate": {"outcome": "send"}}
        else:
            return httpx.Response(404)
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handle)


def test_a_message_under_a_profile_id_not_seen_yet_is_named_by_its_customer() -> None:
    inbox = Inbox()
    provider_id = inbox.add("email", "mei@example.com", "Welcome to the shop!", "Hello")
    lines: list[str] = []

    async def poll() -> None:
        transport = _api("prof_before_merge", "prof_after_merge", provider_id)
        async with httpx.AsyncClient(transport=transport, base_url="http://rapport") as client:
            account = Account(client, inbox, journeys=[], out=lines.append)
            account.people["u-mei"] = "Mei Tanaka"
            account.triggers["m1"] = "Mei signs up"
            await account.poll()

    asyncio.run(poll())
    assert len(lines) == 1, lines
    assert lines[0].split("\n")[0].split("  ")[2].startswith("Mei Tanaka"), lines
    assert "prof_after" not in lines[0]
    assert "why: Mei signs up" in lines[0]
