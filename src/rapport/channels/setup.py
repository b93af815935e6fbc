"""Rapport's own channels, registered from the settings like any other channel."""

from __future__ import annotations

from rapport.channels.base import ChannelRegistry
from rapport.channels.email import EmailChannel
from rapport.channels.links import LinkSigner, load_link_secret
from rapport.channels.push import PushChannel
from rapport.channels.sms import SmsChannel
from rapport.channels.webhook import WebhookChannel
from rapport.core.clock import Clock
from rapport.runtime.clock import SystemClock
from rapport.settings import Settings


def link_signer(settings: Settings) -> LinkSigner:
    """The signer for the links of messages (``link_secret``, else the one kept in the data dir).

    Every process that makes or checks links must agree on the secret: with
    PostgreSQL and several hosts, set ``link_secret``. The throwaway memory
    backend gets a fresh secret per call.
    """
    memory = settings.database_url.startswith("memory://")
    data_dir = None if memory else settings.sqlite_dir
    return LinkSigner(load_link_secret(settings.link_secret, data_dir))


def build_channels(
    settings: Settings, signer: LinkSigner, clock: Clock | None = None
) -> ChannelRegistry:
    """The configured channels: email with ``smtp_host``, SMS with ``sms_base_url``,
    push with ``push_gateway_url``; webhook always (its address is in each message)."""
    registry = ChannelRegistry()
    if settings.smtp_host:
        registry.register(
            EmailChannel(
                settings.smtp_host,
                settings.smtp_port,
                sender=settings.email_from,
                signer=signer,
                username=settings.smtp_username,
                password=settings.smtp_password,
                tls=settings.smtp_tls,
                clock=clock,
                # One connection per send the sender runs at once for a provider
                # (``sender_limits`` concurrency): more would sit idle, fewer
                # would queue sends the sender believes are under way.
                max_connections=settings.sender_config().concurrency,
            )
        )
    if settings.sms_base_url:
        registry.register(
            SmsChannel(
                settings.sms_base_url,
                account_sid=settings.sms_account_sid,
                auth_token=settings.sms_auth_token,
                sender=settings.sms_from,
            )
        )
    if settings.push_gateway_url:
        registry.register(
            PushChannel(settings.push_gateway_url, token=settings.push_gateway_token, signer=signer)
        )
    registry.register(WebhookChannel(settings.webhook_secret, clock or SystemClock()))
    return registry
