"""CPU cost of one email's bytes: the stdlib path the sender used vs ``rapport.channels.mime``.

Per message, in the same process, rounds interleaved (stdlib, mime, stdlib,
mime...) and the median round reported, because this machine is shared:

a. **stdlib** — what ``EmailChannel.send`` did before: an ``EmailMessage``
   with ``email.policy.default`` (and the header-class cache it had), the
   same headers, ``set_content`` / ``add_alternative``, then aiosmtplib's
   ``flatten_message`` as ``send_message`` calls it (``8bit`` allowed, the
   server offers 8BITMIME);
b. **mime** — :func:`rapport.channels.mime.render` with the same fields;
c. **build_email** — the channel's whole build with the new writer: the
   address checks, click-tracking rewrite of the HTML links, the open pixel
   and the bytes (a and b start from the already rewritten HTML).

Two messages: an English one (ASCII; 7bit text, quoted-printable HTML for its
long lines) and a French/Russian one (encoded-words in the subject and the
display name, quoted-printable and base64 bodies).

Usage: ``python benchmarks/email_build.py [--messages 2000] [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email import message_from_bytes
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime

from aiosmtplib.email import flatten_message

from rapport.channels import mime
from rapport.channels.base import OutgoingMessage
from rapport.channels.email import add_pixel, build_email, message_id, rewrite_links
from rapport.channels.links import LinkSigner, message_links

SENDER = "Shop <news@shop.example.com>"
NOW = datetime(2026, 11, 22, 21, 0, tzinfo=UTC)
HTML = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body style="margin:0;padding:0;font-family:Helvetica,Arial,sans-serif;background:#f4f4f4">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr><td align="center">
<h1 style="font-size:22px">{title}</h1>
<p>{greeting}, <a href="https://shop.example.com/shoes?a=1&amp;b=2">{cta}</a>.</p>
<p><a href="https://shop.example.com/boots">Boots</a> · <a href="https://shop.example.com/sale">Sale</a></p>
<p style="color:#666;font-size:12px">{footer}
<a href="{unsubscribe}">unsubscribe</a></p>
</td></tr></table></body></html>"""
CONTENT = {
    "english": {
        "subject": "New shoes for the autumn, picked for you",
        "title": "Autumn collection",
        "greeting": "Hello Dana",
        "cta": "see the new shoes",
        "footer": "You receive this because you subscribed to our news at shop.example.com.",
        "to": "dana@example.com",
    },
    "french/russian": {
        "subject": "Nouvelles chaussures pour l'automne — Новая коллекция",
        "title": "Collection d'automne",
        "greeting": "Bonjour Hélène, Привет",
        "cta": "découvrez les nouveautés",
        "footer": "Вы получили это письмо, потому что подписались на новости магазина.",
        "to": "Hélène Lefèvre <helene@example.com>",
    },
}


