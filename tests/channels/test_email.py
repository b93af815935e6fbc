"""The email channel against a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

import asyncio
import re
import socket
import warnings
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from rapport.channels.base import OutgoingMessage, PermanentDeliveryError, TransientDeliveryError
from rapport.channels.email import EmailChannel, build_email, message_id
from rapport.channels.links import LinkSigner, message_links
from tests.providers import MailSink, SmtpServer

PUBLIC = "https://rapport.example.com"
HTML = """<html><body>
<p>Hello Dana, <a href="https://shop.example.com/shoes?a=1&amp;b=2">new shoes</a>.</p>
<p><a class="x" href='http://shop.example.com/plain'>plain</a>
<a href="mailto:help@example.com">mail us</a> <a href="#top">top</a>
<A HREF=https://shop.example.com/bare>bare</A>
<a href="{unsubscribe}">unsubscribe</a></p>
<link href="https://cdn.example.com/style.css" rel="stylesheet">
</body></html>"""


def channel(server: SmtpServer, signer: LinkSigner, **kwargs: object) -> EmailChannel:
    return EmailChannel(
        "127.0.0.1",
        server.port,
        sender="Shop <news@shop.example.com>",
        signer=signer,
        tls="none",
        timeout=5,
        **kwargs,  # type: ignore[arg-type]
    )


def outgoing(
    signer: LinkSigner, key: str = "msg-1", to: str = "dana@example.com", **kwargs: object
) -> OutgoingMessage:
    links = message_links(
        signer,
        PUBLIC,
        workspace_id="ws_1",
        profile_id="prof_1",
        idempotency_key=key,
        channel="email",
        topic="news",
    )
    fields: dict[str, object] = {
        "idempotency_key": key,
        "workspace_id": "ws_1",
        "profile_id": "prof_1",
        "channel": "email",
        "to": to,
        "topic": "news",
        "content": {
            "subject": "Shoes for you",
            "text": "Hello Dana, new shoes: https://shop.example.com/shoes",
            "html": HTML.format(unsubscribe=links["unsubscribe"]),
        },
        "links": links,
        "headers": {"X-Campaign": "autumn", "Subject": "must not override"},
    }
    fields.update(kwargs)
    return OutgoingMessage(**fields)  # type: ignore[arg-type]


def parts(mail: EmailMessage) -> tuple[str, str]:
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def hrefs(html: str) -> list[str]:
    return re.findall(r"""href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", html, re.I)


async def test_headers_parts_tracked_links_and_pixel(
    smtp_server: SmtpServer, signer: LinkSigner
) -> None:
    email = channel(smtp_server, signer)
    message = outgoing(signer)
    try:
        result = await email.send(message)
    finally:
        await email.close()

    [received] = smtp_server.sink.received
    assert received.mail_from == "news@shop.example.com"
    assert received.rcpt_tos == ["dana@example.com"]
    mail = received.message
    assert mail["From"] == "Shop <news@shop.example.com>"
    assert mail["To"] == "dana@example.com"
    assert mail["Subject"] == "Shoes for you"
    assert mail["X-Campaign"] == "autumn"
    assert mail["Message-ID"] == message_id("msg-1", "shop.example.com")
    assert result.provider_message_id == mail["Message-ID"]
    assert result.detail is not None and "queued as q1" in result.detail
    assert mail["List-Unsubscribe"] == f"<{message.links['unsubscribe']}>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.get_content_type() == "multipart/alternative"
    text, html = parts(mail)
    assert text.strip() == "Hello Dana, new shoes: https://shop.example.com/shoes"

    click_base = message.links["click"]
    click_token = click_base.rsplit("/", 1)[-1]
    targets = []
    untouched = []
    for groups in hrefs(html):
        href = next(g for g in groups if g).replace("&amp;", "&")
        if href.startswith(click_base + "?"):
            query = parse_qs(urlsplit(href).query)
            target, signature = query["u"][0], query["s"][0]
            assert signer.verify_target(click_token, target, signature)
            targets.append(target)
        else:
            untouched.append(href)
    assert targets == [
        "https://shop.example.com/shoes?a=1&b=2",
        "http://shop.example.com/plain",
        "https://shop.example.com/bare",
    ]
    assert untouched == [
        "mailto:help@example.com",
        "#top",
        message.links["unsubscribe"],
        "https://cdn.example.com/style.css",
    ]
    pixel = f'<img src="{message.links["open"]}"'
    assert pixel in html
    assert html.index(pixel) < html.lower().index("</body>")


