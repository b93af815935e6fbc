"""The in-app channel: messages kept in the customer's inbox, which the app reads.

Delivering is storing: ``send`` writes the message to her inbox
(``Storage.inbox``) under an id derived from its idempotency key, so a retry
stores it once. The app reads the inbox over the API (``rapport.api.inbox``:
``GET /v1/inbox``) and marks messages read, which comes back as an
``In-App Message Read`` event.

The address is the profile id the gate chose (``OutgoingMessage.to``): the
inbox belongs to that profile, and to whatever profile it is merged into.
"""

from __future__ import annotations

from rapport.channels.base import DeliveryResult, OutgoingMessage, PermanentDeliveryError
from rapport.core.clock import Clock
from rapport.storage.inbox import InboxMessage, InboxStore, inbox_message_id

NAME = "in_app"


class InAppChannel:
    """``Channel`` (``rapport.channels.base``) over the storage's inboxes."""

    name = NAME
    provider = "inbox"

    def __init__(self, inbox: InboxStore, clock: Clock) -> None:
        self._inbox = inbox
        self._clock = clock

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        missing = [part for part in ("title", "body") if part not in message.content]
        if missing:
            raise PermanentDeliveryError(
                f"an in-app message needs {' and '.join(missing)}; it has"
                f" {', '.join(sorted(message.content)) or 'no content'}"
            )
        stored = await self._inbox.put_message(
            InboxMessage(
                workspace_id=message.workspace_id,
                id=inbox_message_id(message.workspace_id, message.idempotency_key),
                profile_id=message.to or message.profile_id,
                idempotency_key=message.idempotency_key,
                title=message.content["title"],
                body=message.content["body"],
                category=message.category,
                topic=message.topic,
                metadata=dict(message.metadata),
                created_at=self._clock.now(),
            )
        )
        return DeliveryResult(provider_message_id=stored.id, detail="stored in the inbox")

    async def close(self) -> None:
        """Nothing to release: the storage belongs to the runtime."""
