"""A customer story as a test: Rapport through its public surfaces, on a virtual clock.

One ``Scenario`` is a started Rapport on a SQLite data dir whose clock only
moves when the test says so, an HTTP client on its API, and helpers that use
nothing but that API:

* ``apply(kind, definition)``: a segment, computed trait, template or
  journey (published at once), as a dict (JSON) or YAML text (journeys);
* ``track`` / ``identify``: events in through ``/v1/batch``, with the write
  key, or the secret key for a server-side source (``server=True``);
* ``advance(delta)``: move the clock, stopping at every due timer on the
  way, so a chain of waits fires at the instants it names;
* ``effects()``: every send effect the journeys produced, read from the
  outbox with the policy gate's verdict; ``sent()``: those the gate let go.

Delivery is real: the Rapport under test talks SMTP to an aiosmtpd server
and HTTP to a recording server standing in for a Twilio-compatible SMS API
and a push gateway, all on loopback (``tests.providers``). ``mails()``,
``texts()`` and ``pushes()`` read what they actually received. Links in
messages point at the API client's base URL, so a test can follow them
(``follow``) as the customer's mail client would.
"""

from __future__ import annotations

import asyncio
import email.message
import itertools
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from starlette.responses import JSONResponse, Response

from rapport.api.app import create_app
from rapport.core.clock import VirtualClock
from rapport.core.journeys.effects import SendEffect
from rapport.runtime.service import DEFAULT_WORKSPACE, Rapport
from rapport.settings import load_settings
from tests.providers import Hit, HttpProvider, SmtpServer, http_provider, smtp_server

PUBLIC_URL = "http://rapport.test"
SMS_SID = "AC-scenario"

KINDS = {
    "segment": "/api/segments",
    "computed_trait": "/api/computed-traits",
    "template": "/api/templates",
    "journey": "/api/journeys",
}
"""What ``apply`` can define, and where."""


@dataclass(frozen=True)
class Sent:
    """One send effect as the outbox holds it: what a channel is asked to deliver."""

    idempotency_key: str
    profile_id: str
    journey_id: str
    step_id: str
    channels: tuple[str, ...]
    template: str
    topic: str | None
    category: str
    data: dict[str, Any]
    created_at: datetime
    status: str
    """The outbox status: ``pending`` (for a sender), ``sent``, ``dropped`` by the gate..."""
    gate: str | None
    """The policy gate's outcome (``send``, ``defer``, ``drop``); None if it did not decide."""
    channel: str | None
    """The channel the gate chose among ``channels``."""
    address: str | None
    reason: str
    """Why the gate dropped or deferred it (empty when it goes)."""


