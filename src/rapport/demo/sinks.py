"""Where the demo's messages land: a local SMTP server and an HTTP sink for SMS and push.

Both run in the demo's own event loop on 127.0.0.1 with ports the OS picks.
The mail sink is aiosmtpd speaking real SMTP; the HTTP sink is a small
Starlette app under uvicorn answering as a Twilio-compatible SMS API
(``/2010-04-01/Accounts/{sid}/Messages.json``) and a push gateway
(``/push``). Each keeps what it received, in arrival order, as ``Delivery``
rows the live account reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SMS_ACCOUNT_SID = "AC-demo"
PUSH_PATH = "/push"


@dataclass(frozen=True)
class Delivery:
    """One message as a provider received it."""

    at: datetime
    channel: str
    to: str
    title: str
    """Email subject, push title; empty for SMS."""
    text: str
    """The plain-text body (email text part, SMS body, push body)."""
    provider_id: str
    ref: str = ""
    """The Message-ID header of an email (what the email channel records as the
    provider's id); empty for the others."""


@dataclass
class Inbox:
    """Everything the sinks received, in arrival order."""

    deliveries: list[Delivery] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add(self, channel: str, to: str, title: str, text: str, ref: str = "") -> str:
        provider_id = f"demo-{channel}-{next(self._ids)}"
        self.deliveries.append(
            Delivery(datetime.now(UTC), channel, to, title, text, provider_id, ref)
        )
        return provider_id


class _MailHandler:
    """aiosmtpd handler: every message is accepted and kept."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        raw = getattr(envelope, "original_content", None) or b""
        parsed = message_from_bytes(raw, policy=policy.default)
        text = ""
        if isinstance(parsed, EmailMessage):
            part = parsed.get_body(("plain", "html"))
            if part is not None:
                with contextlib.suppress(LookupError, KeyError, ValueError):
                    text = str(part.get_content())
        rcpts = list(getattr(envelope, "rcpt_tos", []) or [])
        to = str(parsed.get("To") or (rcpts[0] if rcpts else ""))
        subject = str(parsed.get("Subject") or "")
        ref = str(parsed.get("Message-ID") or "")
        provider_id = self.inbox.add("email", to, subject, text, ref)
        return f"250 OK queued as {provider_id}"


@contextlib.asynccontextmanager
async def mail_sink(inbox: Inbox) -> AsyncIterator[int]:
    """A real SMTP server on 127.0.0.1; yields its port."""
    from aiosmtpd.smtp import SMTP

    handler = _MailHandler(inbox)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="mail.demo.test"), "127.0.0.1", 0
    )
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals alone: the demo handles Ctrl-C itself
    and stops every server in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _http_app(inbox: Inbox) -> Starlette:
    async def sms(request: Request) -> Response:
        form = urllib.parse.parse_qs((await request.body()).decode())
        to = form.get("To", [""])[0]
        sid = inbox.add("sms", to, "", form.get("Body", [""])[0])
        return JSONResponse({"sid": sid, "status": "queued"}, status_code=201)

    async def push(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "not JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "not an object"}, status_code=400)
        ident = inbox.add(
            "push", str(body.get("to", "")), str(body.get("title", "")), str(body.get("body", ""))
        )
        return JSONResponse({"id": ident})

    return Starlette(
        routes=[
            Route("/2010-04-01/Accounts/{sid}/Messages.json", sms, methods=["POST"]),
            Route(PUSH_PATH, push, methods=["POST"]),
        ]
    )


@contextlib.asynccontextmanager
async def http_sink(inbox: Inbox) -> AsyncIterator[str]:
    """The SMS API and push gateway on 127.0.0.1; yields its base URL."""
    config = uvicorn.Config(
        _http_app(inbox),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        ws="none",
    )
    server = QuietServer(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the HTTP sink stopped while starting")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
