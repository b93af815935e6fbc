"""SMS through a Twilio-compatible REST API.

One form POST to ``{base}/2010-04-01/Accounts/{sid}/Messages.json`` with
basic auth ``sid:token``: ``To``, ``From``, ``Body`` and, when the message
has a ``status`` link, ``StatusCallback`` (the provider then reports
delivery to ``/l/s/{token}``, which becomes a ``Message Delivered`` or
``Message Failed`` event). The provider's message ``sid`` is the result's
``provider_message_id``.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx

from rapport.channels.base import DeliveryResult, OutgoingMessage, PermanentDeliveryError
from rapport.channels.http_delivery import DEFAULT_TIMEOUT, json_field, post


class SmsChannel:
    name = "sms"

    def __init__(
        self,
        base_url: str,
        *,
        account_sid: str,
        auth_token: str,
        sender: str,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.provider = self.base_url
        self.sender = sender
        self.url = (
            f"{self.base_url}/2010-04-01/Accounts/{quote(account_sid, safe='')}/Messages.json"
        )
        self._client = httpx.AsyncClient(
            auth=(account_sid, auth_token), timeout=timeout, transport=transport
        )

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        body = message.content.get("body", "")
        if not body.strip():
            raise PermanentDeliveryError("the SMS has no body (content['body'] is empty)")
        if not message.to.strip():
            raise PermanentDeliveryError("the SMS has no recipient number")
        form = {"To": message.to, "From": self.sender, "Body": body}
        if "status" in message.links:
            form["StatusCallback"] = message.links["status"]
        response = await post(self._client, self.url, data=form)
        sid = json_field(response, "sid")
        return DeliveryResult(
            provider_message_id=sid,
            detail=f"HTTP {response.status_code}" + ("" if sid else " (no sid in the answer)"),
        )

    async def close(self) -> None:
        await self._client.aclose()