async def test_message_id_is_stable_per_key_and_the_connection_is_reused(
    smtp_server: SmtpServer, signer: LinkSigner
) -> None:
    email = channel(smtp_server, signer)
    try:
        await email.send(outgoing(signer, key="k-1"))
        await email.send(outgoing(signer, key="k-1"))
        await email.send(outgoing(signer, key="k-2"))
    finally:
        await email.close()
    ids = [r.message["Message-ID"] for r in smtp_server.sink.received]
    assert ids[0] == ids[1] != ids[2]
    assert re.fullmatch(r"<[0-9a-f]{40}@shop\.example\.com>", ids[0])
    assert len(smtp_server.connections) == 1


async def test_a_connection_dropped_by_the_server_is_replaced(
    smtp_server: SmtpServer, signer: LinkSigner
) -> None:
    email = channel(smtp_server, signer)
    try:
        await email.send(outgoing(signer, key="a"))
        smtp_server.drop_connections()
        await email.send(outgoing(signer, key="b"))
    finally:
        await email.close()
    assert [r.message["Message-ID"] for r in smtp_server.sink.received] == [
        message_id("a", "shop.example.com"),
        message_id("b", "shop.example.com"),
    ]
    assert len(smtp_server.connections) == 2


async def test_text_only_without_links(smtp_server: SmtpServer, signer: LinkSigner) -> None:
    email = channel(smtp_server, signer)
    try:
        await email.send(
            outgoing(signer, links={}, content={"subject": "Receipt", "text": "Thanks"})
        )
    finally:
        await email.close()
    [received] = smtp_server.sink.received
    assert received.message.get_content_type() == "text/plain"
    assert received.message["List-Unsubscribe"] is None
    assert received.message["List-Unsubscribe-Post"] is None


async def test_451_is_transient_550_is_permanent(
    smtp_server: SmtpServer, signer: LinkSigner
) -> None:
    email = channel(smtp_server, signer)
    try:
        with pytest.raises(TransientDeliveryError, match="451"):
            await email.send(outgoing(signer, to="defer@example.com"))
        with pytest.raises(PermanentDeliveryError, match="550"):
            await email.send(outgoing(signer, to="reject@example.com"))
        # The channel still works after refusals.
        await email.send(outgoing(signer))
    finally:
        await email.close()
    assert [r.rcpt_tos for r in smtp_server.sink.received] == [["dana@example.com"]]


async def test_refused_sender_is_transient_refused_content_permanent(
    smtp_server: SmtpServer, signer: LinkSigner
) -> None:
    """A refused MAIL is our configuration (retried once fixed), a refused DATA this
    message; after either the kept connection sends the next message cleanly."""
    blocked = EmailChannel(
        "127.0.0.1", smtp_server.port, sender="blocked@shop.example.com", signer=signer, tls="none"
    )
    email = channel(smtp_server, signer)
    try:
        with pytest.raises(TransientDeliveryError, match="553"):
            await blocked.send(outgoing(signer))
        spam = outgoing(signer)
        spam = msgspec.structs.replace(spam, content={**spam.content, "subject": "spam offer"})
        with pytest.raises(PermanentDeliveryError, match="554"):
            await email.send(spam)
        await email.send(outgoing(signer))
    finally:
        await email.close()
        await blocked.close()
    [received] = smtp_server.sink.received
    assert received.mail_from == "news@shop.example.com"
    assert received.rcpt_tos == ["dana@example.com"]


async def test_server_down_is_transient(signer: LinkSigner) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    email = EmailChannel(
        "127.0.0.1", port, sender="news@shop.example.com", signer=signer, tls="none", timeout=2
    )
    try:
        with pytest.raises(TransientDeliveryError):
            await email.send(outgoing(signer))
    finally:
        await email.close()


async def test_unsendable_messages_are_permanent(
    smtp_server: SmtpServer, signer: LinkSigner
) -> None:
    email = channel(smtp_server, signer)
    try:
        with pytest.raises(PermanentDeliveryError, match="email address"):
            await email.send(outgoing(signer, to="not an address"))
        with pytest.raises(PermanentDeliveryError, match="neither"):
            await email.send(outgoing(signer, content={"subject": "empty"}))
        with pytest.raises(PermanentDeliveryError, match="headers"):
            await email.send(outgoing(signer, headers={"X-Bad": "a\r\nBcc: victim@example.com"}))
    finally:
        await email.close()
    assert smtp_server.sink.received == []


