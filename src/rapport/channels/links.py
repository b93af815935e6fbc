"""Signed links in messages: unsubscribe, preferences, open pixel, click redirect, callbacks.

A link carries a small signed token naming the workspace, profile and message
(and, where it matters, the channel, topic and address), so the endpoint
behind it needs no lookup to know who is acting and cannot be pointed at
somebody else: changing one byte of a token, or the target of a click,
breaks its HMAC-SHA256 signature. Click targets are signed too, so the
redirect endpoint is not an open redirect.

URL layout under ``public_url``:

=====================  ==========================================================
``/l/u/{token}``       GET: hosted preference page; POST: one-click unsubscribe
                       (RFC 8058, ``List-Unsubscribe=One-Click``)
``/l/o/{token}.gif``   open pixel
``/l/c/{token}``       click redirect, ``?u=<target>&s=<signature of target>``
``/l/s/{token}``       provider status callback (SMS)
``/l/confirm/{token}`` confirmation of a contact point (double opt-in)
=====================  ==========================================================
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import msgspec

LinkKind = Literal["unsubscribe", "open", "click", "status", "confirm"]
LINK_KINDS: frozenset[str] = frozenset(("unsubscribe", "open", "click", "status", "confirm"))

_PATHS: dict[str, str] = {
    "unsubscribe": "/l/u/{token}",
    "open": "/l/o/{token}.gif",
    "click": "/l/c/{token}",
    "status": "/l/s/{token}",
    "confirm": "/l/confirm/{token}",
}
_SIGNATURE_BYTES = 16  # 128 bits: forging is out of reach, links stay short


class LinkPayload(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who a link speaks for. Short field names keep tokens short."""

    k: str
    """The kind: one of ``LINK_KINDS`` (a token of one kind is refused by another's endpoint)."""
    w: str
    """Workspace id."""
    p: str
    """Profile id."""
    m: str | None = None
    """The message's idempotency key."""
    c: str | None = None
    """Channel."""
    t: str | None = None
    """Topic."""
    a: str | None = None
    """Address (a confirmation link names the contact point it confirms)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Makes and checks tokens and click signatures with one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the link secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, data: bytes) -> bytes:
        # The one-shot form: the same HMAC, a third cheaper than ``hmac.new(...).digest()``.
        return hmac.digest(self._secret, data, hashlib.sha256)[:_SIGNATURE_BYTES]

    def token(self, payload: LinkPayload) -> str:
        if payload.k not in LINK_KINDS:
            raise ValueError(f"unknown link kind {payload.k!r}")
        body = msgspec.json.encode(payload)
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def verify(self, kind: LinkKind, token: str) -> LinkPayload | None:
        """The payload of a genuine token of ``kind``; None for anything else."""
        body_part, dot, mac_part = token.partition(".")
        if not dot:
            return None
        try:
            body = _unb64(body_part)
            mac = _unb64(mac_part)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            payload = msgspec.json.decode(body, type=LinkPayload)
        except msgspec.DecodeError:
            return None
        return payload if payload.k == kind else None

    def sign_target(self, token: str, target: str) -> str:
        """The signature a click link carries for its target URL."""
        return _b64(self._mac(f"{token}\n{target}".encode()))

    def verify_target(self, token: str, target: str, signature: str) -> bool:
        return hmac.compare_digest(signature, self.sign_target(token, target))


def link_url(public_url: str, kind: LinkKind, token: str) -> str:
    return public_url.rstrip("/") + _PATHS[kind].format(token=token)


def click_url(signer: LinkSigner, click_base: str, target: str) -> str:
    """The tracked URL for ``target``, given a message's ``links["click"]``."""
    token = click_base.rstrip("/").rsplit("/", 1)[-1]
    query = urlencode({"u": target, "s": signer.sign_target(token, target)})
    return f"{click_base}?{query}"


def message_links(
    signer: LinkSigner,
    public_url: str,
    *,
    workspace_id: str,
    profile_id: str,
    idempotency_key: str,
    channel: str,
    topic: str | None,
) -> dict[str, str]:
    """The links a message carries: ``unsubscribe``, ``open``, ``click`` and ``status``."""
    out: dict[str, str] = {}
    kinds: tuple[LinkKind, ...] = ("unsubscribe", "open", "click", "status")
    for kind in kinds:
        payload = LinkPayload(
            k=kind, w=workspace_id, p=profile_id, m=idempotency_key, c=channel, t=topic
        )
        out[kind] = link_url(public_url, kind, signer.token(payload))
    return out


def confirmation_link(
    signer: LinkSigner,
    public_url: str,
    *,
    workspace_id: str,
    profile_id: str,
    channel: str,
    address: str,
) -> str:
    """The double opt-in link that confirms ``address`` as the profile's ``channel`` contact."""
    payload = LinkPayload(k="confirm", w=workspace_id, p=profile_id, c=channel, a=address)
    return link_url(public_url, "confirm", signer.token(payload))


def load_link_secret(configured: str, data_dir: Path | None) -> bytes:
    """The configured secret, else one kept in ``data_dir/link_secret`` (made on first use).

    Links already sent must keep working after a restart, so a generated
    secret is stored, never regenerated. Without a data dir (memory backend)
    a fresh one is made per process.
    """
    if configured:
        return configured.encode()
    if data_dir is None:
        return secrets.token_bytes(32)
    path = data_dir / "link_secret"
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    # create exclusively so two processes starting at once agree on one secret
    try:
        with path.open("x") as fh:
            fh.write(secret.hex())
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    path.chmod(0o600)
    return secret


def describe(payload: LinkPayload) -> dict[str, Any]:
    """The payload with readable names (for events and logs)."""
    return {
        "kind": payload.k,
        "workspace_id": payload.w,
        "profile_id": payload.p,
        "message": payload.m,
        "channel": payload.c,
        "topic": payload.t,
        "address": payload.a,
    }
