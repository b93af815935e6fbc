"""Email over SMTP: a MIME message built from the rendered parts, sent with aiosmtplib.

The bytes are written by :mod:`rapport.channels.mime` (ASCII, CRLF, RFC 2047
encoded-words where a header needs them) and handed to ``sendmail`` as they
are: ~30x cheaper than building an ``EmailMessage`` and flattening it
(``benchmarks/email_build.py``).

What a message gets (:func:`build_email`):

* ``multipart/alternative`` with the text part and the HTML part (either
  alone when the template rendered only one);
* ``Message-ID`` derived from the idempotency key, so a resend after a lost
  answer carries the same id and receivers can drop the copy;
* ``List-Unsubscribe`` and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``
  (RFC 8058) when the message has an ``unsubscribe`` link;
* in the HTML: every http(s) ``href`` of a link sent through the signed click
  redirect (not ``mailto:``, anchors or the unsubscribe link), and a 1x1
  open pixel at the end of the body.

Connections are kept open between sends (a few, one transaction each at a
time); a kept connection the server has dropped is replaced once, silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import html
import re
import ssl
from datetime import datetime
from email.headerregistry import Address
from email.utils import getaddresses, parseaddr

import aiosmtplib

from rapport.channels import mime
from rapport.channels.base import (
    DeliveryResult,
    OutgoingMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from rapport.channels.links import LinkSigner, click_url
from rapport.core.clock import Clock
from rapport.runtime.clock import SystemClock

_RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From",
        "To",
        "Subject",
        "Message-ID",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        # Written by the channel, once (RFC 5322 3.6 allows one Date).
        "Date",
        # Never sent: aiosmtplib's send_message dropped them, sendmail would not.
        "Bcc",
        "Resent-Bcc",
    )
)
_ADDRESS_HEADERS = frozenset(("reply-to", "cc", "sender", "resent-from", "resent-to", "resent-cc"))
_ONE_CLICK = mime.structured_field("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
# A dot-atom address (RFC 5322 3.4.1) with an LDH domain: what nearly every
# recipient is, and a form every parser and server accepts as it is.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_SIMPLE_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})*")
_LINK_TAG = re.compile(r"<(?:a|area)\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
TLS_MODES = ("starttls", "tls", "none")


def message_id(idempotency_key: str, domain: str) -> str:
    """The ``Message-ID`` of the message with this key: the same key, the same id."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    return f"<{digest}@{domain}>"


def rewrite_links(html_text: str, signer: LinkSigner, click_base: str, skip: set[str]) -> str:
    """``html_text`` with the http(s) ``href`` of every ``<a>``/``<area>`` tracked.

    The attribute value is HTML-unescaped before it is signed (``&amp;`` in
    the markup is ``&`` in the URL) and escaped again once rewritten.
    """

    def one_href(match: re.Match[str]) -> str:
        raw = next(g for g in (match.group(2), match.group(3), match.group(4)) if g is not None)
        target = html.unescape(raw).strip()
        if not target.lower().startswith(("http://", "https://")) or target in skip:
            return match.group(0)
        tracked = click_url(signer, click_base, target)
        return f'{match.group(1)}"{html.escape(tracked, quote=True)}"'

    def one_tag(match: re.Match[str]) -> str:
        return _HREF.sub(one_href, match.group(0), count=1)

    return _LINK_TAG.sub(one_tag, html_text)


def add_pixel(html_text: str, pixel_url: str) -> str:
    """``html_text`` with the open pixel before ``</body>`` (or at the end)."""
    img = (
        f'<img src="{html.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="border:0;width:1px;height:1px">'
    )
    ends = list(_BODY_END.finditer(html_text))
    if not ends:
        return html_text + img
    at = ends[-1].start()
    return html_text[:at] + img + html_text[at:]