class _CachedHeaderRegistry(HeaderRegistry):
    """The header-class cache the old ``build_email`` had (without it: ~5 ms a message)."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        found = self._classes.get(key)
        if found is None:
            found = self._classes[key] = super().__getitem__(key)
        return found


_POLICY = default_policy.clone(header_factory=_CachedHeaderRegistry())


def outgoing(signer: LinkSigner, words: dict[str, str]) -> OutgoingMessage:
    links = message_links(
        signer,
        "https://rapport.example.com",
        workspace_id="ws_1",
        profile_id="prof_1",
        idempotency_key="msg-1",
        channel="email",
        topic="news",
    )
    html = HTML.format(unsubscribe=links["unsubscribe"], **words)
    text = f"{words['greeting']},\n\n{words['cta']}: https://shop.example.com/shoes\n\n{words['footer']}\n"
    return OutgoingMessage(
        idempotency_key="msg-1",
        workspace_id="ws_1",
        profile_id="prof_1",
        channel="email",
        to=words["to"],
        content={"subject": words["subject"], "text": text, "html": html},
        links=links,
        headers={"X-Campaign": "autumn"},
    )


def stdlib_bytes(message: OutgoingMessage, html: str) -> bytes:
    email = EmailMessage(policy=_POLICY)
    email["From"] = SENDER
    email["To"] = message.to
    email["Subject"] = message.content["subject"]
    email["Message-ID"] = message_id(message.idempotency_key, "shop.example.com")
    email["Date"] = format_datetime(NOW)
    email["List-Unsubscribe"] = f"<{message.links['unsubscribe']}>"
    email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in message.headers.items():
        email[name] = value
    email.set_content(message.content["text"])
    email.add_alternative(html, subtype="html")
    return flatten_message(email, utf8=False, cte_type="8bit")


def mime_bytes(message: OutgoingMessage, html: str) -> bytes:
    to = message.to
    display_name, _, address = to.rpartition(" <") if "<" in to else ("", "", to)
    fields = [
        mime.address_field("From", [("Shop", "news@shop.example.com")]),
        mime.address_field("To", [(display_name, address.rstrip(">"))]),
        mime.text_field("Subject", message.content["subject"]),
        mime.structured_field(
            "Message-ID", message_id(message.idempotency_key, "shop.example.com")
        ),
        mime.structured_field("Date", mime.date_value(NOW)),
        mime.structured_field("List-Unsubscribe", f"<{message.links['unsubscribe']}>"),
        mime.structured_field("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        *(mime.text_field(name, value) for name, value in message.headers.items()),
    ]
    return mime.render(fields, text=message.content["text"], html=html)


def same_message(old: bytes, new: bytes) -> None:
    """Both writers say the same thing, read back by the stdlib parser."""
    a, b = (message_from_bytes(raw, policy=default_policy) for raw in (old, new))
    assert isinstance(a, EmailMessage) and isinstance(b, EmailMessage)
    for name in ("From", "To", "Subject", "Message-ID", "Date", "List-Unsubscribe", "X-Campaign"):
        assert str(a[name]) == str(b[name]), name
    for subtype in ("plain", "html"):
        old_part, new_part = a.get_body((subtype,)), b.get_body((subtype,))
        assert isinstance(old_part, EmailMessage) and isinstance(new_part, EmailMessage)
        assert old_part.get_content().replace("\r\n", "\n") == new_part.get_content().replace(
            "\r\n", "\n"
        )


def per_message_us(build: Callable[[], bytes], messages: int) -> float:
    started = time.perf_counter()
    for _ in range(messages):
        build()
    return (time.perf_counter() - started) / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    signer = LinkSigner(b"benchmark-link-secret-0123456789")
    print(f"load before: {os.getloadavg()[0]:.2f} (1-minute average, 2 cores)")
    print(
        "| message | stdlib EmailMessage + flatten | mime.render | build_email (all) | speed-up |"
    )
    print("|---|---:|---:|---:|---:|")
    for label, words in CONTENT.items():
        message = outgoing(signer, words)
        links = message.links
        html = rewrite_links(
            message.content["html"], signer, links["click"], {links["unsubscribe"]}
        )
        html = add_pixel(html, links["open"])
        runs: dict[str, Callable[[], bytes]] = {
            "stdlib": lambda m=message, h=html: stdlib_bytes(m, h),
            "mime": lambda m=message, h=html: mime_bytes(m, h),
            "build_email": lambda m=message: build_email(m, sender=SENDER, signer=signer, now=NOW),
        }
        same_message(runs["stdlib"](), runs["mime"]())
        for build in runs.values():  # warm up: caches, first-call imports
            build()
        timings: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, build in runs.items():
                timings[name].append(per_message_us(build, args.messages))
        median = {name: statistics.median(values) for name, values in timings.items()}
        print(
            f"| {label} | {median['stdlib']:.0f} µs | {median['mime']:.1f} µs "
            f"| {median['build_email']:.1f} µs | {median['stdlib'] / median['mime']:.0f}x |"
        )
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
