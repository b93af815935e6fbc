"""Push through an HTTP push gateway.

One JSON POST per message to ``push_gateway_url`` with ``Authorization:
Bearer <push_gateway_token>`` and ``Idempotency-Key``::

    {"to": "<device token>", "title": "...", "body": "...", "url": "...",
     "data": {...}, "idempotency_key": "..."}

``url`` is present only when the template rendered one; an http(s) url is
sent through the message's click redirect (when it has a ``click`` link) so
a tap comes back as a click event. ``data`` carries the message's metadata
(journey, step, template version) with its profile, category and topic.
The gateway's answer may name its own id as ``id`` or ``message_id``.
"""

from __future__ import annotations

from typing import Any

import httpx

from rapport.channels.base import DeliveryResult, OutgoingMessage, PermanentDeliveryError
from rapport.channels.http_delivery import DEFAULT_TIMEOUT, json_field, post
from rapport.channels.links import LinkSigner, click_url


class PushChannel:
    name = "push"

    def __init__(
        self,
        gateway_url: str,
        *,
        token: str,
        signer: LinkSigner | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.gateway_url = gateway_url
        self.provider = gateway_url
        self._signer = signer
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout, transport=transport)

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        """The JSON document sent for ``message``."""
        if not message.to.strip():
            raise PermanentDeliveryError("the push message has no device token")
        title = message.content.get("title", "")
        body = message.content.get("body", "")
        if not title.strip() and not body.strip():
            raise PermanentDeliveryError("the push message has neither title nor body")
        data: dict[str, Any] = {
            **message.metadata,
            "profile_id": message.profile_id,
            "category": message.category,
        }
        if message.topic is not None:
            data["topic"] = message.topic
        out: dict[str, Any] = {"to": message.to, "title": title, "body": body}
        url = message.content.get("url")
        if url:
            click = message.links.get("click")
            if self._signer is not None and click and url.startswith(("http://", "https://")):
                url = click_url(self._signer, click, url)
            out["url"] = url
        out["data"] = data
        out["idempotency_key"] = message.idempotency_key
        return out

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        response = await post(
            self._client,
            self.gateway_url,
            json=self.payload(message),
            headers={"Idempotency-Key": message.idempotency_key},
        )
        provider_id = json_field(response, "id") or json_field(response, "message_id")
        return DeliveryResult(
            provider_message_id=provider_id, detail=f"HTTP {response.status_code}"
        )

    async def close(self) -> None:
        await self._client.aclose()
