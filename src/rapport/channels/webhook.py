"""Webhooks: the rendered body POSTed to a URL, signed and timestamped.

Headers sent with every webhook::

    Content-Type: application/json
    Idempotency-Key: <the message's idempotency key>
    X-Rapport-Timestamp: <unix seconds>
    X-Rapport-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

The signature covers the timestamp, so a receiver that checks both with
:func:`verify_webhook` refuses a captured request replayed later. Without a
``webhook_secret`` the signature header is left out (the timestamp stays).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

import httpx

from rapport.channels.base import DeliveryResult, OutgoingMessage, PermanentDeliveryError
from rapport.channels.http_delivery import DEFAULT_TIMEOUT, post
from rapport.core.clock import Clock

SIGNATURE_HEADER = "X-Rapport-Signature"
TIMESTAMP_HEADER = "X-Rapport-Timestamp"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE = 300
"""Seconds a signed timestamp may be away from the receiver's clock."""
_RESERVED = frozenset(
    h.lower() for h in (SIGNATURE_HEADER, TIMESTAMP_HEADER, "Idempotency-Key", "Content-Length")
)


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def sign_webhook(secret: str | bytes, timestamp: int | str, body: str | bytes) -> str:
    """The ``X-Rapport-Signature`` value for ``body`` sent at ``timestamp``."""
    signed = str(timestamp).encode() + b"." + _as_bytes(body)
    digest = hmac.new(_as_bytes(secret), signed, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify_webhook(
    secret: str | bytes,
    timestamp: str | int,
    body: str | bytes,
    signature: str,
    now: float | datetime,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """True when ``signature`` is ours for ``body`` at ``timestamp`` and the timestamp is fresh.

    ``timestamp`` and ``signature`` are the ``X-Rapport-Timestamp`` and
    ``X-Rapport-Signature`` headers as received, ``body`` the raw body bytes,
    ``now`` the receiver's time (unix seconds or an aware datetime). A
    timestamp more than ``tolerance`` seconds away from ``now`` is refused
    (a replay, or a clock far off). The signature header may list several
    comma-separated ``v1=`` values (a secret being rotated); any one matching
    is enough.
    """
    try:
        sent = int(str(timestamp).strip())
    except ValueError:
        return False
    current = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(current - sent) > tolerance:
        return False
    expected = sign_webhook(secret, sent, body)
    candidates = [part.strip() for part in signature.split(",")]
    return any(hmac.compare_digest(expected, c) for c in candidates if c)


class WebhookChannel:
    name = "webhook"
    provider = "webhook"

    def __init__(
        self,
        secret: str,
        clock: Clock,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._secret = secret
        self._clock = clock
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)

    def headers(self, message: OutgoingMessage, body: bytes) -> dict[str, str]:
        """The headers sent with ``body``: the definition's own, then Rapport's."""
        headers = {k: v for k, v in message.headers.items() if k.lower() not in _RESERVED}
        headers.setdefault("Content-Type", "application/json")
        timestamp = int(self._clock.now().timestamp())
        headers["Idempotency-Key"] = message.idempotency_key
        headers[TIMESTAMP_HEADER] = str(timestamp)
        if self._secret:
            headers[SIGNATURE_HEADER] = sign_webhook(self._secret, timestamp, body)
        return headers

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        url = message.to.strip()
        if not url.startswith(("http://", "https://")):
            raise PermanentDeliveryError(f"webhook address must be an http(s) URL, got {url!r}")
        body = message.content.get("body", "").encode()
        for name, value in message.headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise PermanentDeliveryError(f"header {name!r} contains a line break")
        response = await post(self._client, url, content=body, headers=self.headers(message, body))
        return DeliveryResult(detail=f"HTTP {response.status_code}")

    async def close(self) -> None:
        await self._client.aclose()
