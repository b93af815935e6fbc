"""Real local providers for tests: an aiosmtpd SMTP server and a recording HTTP server.

Both run in the test's event loop on 127.0.0.1 with a port the OS picks, so
channels talk to them over real sockets. ``smtp_server()`` and
``http_provider()`` are async context managers; the channel tests and the
customer stories use them as fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# -- SMTP -------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class MailSink:
    """aiosmtpd handler: keeps what arrives; recipients containing ``defer`` get 451,
    ``reject`` get 550; a sender containing ``blocked`` gets 553 on MAIL; a message
    whose subject contains ``spam`` gets 554 on DATA."""

    def __init__(self) -> None:
        self.received: list[Received] = []

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if "blocked" in address:
            return "553 5.7.1 sender not allowed"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if "reject" in address:
            return "550 5.1.1 no such mailbox"
        if "defer" in address:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        if "spam" in str(parsed["Subject"]):
            return "554 5.7.1 message refused as spam"
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), parsed))
        return f"250 OK queued as q{len(self.received)}"


@dataclass
class SmtpServer:
    sink: MailSink
    port: int
    connections: list[SMTP]
    server: asyncio.Server

    def drop_connections(self) -> None:
        """Close every open connection from the server side (as an idle timeout would)."""
        for protocol in self.connections:
            if protocol.transport is not None:
                protocol.transport.close()


@contextlib.asynccontextmanager
async def smtp_server() -> AsyncIterator[SmtpServer]:
    sink = MailSink()
    connections: list[SMTP] = []

    def factory() -> SMTP:
        protocol = SMTP(sink, hostname="mail.test")
        connections.append(protocol)
        return protocol

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield SmtpServer(sink, port, connections, server)
    finally:
        server.close()
        for protocol in connections:
            if protocol.transport is not None:
                protocol.transport.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)


# -- HTTP -------------------------------------------------------------------


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpProvider:
    """An HTTP server that records every request and answers what it is told."""

    base_url: str = ""
    hits: list[Hit] = field(default_factory=list)
    answer: Callable[[Hit], Response] = lambda hit: JSONResponse({"id": "ok"})
    delay: float = 0.0

    async def endpoint(self, request: Request) -> Response:
        hit = Hit(
            request.method,
            request.url.path,
            {k.lower(): v for k, v in request.headers.items()},
            await request.body(),
        )
        self.hits.append(hit)
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.answer(hit)


@contextlib.asynccontextmanager
async def http_provider() -> AsyncIterator[HttpProvider]:
    provider = HttpProvider()
    app = Starlette(routes=[Route("/{path:path}", provider.endpoint, methods=["POST", "GET"])])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        ws="none",
        date_header=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "the HTTP provider did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    provider.base_url = f"http://127.0.0.1:{port}"
    try:
        yield provider
    finally:
        server.should_exit = True
        await task


def json_answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)