# aiosmtpd's own AUTH path touches an attribute it deprecated.
@pytest.mark.filterwarnings("ignore:Session.login_data is deprecated:DeprecationWarning")
async def test_login_when_a_username_is_set(signer: LinkSigner) -> None:
    sink = MailSink()

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"shop", b"pw")
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535

    connections: list[SMTP] = []

    def factory() -> SMTP:
        # aiosmtpd warns about AUTH without TLS; on loopback in a test that is the point.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            protocol = SMTP(
                sink, auth_required=True, auth_require_tls=False, authenticator=authenticate
            )
        connections.append(protocol)
        return protocol

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def login_as(password: str) -> EmailChannel:
        # starttls (the default) sends in clear when the server offers no STARTTLS.
        return EmailChannel(
            "127.0.0.1",
            port,
            sender="news@shop.example.com",
            signer=signer,
            username="shop",
            password=password,
            timeout=5,
        )

    good, bad = login_as("pw"), login_as("wrong")
    try:
        await good.send(outgoing(signer))
        with pytest.raises(TransientDeliveryError, match="535"):
            await bad.send(outgoing(signer))
    finally:
        await good.close()
        await bad.close()
        server.close()
        for protocol in connections:
            if protocol.transport is not None:
                protocol.transport.close()
        await server.wait_closed()
    assert len(sink.received) == 1


async def test_non_ascii_dot_lines_and_headers_arrive_intact(
    smtp_server: SmtpServer, signer: LinkSigner
) -> None:
    email = EmailChannel(
        "127.0.0.1",
        smtp_server.port,
        sender="Boutique Hélène <news@shop.example.com>",
        signer=signer,
        tls="none",
        timeout=5,
    )
    # Lines starting with a dot: aiosmtplib doubles them in DATA, the server undoes it.
    text = ".\n..\n.hidden line\nFrom here on, Grüße\r\nlast line  "
    html = "<p>Привет, Дана</p>\n.<br>\n" + "<span>é</span>" * 200
    message = outgoing(
        signer,
        to="Dana Ünlü <dana@example.com>",
        content={"subject": "Nouveautés — скидки", "text": text, "html": html},
        headers={
            "Reply-To": "Service Clientèle <help@shop.example.com>",
            "X-Note": "ça va",
            "Bcc": "hidden@example.com",
            "Date": "Mon, 1 Jan 2001 00:00:00 +0000",
        },
    )
    try:
        await email.send(message)
    finally:
        await email.close()
    [received] = smtp_server.sink.received
    mail = received.message
    assert received.rcpt_tos == ["dana@example.com"]
    assert mail["Subject"] == "Nouveautés — скидки"
    assert (mail["From"].addresses[0].display_name, mail["From"].addresses[0].addr_spec) == (
        "Boutique Hélène",
        "news@shop.example.com",
    )
    assert mail["To"].addresses[0].display_name == "Dana Ünlü"
    assert mail["Reply-To"].addresses[0].display_name == "Service Clientèle"
    assert mail["X-Note"] == "ça va"
    assert mail["Bcc"] is None
    assert mail.get_all("Date") is not None and len(mail.get_all("Date")) == 1
    assert "2001" not in mail["Date"]
    sent_text, sent_html = parts(mail)
    assert (
        sent_text.replace("\r\n", "\n") == ".\n..\n.hidden line\nFrom here on, Grüße\nlast line  \n"
    )
    assert sent_html.replace("\r\n", "\n").startswith("<p>Привет, Дана</p>\n.<br>\n<span>é</span>")


def test_build_email_writes_ascii_crlf_bytes(signer: LinkSigner) -> None:
    now = datetime(2026, 11, 22, 21, 30, tzinfo=UTC)
    raw = build_email(
        outgoing(signer), sender="Shop <news@shop.example.com>", signer=signer, now=now
    )
    assert raw.isascii() and b"\n" not in raw.replace(b"\r\n", b"")
    mail = message_from_bytes(raw, policy=policy.default)
    assert mail["Date"] == "Sun, 22 Nov 2026 21:30:00 +0000"
    assert mail["Message-ID"] == message_id("msg-1", "shop.example.com")
    assert mail["MIME-Version"] == "1.0"
    assert mail["Subject"] == "Shoes for you"  # not the "Subject" of message.headers


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"headers": {"X Bad": "v"}}, "header name"),
        ({"headers": {"X-Bad": "a\u2028b"}}, "line break"),
        ({"content": {"subject": "a\nBcc: x@example.com", "text": "t"}}, "line break"),
        ({"to": "Dana <dänä@example.com>"}, "address"),
    ],
)
def test_build_email_refuses_what_could_inject_or_cannot_be_ascii(
    signer: LinkSigner, change: dict[str, object], match: str
) -> None:
    with pytest.raises(PermanentDeliveryError, match=match):
        build_email(outgoing(signer, **change), sender="news@shop.example.com", signer=signer)


async def test_a_non_ascii_recipient_is_permanent(
    smtp_server: SmtpServer, signer: LinkSigner
) -> None:
    email = channel(smtp_server, signer)
    try:
        with pytest.raises(PermanentDeliveryError, match="email address"):
            await email.send(outgoing(signer, to="dänä@example.com"))
    finally:
        await email.close()
    assert smtp_server.sink.received == []