def build_email(
    message: OutgoingMessage, *, sender: str, signer: LinkSigner, now: datetime | None = None
) -> bytes:
    """The message's bytes, ready for ``DATA``; PermanentDeliveryError when it cannot be built."""
    text = message.content.get("text")
    body_html = message.content.get("html")
    if not text and not body_html:
        raise PermanentDeliveryError("the email has neither a text nor an HTML part")
    links = message.links
    unsubscribe = links.get("unsubscribe")
    if body_html:
        if "click" in links:
            body_html = rewrite_links(body_html, signer, links["click"], {unsubscribe or ""})
        if "open" in links:
            body_html = add_pixel(body_html, links["open"])
    try:
        from_field, domain = _from_field(sender)
        fields = [
            from_field,
            mime.address_field("To", [_mailbox(message.to)]),
            mime.text_field("Subject", message.content.get("subject", "")),
            mime.structured_field("Message-ID", message_id(message.idempotency_key, domain)),
        ]
        if now is not None:  # RFC 5322: when it was handed over
            fields.append(mime.structured_field("Date", mime.date_value(now)))
        if unsubscribe:
            fields.append(mime.structured_field("List-Unsubscribe", f"<{unsubscribe}>"))
            fields.append(_ONE_CLICK)
        for name, value in message.headers.items():
            if name.lower() not in _RESERVED_HEADERS:
                fields.append(_extra_field(name, value))
    except mime.MimeError as exc:
        # Line breaks in a header value, an unusable address: no retry can fix it.
        raise PermanentDeliveryError(f"cannot build the email headers: {exc}") from exc
    try:
        return mime.render(fields, text=text, html=body_html)
    except UnicodeEncodeError as exc:  # a lone surrogate has no UTF-8 form
        raise PermanentDeliveryError(f"cannot build the email body: {exc}") from exc


@functools.lru_cache(maxsize=16)
def _from_field(sender: str) -> tuple[str, str]:
    """The ``From`` field for the configured sender and the domain of its
    ``Message-ID``s: the same few senders for every message, parsed once."""
    display_name, address = parseaddr(sender)
    domain = address.rpartition("@")[2] or "rapport.invalid"
    return mime.address_field("From", [(display_name, address)]), domain


def _mailbox(to: str) -> tuple[str, str]:
    """``(display name, address)`` of ``to``; a bare common address skips the parser."""
    if _SIMPLE_ADDRESS.fullmatch(to) is not None:
        return "", to
    return parseaddr(to)


def _extra_field(name: str, value: str) -> str:
    mime.field_name(name)
    if name.lower() in _ADDRESS_HEADERS and not (value.isascii() and value.isprintable()):
        # Non-ASCII display names: each one encoded, the addresses left readable.
        return mime.address_field(name, getaddresses([value]))
    return mime.text_field(name, value)


def _recipient(to: str) -> str:
    _, address = _mailbox(to)
    if "@" not in address or not address.isascii():
        raise PermanentDeliveryError(f"not an email address (ASCII only): {to!r}")
    if _SIMPLE_ADDRESS.fullmatch(address) is not None:
        return address  # the stdlib check below costs ~60 us and accepts all of these
    try:
        Address(addr_spec=address)
    except (ValueError, IndexError) as exc:
        raise PermanentDeliveryError(f"not an email address: {to!r}") from exc
    return address


