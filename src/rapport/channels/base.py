"""What every channel is: one interface, one message shape, two kinds of failure.

A channel delivers one rendered message to one address and says how it went.
Rapport's own channels (email, SMS, push, webhook, in-app) are registered
through :class:`ChannelRegistry` exactly as a third-party channel would be.

A channel never decides *whether* to send (the policy gate did) nor retries
(the sender does): it tries once and either returns a :class:`DeliveryResult`
or raises :class:`TransientDeliveryError` (worth retrying: a timeout, a 5xx, a
4xx SMTP reply) or :class:`PermanentDeliveryError` (retrying cannot help: a
rejected address, a 4xx from an HTTP provider other than 408/429).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

Category = Literal["promotional", "transactional"]


class OutgoingMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One rendered message, ready for a channel.

    ``content`` holds the rendered parts the channel's templates declare:
    email ``subject``/``html``/``text``; sms ``body``; push ``title``/``body``
    (and optional ``url``); in-app ``title``/``body``; webhook ``body`` (a JSON
    document as text). ``links`` are the signed URLs the composer made for
    this message: ``unsubscribe`` (one-click, RFC 8058 POST target and the
    hosted page), ``open`` (tracking pixel), ``click`` (redirect base: the
    channel appends ``?u=<target>&s=<signature>`` through
    :func:`rapport.channels.links.click_url`), ``status`` (provider status
    callback).
    """

    idempotency_key: str
    """Stable across retries and restarts; sent to providers that dedupe on it
    (``Idempotency-Key`` header, email ``Message-ID``)."""
    workspace_id: str
    profile_id: str
    channel: str
    to: str
    """The address: an email, an E.164 phone number, a device token, a URL, a profile id."""
    category: Category = "promotional"
    topic: str | None = None
    content: dict[str, str] = {}
    links: dict[str, str] = {}
    headers: dict[str, str] = {}
    """Extra headers (email) or HTTP headers (webhook) the definition asked for."""
    metadata: dict[str, Any] = {}
    """Journey, step, template version: echoed to providers that keep metadata."""


class DeliveryResult(msgspec.Struct, frozen=True, kw_only=True):
    provider_message_id: str | None = None
    detail: str | None = None


class DeliveryError(Exception):
    """A delivery attempt failed; ``detail`` says how, for the dead-letter list."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TransientDeliveryError(DeliveryError):
    """Worth retrying later (the provider is down, slow, or asked us to back off)."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help; the message goes to the dead-letter list."""


@runtime_checkable
class Channel(Protocol):
    """A way to reach a customer."""

    name: str
    """What definitions call it: ``email``, ``sms``, ``push``, ``webhook``, ``in_app``."""
    provider: str
    """What the sender limits and breaks circuits by (``smtp:host:port``, a base URL)."""

    async def send(self, message: OutgoingMessage) -> DeliveryResult: ...

    async def close(self) -> None: ...


ChannelFactory = Callable[[], Channel]


class UnknownChannelError(LookupError):
    pass


class ChannelRegistry:
    """Channels by name. Registering a name twice replaces the first."""

    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}

    def register(self, channel: Channel) -> None:
        self._channels[channel.name] = channel

    def get(self, name: str) -> Channel:
        try:
            return self._channels[name]
        except KeyError:
            raise UnknownChannelError(f"no channel named {name!r} is configured") from None

    def __contains__(self, name: object) -> bool:
        return name in self._channels

    def __iter__(self) -> Iterator[Channel]:
        return iter(list(self._channels.values()))

    def names(self) -> list[str]:
        return sorted(self._channels)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