class Scenario:
    """A running Rapport, its API client and a virtual clock (see the module docstring)."""

    def __init__(
        self,
        rapport: Rapport,
        client: httpx.AsyncClient,
        clock: VirtualClock,
        write_key: str,
        secret_key: str,
        workspace_id: str,
        smtp: SmtpServer,
        http: HttpProvider,
    ) -> None:
        self.smtp = smtp
        self.http = http
        self.rapport = rapport
        self.client = client
        self.clock = clock
        self.write_key = write_key
        self.secret_key = secret_key
        self.workspace_id = workspace_id
        self._ids = itertools.count(1)

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret_key}"}

    @property
    def now(self) -> datetime:
        return self.clock.now()

    # -- definitions ----------------------------------------------------------
    async def apply(self, kind: str, definition: Mapping[str, Any] | str) -> dict[str, Any]:
        """Save a definition through the admin API (a journey is also published)."""
        base = KINDS[kind]
        if isinstance(definition, str):
            ident = yaml.safe_load(definition)["id"]
            response = await self.client.put(
                f"{base}/{ident}",
                content=definition.encode(),
                headers={**self.admin, "Content-Type": "application/yaml"},
            )
        else:
            ident = definition["id"]
            body = {k: v for k, v in definition.items() if k != "id"}
            response = await self.client.put(f"{base}/{ident}", json=body, headers=self.admin)
        assert response.status_code in (200, 201), response.text
        if kind == "journey":
            response = await self.client.post(f"{base}/{ident}/publish", headers=self.admin)
            assert response.status_code == 200, response.text
        await self.settle()
        answer: dict[str, Any] = response.json()
        return answer

    async def policy(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the workspace's messaging policy (``PUT /api/policy``)."""
        response = await self.client.put("/api/policy", json=dict(document), headers=self.admin)
        assert response.status_code in (200, 201), response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def code_pool(self, pool_id: str, codes: list[str]) -> None:
        """A promo code pool with ``codes`` (``POST /api/code-pools``, then its codes)."""
        response = await self.client.post(
            "/api/code-pools", json={"id": pool_id}, headers=self.admin
        )
        assert response.status_code == 201, response.text
        response = await self.client.post(
            f"/api/code-pools/{pool_id}/codes", json=codes, headers=self.admin
        )
        assert response.status_code == 200, response.text

    async def messages(self, user: str) -> list[dict[str, Any]]:
        """Her messages as ``GET /api/profiles/{ref}/messages`` answers ("why did she get it")."""
        response = await self.client.get(
            f"/api/profiles/user_id:{user}/messages", headers=self.admin
        )
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["messages"]
        return found

    async def apply_file(self, kind: str, path: Path) -> dict[str, Any]:
        return await self.apply(kind, await asyncio.to_thread(path.read_text))

    # -- events ---------------------------------------------------------------
    async def send(self, event: dict[str, Any], *, server: bool = False) -> None:
        """One event through ``/v1/batch``, then wait until it (and what it caused) is done."""
        event.setdefault("messageId", f"scenario-{next(self._ids)}")
        event.setdefault("timestamp", self.now.isoformat())
        key = self.secret_key if server else self.write_key
        response = await self.client.post(
            "/v1/batch", json={"batch": [event]}, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200, response.text
        assert not response.json().get("rejected"), response.text
        await self.settle()

    async def track(
        self,
        user: str,
        name: str,
        properties: Mapping[str, Any] | None = None,
        *,
        server: bool = False,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        event: dict[str, Any] = {"type": "track", "event": name, "userId": user}
        event["properties"] = dict(properties or {})
        if context:
            event["context"] = dict(context)
        await self.send(event, server=server)

    async def identify(
        self,
        user: str,
        traits: Mapping[str, Any] | None = None,
        *,
        server: bool = False,
        consent: Mapping[str, bool] | None = None,
    ) -> None:
        event: dict[str, Any] = {"type": "identify", "userId": user, "traits": dict(traits or {})}
        if consent:
            event["context"] = {"consent": {"categoryPreferences": dict(consent)}}
        await self.send(event, server=server)

    async def business_event(self, name: str, properties: Mapping[str, Any]) -> None:
        """An event about the business (``POST /v1/business-events``, secret key),
        then wait until it has fanned out and everything it caused is processed."""
        body = {"event": name, "messageId": f"business-{next(self._ids)}"}
        body["timestamp"] = self.now.isoformat()
        response = await self.client.post(
            "/v1/business-events", json={**body, "properties": dict(properties)}, headers=self.admin
        )
        assert response.status_code == 200, response.text
        await self.settle()

    # -- time -----------------------------------------------------------------
    async def settle(self) -> None:
        assert await self.rapport.settle(10.0), "processing stalled"

    async def advance(self, delta: timedelta) -> None:
        """Move the clock by ``delta``, delivering each timer at its own instant."""
        target = self.now + delta
        await self.settle()
        while True:
            due = await self.rapport.storage.next_scheduled_at()
            if due is None or due > target:
                break
            if due > self.now:
                self.clock.set(due)
            await self.settle()
        self.clock.set(target)
        await self.settle()

    async def advance_to(self, when: datetime) -> None:
        await self.advance(when - self.now)

    # -- what the channels delivered ---------------------------------------------
    def mails(self, to: str | None = None) -> list[email.message.EmailMessage]:
        """Mail the SMTP server accepted (for ``to``), in arrival order."""
        return [r.message for r in self.smtp.sink.received if to is None or to in r.rcpt_tos]

    def texts(self, to: str | None = None) -> list[dict[str, str]]:
        """SMS the Twilio-compatible API received (its form fields), in arrival order."""
        found = []
        for hit in self.http.hits:
            if hit.path.endswith("/Messages.json"):
                form = dict(urllib.parse.parse_qsl(hit.body.decode()))
                if to is None or form.get("To") == to:
                    found.append(form)
        return found

    def pushes(self) -> list[Hit]:
        return [hit for hit in self.http.hits if hit.path == "/push"]

    async def follow(self, url: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
        """Open a link from a message (it points at the API client's base URL)."""
        assert url.startswith(PUBLIC_URL), url
        response = await self.client.request(method, url.removeprefix(PUBLIC_URL), **kwargs)
        await self.settle()
        return response

    # -- what happened ----------------------------------------------------------
    async def sent(self, user: str | None = None) -> list[Sent]:
        """The send effects the policy gate let go (sent, or to be sent), oldest first."""
        return [m for m in await self.effects(user) if m.status != "dropped"]

    async def effects(self, user: str | None = None) -> list[Sent]:
        """Every send effect in the outbox (whatever its status), oldest first.

        The outbox is found through the journeys' instances (the API): each
        step visit's idempotency key is ``journey:<instance>:<step>:<visit>``,
        so a message the gate has since marked is found too, with the effect
        whole (channel preferences and ``data``, which the messages API
        does not answer).
        """
        profile = await self.profile_id(user) if user is not None else None
        response = await self.client.get("/api/journeys", headers=self.admin)
        assert response.status_code == 200, response.text
        keys: set[str] = set()
        for journey in (j["id"] for j in response.json()["journeys"]):
            for instance in await self.instances(journey):
                for step, visits in instance["visits"].items():
                    keys.update(
                        f"journey:{instance['id']}:{step}:{n}" for n in range(1, visits + 1)
                    )
        found: list[Sent] = []
        for key in keys:
            message = await self.rapport.storage.get_outbox(self.workspace_id, key)
            if message is None or not isinstance(message.effect, SendEffect):
                continue
            if profile is not None and message.profile_id != profile:
                continue
            effect, verdict = message.effect, message.verdict
            found.append(
                Sent(
                    idempotency_key=message.idempotency_key,
                    profile_id=message.profile_id,
                    journey_id=effect.journey_id,
                    step_id=effect.step_id,
                    channels=effect.channels,
                    template=effect.template,
                    topic=effect.topic,
                    category=effect.category,
                    data=dict(effect.data),
                    created_at=message.created_at,
                    status=message.status,
                    gate=verdict.outcome if verdict is not None else None,
                    channel=verdict.channel if verdict is not None else None,
                    address=verdict.address if verdict is not None else None,
                    reason=verdict.reason if verdict is not None else "",
                )
            )
        return sorted(found, key=lambda s: (s.created_at, s.idempotency_key))

    async def instances(self, journey: str) -> list[dict[str, Any]]:
        """Every instance of a journey, as the admin API answers, with its trace."""
        found: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params = {"limit": "500", **({"after": after} if after else {})}
            response = await self.client.get(
                f"/api/journeys/{journey}/instances", params=params, headers=self.admin
            )
            assert response.status_code == 200, response.text
            body = response.json()
            found.extend(body["instances"])
            after = body["next_after"]
            if after is None:
                return found

    async def instance(self, journey: str, user: str) -> dict[str, Any]:
        """Her latest instance of the journey."""
        profile = await self.profile_id(user)
        mine = [i for i in await self.instances(journey) if i["profile_id"] == profile]
        assert mine, f"{user} has no instance of {journey}"
        return max(mine, key=lambda i: i["entered_at"])

    async def profile(self, user: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/profiles/user_id:{user}", headers=self.admin)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def profile_id(self, user: str) -> str:
        return str((await self.profile(user))["id"])

    async def traits(self, user: str) -> dict[str, Any]:
        """Her traits as plain values."""
        return {k: v["value"] for k, v in (await self.profile(user))["traits"].items()}

    async def customer(
        self, user: str, traits: Mapping[str, Any], *, consent: Mapping[str, bool] | None = None
    ) -> None:
        """A customer as the shop's backend knows her (server-side: her addresses are
        trusted), who agreed to marketing unless ``consent`` says otherwise."""
        await self.identify(
            user, traits, server=True, consent={"marketing": True, **(consent or {})}
        )

    async def patch_traits(self, user: str, traits: Mapping[str, Any]) -> dict[str, Any]:
        """What an agent does in the console: set traits through the admin API."""
        response = await self.client.patch(
            f"/api/profiles/user_id:{user}/traits",
            json={"traits": dict(traits)},
            headers=self.admin,
        )
        assert response.status_code == 200, response.text
        await self.settle()
        body: dict[str, Any] = response.json()
        return body

    async def preview(
        self, template: str, user: str, journey: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The template rendered for her as a send would render it now."""
        body: dict[str, Any] = {"profile": f"user_id:{user}", "journey": dict(journey or {})}
        response = await self.client.post(
            f"/api/templates/{template}/preview", json=body, headers=self.admin
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        assert answer["status"] == "rendered", answer
        return answer


def _provider_answer(hit: Hit) -> Response:
    if hit.path.endswith("/Messages.json"):
        return JSONResponse({"sid": f"SM{len(hit.body):06d}{abs(hash(hit.body)) % 10**8:08d}"})
    return JSONResponse({"id": "accepted"})


@asynccontextmanager
async def open_scenario(tmp: Path, start: datetime, **overrides: Any) -> AsyncIterator[Scenario]:
    """A started Rapport on ``tmp/data`` (SQLite) with its clock at ``start``, delivering
    to a real SMTP server and a real HTTP server (SMS API and push gateway) on loopback.

    ``overrides`` are added to (or replace) the harness's own settings (a story that needs
    consent-required events, another identifier trait...)."""
    clock = VirtualClock(start)
    async with smtp_server() as smtp, http_provider() as http:
        http.answer = _provider_answer
        settings = load_settings(
            {
                "data_dir": str(tmp / "data"),
                "sqlite_synchronous": "OFF",
                "public_url": PUBLIC_URL,
                "smtp_host": "127.0.0.1",
                "smtp_port": smtp.port,
                "smtp_tls": "none",
                "email_from": "Rapport Shop <shop@rapport.test>",
                "sms_base_url": http.base_url,
                "sms_account_sid": SMS_SID,
                "sms_auth_token": "token",
                "sms_from": "+15550001111",
                "push_gateway_url": f"{http.base_url}/push",
                **overrides,
            },
            environ={},
        )
        runtime = await Rapport.open(settings, clock=clock)
        await runtime.start()
        client: httpx.AsyncClient | None = None
        try:
            write_key = await runtime.create_key("write")
            secret_key = await runtime.create_key("secret")
            workspace = await runtime.storage.find_workspace(DEFAULT_WORKSPACE)
            assert workspace is not None
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(runtime)), base_url=PUBLIC_URL
            )
            yield Scenario(runtime, client, clock, write_key, secret_key, workspace.id, smtp, http)
        finally:
            if client is not None:
                await client.aclose()
            await runtime.close()