class EmailChannel:
    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        signer: LinkSigner,
        username: str = "",
        password: str = "",
        tls: str = "starttls",
        timeout: float = 30.0,
        max_connections: int = 16,
        tls_context: ssl.SSLContext | None = None,
        clock: Clock | None = None,
    ) -> None:
        if tls not in TLS_MODES:
            raise ValueError(f"smtp_tls: expected one of {', '.join(TLS_MODES)}, got {tls!r}")
        self.host, self.port = host, port
        self.provider = f"smtp:{host}:{port}"
        self.sender = sender
        self._signer = signer
        self._username, self._password = username, password
        self._tls = tls
        self._timeout = timeout
        self._tls_context = tls_context
        self._clock = clock or SystemClock()
        self.max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[aiosmtplib.SMTP] = []
        _, self._envelope_from = parseaddr(sender)
        self._domain = self._envelope_from.rpartition("@")[2] or "rapport.invalid"

    async def _connect(self) -> aiosmtplib.SMTP:
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self._timeout,
            use_tls=self._tls == "tls",
            # None: upgrade when the server offers STARTTLS; False: never.
            start_tls=None if self._tls == "starttls" else False,
            tls_context=self._tls_context,
        )
        await smtp.connect()
        try:
            if self._username:
                await smtp.login(self._username, self._password)
            if smtp.is_ehlo_or_helo_needed:  # ``_transaction`` speaks MAIL straight away
                await smtp.ehlo()
        except BaseException:
            self._discard(smtp)
            raise
        return smtp

    def _discard(self, smtp: aiosmtplib.SMTP) -> None:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            smtp.close()

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        recipient = _recipient(message.to)
        raw = build_email(message, sender=self.sender, signer=self._signer, now=self._clock.now())
        async with self._slots:
            reused = bool(self._idle)
            try:
                smtp = self._idle.pop() if reused else await self._connect()
            except aiosmtplib.SMTPException as exc:
                raise _delivery_error(exc) from exc
            except OSError as exc:
                raise TransientDeliveryError(f"cannot reach {self.provider}: {exc}") from exc
            try:
                try:
                    reply = await _transaction(smtp, self._envelope_from, recipient, raw)
                except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                    if not reused:
                        raise
                    # A kept connection the server closed while idle: one fresh try.
                    self._discard(smtp)
                    smtp = await self._connect()
                    reply = await _transaction(smtp, self._envelope_from, recipient, raw)
            except (aiosmtplib.SMTPException, OSError) as exc:
                self._discard(smtp)
                raise _delivery_error(exc) from exc
            except BaseException:  # cancelled mid-transaction: the connection is in no known state
                self._discard(smtp)
                raise
            self._idle.append(smtp)
        return DeliveryResult(
            provider_message_id=message_id(message.idempotency_key, self._domain), detail=reply
        )

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for smtp in idle:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()
            self._discard(smtp)


async def _transaction(smtp: aiosmtplib.SMTP, sender: str, recipient: str, raw: bytes) -> str:
    """MAIL, RCPT, DATA for one recipient; the server's answer to DATA.

    What ``SMTP.sendmail`` does, for addresses already checked (``_recipient``,
    the configured sender): ``sendmail`` parses each address twice more with
    the stdlib's address parser, ~80 µs a message, a tenth of the sender's
    CPU per message at a thousand a second. Refusals raise the exceptions
    ``sendmail`` raises (``_delivery_error`` maps them), after an RSET so the
    kept connection starts its next message clean.
    """
    try:
        response = await smtp.execute_command(b"MAIL", b"FROM:<" + sender.encode("ascii") + b">")
        if response.code != 250:
            raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)
        response = await smtp.execute_command(b"RCPT", b"TO:<" + recipient.encode("ascii") + b">")
        if response.code not in (250, 251):
            refused = aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)
            raise aiosmtplib.SMTPRecipientsRefused([refused])
        return (await smtp.data(raw)).message
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await smtp.rset()
        raise


def _delivery_error(
    exc: aiosmtplib.SMTPException | OSError,
) -> TransientDeliveryError | PermanentDeliveryError:
    """What an SMTP failure means: refused for good (5xx on the recipient or the
    content) or worth retrying (4xx, a lost connection, a timeout, a 5xx on
    login or the sender, which is our configuration, not this message)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        if codes and all(500 <= c < 600 for c in codes):
            return PermanentDeliveryError(f"recipient refused: {detail}")
        return TransientDeliveryError(f"recipient deferred: {detail}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        detail = f"{exc.code} {exc.message}"
        permanent = isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError)
        if permanent and 500 <= exc.code < 600:
            return PermanentDeliveryError(f"refused: {detail}")
        return TransientDeliveryError(f"SMTP {detail}")
    return TransientDeliveryError(f"SMTP connection failed: {type(exc).__name__}: {exc}")
