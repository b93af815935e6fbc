"""The live account: what Rapport is saying to whom, and why, one line at a time.

``Account.poll()`` reads the sinks and the admin API (never Rapport's
internals): the personas' profiles (segments entered and left), their
messages (``GET /api/profiles/{ref}/messages``), each message's "why"
(``GET /api/messages/{key}``) and the journeys' instance traces (held,
released, dropped, exited...). A message is printed as delivered only once
the sink holds it, matched by the provider's id the sender recorded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from rapport.demo.sinks import Delivery, Inbox

NOTABLE = ("entered", "held", "released", "dropped", "exited", "goal", "updated", "webhook")
"""Journey trace entries worth a line (sends get their own, from the sink)."""

_TRACE = re.compile(r"^(?P<at>\S+)(?: \[(?P<step>[^\]]+)\])? (?P<rest>.*)$")
_ICONS = {"email": "EMAIL", "sms": "SMS  ", "push": "PUSH ", "in_app": "INAPP"}


def _clock(at: datetime | str | None) -> str:
    if isinstance(at, str):
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            return at[:8]
    else:
        moment = at or datetime.now().astimezone()
    return moment.astimezone().strftime("%H:%M:%S")


def _words(text: str, limit: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _gate_summary(gate: dict[str, Any] | None) -> str:
    if not gate:
        return "no gate verdict"
    checks = [c.get("detail") or c.get("name", "") for c in gate.get("checks") or []]
    return " | ".join(str(c) for c in checks if c) or str(gate.get("outcome", ""))


@dataclass
class Account:
    """Polls and prints; ``people`` maps user ids to display names."""

    client: httpx.AsyncClient
    inbox: Inbox
    journeys: list[str]
    out: Callable[[str], None] = print
    people: dict[str, str] = field(default_factory=dict)
    triggers: dict[str, str] = field(default_factory=dict)
    """Message id -> what the shop did, in words (the "because" of a message)."""
    _profiles: dict[str, str] = field(default_factory=dict)
    _segments: dict[str, set[str]] = field(default_factory=dict)
    _messages: dict[str, str] = field(default_factory=dict)
    _claimed: set[str] = field(default_factory=set)
    _trace_seen: dict[str, int] = field(default_factory=dict)
    _last_error: str = ""
    printed_deliveries: int = 0

    def say(self, line: str) -> None:
        self.out(line)

    def error(self, what: str, exc: BaseException) -> None:
        line = f"{_clock(None)}  !  {what} failed: {type(exc).__name__}: {exc}"
        if line[10:] != self._last_error:  # the same failure every half second says nothing new
            self._last_error = line[10:]
            self.say(line)

    def name_of(self, profile_id: str) -> str:
        return self._profiles.get(profile_id, profile_id[:12])

    async def poll(self) -> None:
        """One look at everything; a failing part prints its error and the rest goes on."""
        for user, name in list(self.people.items()):
            try:
                await self._profile(user, name)
                await self._user_messages(user, name)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                self.error(f"reading {name}", exc)
        for journey in self.journeys:
            try:
                await self._traces(journey)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                self.error(f"reading journey {journey}", exc)

    async def _get(self, path: str, **params: str) -> dict[str, Any] | None:
        response = await self.client.get(path, params=params or None)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def _profile(self, user: str, name: str) -> None:
        body = await self._get(f"/api/profiles/user_id:{user}")
        if body is None:
            return
        self._profiles[str(body["id"])] = name
        now = set(body.get("segments") or [])
        before = self._segments.get(user)
        self._segments[user] = now
        if before is None:
            before = set()
        for segment in sorted(now - before):
            self.say(f"{_clock(None)}  SEG    {name:<16} entered segment {segment}")
        for segment in sorted(before - now):
            self.say(f"{_clock(None)}  SEG    {name:<16} left segment {segment}")

    async def _user_messages(self, user: str, name: str) -> None:
        body = await self._get(f"/api/profiles/user_id:{user}/messages", limit="100")
        if body is None:
            return
        for message in reversed(body["messages"]):  # newest first: print oldest first
            # The messages were asked for by her user id, so they are hers even when a
            # merge between this poll's two reads gave them a profile id not seen yet.
            self._profiles.setdefault(str(message["profile_id"]), name)
            await self._message(message)

    async def _message(self, message: dict[str, Any]) -> None:
        key = str(message["idempotency_key"])
        status = str(message["status"])
        gate = message.get("gate") or {}
        state = "deferred" if status == "pending" and gate.get("outcome") == "defer" else status
        if self._messages.get(key) == state or self._messages.get(key) in ("sent", "dropped"):
            return
        who = self.name_of(str(message["profile_id"]))
        journey = message.get("journey") or {}
        where = f"{journey.get('id')}/{journey.get('step_id')}"
        template = (message.get("template") or {}).get("id", "")
        if state == "sent":
            delivery = self._delivery(message)
            if delivery is None:
                return  # the sink has not seen it yet: next poll
            self._messages[key] = state
            await self._delivered(key, who, where, delivery)
        elif state == "dropped":
            self._messages[key] = state
            self.say(
                f"{_clock(message.get('updated_at'))}  DROP   {who:<16} {template} [{where}]: "
                f"{gate.get('reason') or 'dropped'}"
            )
        elif state == "deferred":
            self._messages[key] = state
            self.say(
                f"{_clock(message.get('updated_at'))}  WAIT   {who:<16} {template} [{where}] "
                f"deferred: {gate.get('reason', '')}"
            )
        elif state == "dead":
            self._messages[key] = state
            error = (message.get("delivery") or {}).get("last_error")
            self.say(f"{_clock(message.get('updated_at'))}  FAIL   {who:<16} [{where}]: {error}")

    def _delivery(self, message: dict[str, Any]) -> Delivery | None:
        provider_id = (message.get("delivery") or {}).get("provider_message_id")
        for delivery in self.inbox.deliveries:
            if delivery.provider_id == provider_id or delivery.ref == provider_id:
                return delivery
        return None

    async def _delivered(self, key: str, who: str, where: str, delivery: Delivery) -> None:
        what = delivery.title or delivery.text
        if delivery.channel == "push" and delivery.title:
            what = f"{delivery.title}: {delivery.text}"
        icon = _ICONS.get(delivery.channel, delivery.channel)
        line = (
            f'{_clock(delivery.at)}  {icon}  {who:<16} to {delivery.to}: "{_words(what)}" [{where}]'
        )
        try:
            why = await self._get(f"/api/messages/{key}")
        except (httpx.HTTPError, ValueError) as exc:
            why = None
            self.error(f"asking why {key}", exc)
        if why is not None:
            because = self.because((why.get("trigger") or {}).get("message_id"))
            line += f"\n{'':10}  why: {because}; gate: {_gate_summary(why.get('gate'))}"
        # One write for both lines: the shop prints concurrently and must not land between.
        self.say(line)
        self.printed_deliveries += 1

    def because(self, trigger: object) -> str:
        """The trigger's message id in words: what the shop did, or the segment entered."""
        if not trigger:
            return "a timer"
        ident = str(trigger)
        if ident in self.triggers:
            return self.triggers[ident]
        if ident.startswith("segment-entered:"):
            return f"entered segment {ident.rsplit(':', 1)[-1]}"
        if ident.startswith("business:"):
            origin = ident.split(":")[1]
            return self.triggers.get(origin, f"business event {origin}")
        return f"event {ident}"

    async def _traces(self, journey: str) -> None:
        after: str | None = None
        while True:
            params = {"limit": "500", **({"after": after} if after else {})}
            body = await self._get(f"/api/journeys/{journey}/instances", **params)
            if body is None:
                return
            for instance in body["instances"]:
                self._trace(journey, instance)
            after = body.get("next_after")
            if not after:
                return

    def _trace(self, journey: str, instance: dict[str, Any]) -> None:
        ident = str(instance["id"])
        profile_id = str(instance["profile_id"])
        if profile_id not in self._profiles:
            return  # a customer the account has not looked up yet: next poll, by name
        lines: list[str] = instance.get("trace") or []
        seen = self._trace_seen.get(ident, 0)
        self._trace_seen[ident] = len(lines)
        who = self.name_of(profile_id)
        for line in lines[seen:]:
            match = _TRACE.match(line)
            if match is None:
                continue
            rest = match["rest"]
            what = rest.split(":", 1)[0].split(" (by ", 1)[0]
            if what not in NOTABLE:
                continue
            step = f" at {match['step']}" if match["step"] else ""
            self.say(
                f"{_clock(match['at'])}  FLOW   {who:<16} {journey}{step}: {_words(rest, 110)}"
            )
