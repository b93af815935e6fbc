"""Which channels the settings turn on, and the link signer they share."""

from __future__ import annotations

from pathlib import Path

from rapport.channels.base import Channel
from rapport.channels.email import EmailChannel
from rapport.channels.links import LinkPayload, LinkSigner
from rapport.channels.push import PushChannel
from rapport.channels.setup import build_channels, link_signer
from rapport.channels.sms import SmsChannel
from rapport.channels.webhook import WebhookChannel
from rapport.settings import load_settings

SIGNER = LinkSigner(b"0123456789abcdef0123")


async def test_only_configured_channels_are_registered(tmp_path: Path) -> None:
    bare = build_channels(load_settings({"data_dir": str(tmp_path)}, environ={}), SIGNER)
    try:
        assert bare.names() == ["webhook"]
        assert isinstance(bare.get("webhook"), WebhookChannel)
    finally:
        await bare.close()
    settings = load_settings(
        {
            "data_dir": str(tmp_path),
            "smtp_host": "mail.example.com",
            "smtp_port": 2525,
            "sms_base_url": "https://sms.example.com",
            "push_gateway_url": "https://push.example.com/send",
        },
        environ={},
    )
    full = build_channels(settings, SIGNER)
    try:
        assert full.names() == ["email", "push", "sms", "webhook"]
        assert isinstance(full.get("email"), EmailChannel)
        assert isinstance(full.get("sms"), SmsChannel)
        assert isinstance(full.get("push"), PushChannel)
        assert full.get("email").provider == "smtp:mail.example.com:2525"
        assert full.get("sms").provider == "https://sms.example.com"
        assert all(isinstance(c, Channel) for c in full)
    finally:
        await full.close()


async def test_the_smtp_pool_holds_one_connection_per_concurrent_send(tmp_path: Path) -> None:
    def email(limits: str) -> EmailChannel:
        settings = load_settings(
            {"data_dir": str(tmp_path), "smtp_host": "mail.example.com", "sender_limits": limits},
            environ={},
        )
        channel = build_channels(settings, SIGNER).get("email")
        assert isinstance(channel, EmailChannel)
        return channel

    assert email("").max_connections == 8  # the sender's default concurrency
    assert email("concurrency=40").max_connections == 40


def test_link_signer_keeps_its_secret_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": str(tmp_path)}, environ={})
    token = link_signer(settings).token(LinkPayload(k="open", w="ws", p="prof"))
    # Another process (or a restart) checks the links the first one made.
    assert link_signer(settings).verify("open", token) is not None
    configured = load_settings({"link_secret": "a-configured-secret!"}, environ={})
    assert link_signer(configured).verify("open", token) is None
