"""SMS, push and webhook channels against a real local HTTP server."""

from __future__ import annotations

import base64
import json
import socket
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.responses import Response

from rapport.channels.base import OutgoingMessage, PermanentDeliveryError, TransientDeliveryError
from rapport.channels.links import LinkSigner, message_links
from rapport.channels.push import PushChannel
from rapport.channels.sms import SmsChannel
from rapport.channels.webhook import WebhookChannel, verify_webhook
from rapport.core.clock import VirtualClock
from tests.providers import HttpProvider, json_answer

PUBLIC = "https://rapport.example.com"


def outgoing(signer: LinkSigner, channel: str, to: str, **content: str) -> OutgoingMessage:
    return OutgoingMessage(
        idempotency_key=f"key-{channel}",
        workspace_id="ws_1",
        profile_id="prof_1",
        channel=channel,
        to=to,
        topic="deliveries",
        category="transactional",
        content=content,
        links=message_links(
            signer,
            PUBLIC,
            workspace_id="ws_1",
            profile_id="prof_1",
            idempotency_key=f"key-{channel}",
            channel=channel,
            topic="deliveries",
        ),
        metadata={"journey": "j_1", "step": "s_2"},
    )


def sms_channel(provider: HttpProvider, timeout: float = 5.0) -> SmsChannel:
    return SmsChannel(
        provider.base_url,
        account_sid="AC123",
        auth_token="secret-token",
        sender="+15550001111",
        timeout=httpx.Timeout(timeout),
    )


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- SMS ---------------------------------------------------------------------


async def test_sms_posts_the_twilio_form_with_basic_auth(
    http_provider: HttpProvider, signer: LinkSigner
) -> None:
    http_provider.answer = lambda hit: json_answer(201, {"sid": "SM42", "status": "queued"})
    sms = sms_channel(http_provider)
    message = outgoing(signer, "sms", "+15557654321", body="Your parcel arrives today")
    try:
        result = await sms.send(message)
    finally:
        await sms.close()
    assert result.provider_message_id == "SM42"
    [hit] = http_provider.hits
    assert hit.path == "/2010-04-01/Accounts/AC123/Messages.json"
    assert hit.headers["content-type"] == "application/x-www-form-urlencoded"
    user, _, password = (
        base64.b64decode(hit.headers["authorization"].split()[1]).decode().partition(":")
    )
    assert (user, password) == ("AC123", "secret-token")
    assert parse_qs(hit.body.decode()) == {
        "To": ["+15557654321"],
        "From": ["+15550001111"],
        "Body": ["Your parcel arrives today"],
        "StatusCallback": [message.links["status"]],
    }


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (429, {"Retry-After": "7"}, TransientDeliveryError, 7.0),
        (503, {}, TransientDeliveryError, None),
        (
            503,
            {
                "Retry-After": "Sun, 22 Nov 2026 10:02:00 GMT",
                "Date": "Sun, 22 Nov 2026 10:00:00 GMT",
            },
            TransientDeliveryError,
            120.0,
        ),
        (400, {}, PermanentDeliveryError, None),
        (401, {}, PermanentDeliveryError, None),
    ],
)
async def test_sms_error_mapping(
    http_provider: HttpProvider,
    signer: LinkSigner,
    status: int,
    headers: dict[str, str],
    error: type[Exception],
    retry_after: float | None,
) -> None:
    http_provider.answer = lambda hit: json_answer(
        status, {"code": 21211, "message": "bad number"}, headers
    )
    sms = sms_channel(http_provider)
    try:
        with pytest.raises(error) as caught:
            await sms.send(outgoing(signer, "sms", "+15557654321", body="hi"))
    finally:
        await sms.close()
    assert str(status) in str(caught.value)
    if isinstance(caught.value, TransientDeliveryError):
        assert caught.value.retry_after == retry_after
    else:
        assert "bad number" in str(caught.value)


async def test_sms_timeout_and_refused_connection_are_transient(
    http_provider: HttpProvider, signer: LinkSigner
) -> None:
    http_provider.delay = 0.4
    slow = sms_channel(http_provider, timeout=0.1)
    try:
        with pytest.raises(TransientDeliveryError, match="timed out"):
            await slow.send(outgoing(signer, "sms", "+15557654321", body="hi"))
    finally:
        await slow.close()
    down = SmsChannel(closed_port_url(), account_sid="AC1", auth_token="t", sender="+1")
    try:
        with pytest.raises(TransientDeliveryError):
            await down.send(outgoing(signer, "sms", "+15557654321", body="hi"))
    finally:
        await down.close()


async def test_sms_without_body_is_permanent(
    http_provider: HttpProvider, signer: LinkSigner
) -> None:
    sms = sms_channel(http_provider)
    try:
        with pytest.raises(PermanentDeliveryError, match="body"):
            await sms.send(outgoing(signer, "sms", "+15557654321"))
    finally:
        await sms.close()
    assert http_provider.hits == []


# -- push --------------------------------------------------------------------


async def test_push_posts_json_with_bearer_and_idempotency_key(
    http_provider: HttpProvider, signer: LinkSigner
) -> None:
    http_provider.answer = lambda hit: json_answer(202, {"id": "push-9"})
    push = PushChannel(f"{http_provider.base_url}/send", token="gw-token", signer=signer)
    message = outgoing(
        signer,
        "push",
        "device-abc",
        title="On its way",
        body="Arrives at 14:00",
        url="https://shop.example.com/orders/1",
    )
    try:
        result = await push.send(message)
    finally:
        await push.close()
    assert result.provider_message_id == "push-9"
    [hit] = http_provider.hits
    assert hit.path == "/send"
    assert hit.headers["authorization"] == "Bearer gw-token"
    assert hit.headers["idempotency-key"] == "key-push"
    body = json.loads(hit.body)
    url = body.pop("url")
    assert body == {
        "to": "device-abc",
        "title": "On its way",
        "body": "Arrives at 14:00",
        "data": {
            "journey": "j_1",
            "step": "s_2",
            "profile_id": "prof_1",
            "category": "transactional",
            "topic": "deliveries",
        },
        "idempotency_key": "key-push",
    }
    # The tapped URL goes through the signed click redirect.
    assert url.startswith(message.links["click"] + "?")
    query = parse_qs(urlsplit(url).query)
    assert query["u"] == ["https://shop.example.com/orders/1"]
    token = message.links["click"].rsplit("/", 1)[-1]
    assert signer.verify_target(token, query["u"][0], query["s"][0])


async def test_push_error_mapping(http_provider: HttpProvider, signer: LinkSigner) -> None:
    push = PushChannel(f"{http_provider.base_url}/send", token="t")
    message = outgoing(signer, "push", "device-abc", title="t", body="b")
    try:
        http_provider.answer = lambda hit: Response("overloaded", status_code=500)
        with pytest.raises(TransientDeliveryError, match="500"):
            await push.send(message)
        http_provider.answer = lambda hit: Response("slow down", 429, {"Retry-After": "30"})
        with pytest.raises(TransientDeliveryError) as caught:
            await push.send(message)
        assert caught.value.retry_after == 30.0
        http_provider.answer = lambda hit: Response("unknown device", status_code=404)
        with pytest.raises(PermanentDeliveryError, match="unknown device"):
            await push.send(message)
    finally:
        await push.close()


# -- webhook -----------------------------------------------------------------

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


async def test_webhook_is_signed_timestamped_and_verifiable(
    http_provider: HttpProvider, signer: LinkSigner
) -> None:
    clock = VirtualClock(NOW)
    webhook = WebhookChannel("whsec-123", clock)
    body = json.dumps({"order": 1, "status": "shipped"})
    message = OutgoingMessage(
        idempotency_key="wh-1",
        workspace_id="ws_1",
        profile_id="prof_1",
        channel="webhook",
        to=f"{http_provider.base_url}/hooks/orders",
        content={"body": body},
        headers={"X-Shop": "berlin", "X-Rapport-Signature": "forged"},
    )
    try:
        await webhook.send(message)
    finally:
        await webhook.close()
    [hit] = http_provider.hits
    assert hit.path == "/hooks/orders"
    assert hit.body == body.encode()
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["idempotency-key"] == "wh-1"
    assert hit.headers["x-shop"] == "berlin"
    timestamp = hit.headers["x-rapport-timestamp"]
    assert timestamp == str(int(NOW.timestamp()))
    signature = hit.headers["x-rapport-signature"]
    assert signature.startswith("v1=") and len(signature) == 3 + 64
    assert verify_webhook("whsec-123", timestamp, hit.body, signature, NOW)
    assert not verify_webhook("other-secret", timestamp, hit.body, signature, NOW)
    assert not verify_webhook("whsec-123", timestamp, hit.body + b" ", signature, NOW)


async def test_webhook_without_secret_is_unsigned(http_provider: HttpProvider) -> None:
    webhook = WebhookChannel("", VirtualClock(NOW))
    message = OutgoingMessage(
        idempotency_key="wh-2",
        workspace_id="ws_1",
        profile_id="prof_1",
        channel="webhook",
        to=f"{http_provider.base_url}/h",
        content={"body": "{}"},
    )
    try:
        await webhook.send(message)
    finally:
        await webhook.close()
    [hit] = http_provider.hits
    assert "x-rapport-signature" not in hit.headers
    assert hit.headers["x-rapport-timestamp"] == str(int(NOW.timestamp()))


async def test_webhook_error_mapping(http_provider: HttpProvider) -> None:
    webhook = WebhookChannel("s", VirtualClock(NOW))

    def message(to: str) -> OutgoingMessage:
        return OutgoingMessage(
            idempotency_key="wh-3",
            workspace_id="ws_1",
            profile_id="prof_1",
            channel="webhook",
            to=to,
            content={"body": "{}"},
        )

    try:
        http_provider.answer = lambda hit: Response("busy", 503, {"Retry-After": "5"})
        with pytest.raises(TransientDeliveryError) as caught:
            await webhook.send(message(f"{http_provider.base_url}/h"))
        assert caught.value.retry_after == 5.0
        http_provider.answer = lambda hit: Response("gone", status_code=410)
        with pytest.raises(PermanentDeliveryError, match="410"):
            await webhook.send(message(f"{http_provider.base_url}/h"))
        with pytest.raises(PermanentDeliveryError, match="http"):
            await webhook.send(message("ftp://example.com/h"))
        with pytest.raises(TransientDeliveryError):
            await webhook.send(message(closed_port_url() + "/h"))
    finally:
        await webhook.close()


def test_verify_webhook_refuses_replays_and_garbage() -> None:
    now = 1_800_000_000
    body = b'{"a":1}'
    from rapport.channels.webhook import sign_webhook

    good = sign_webhook("sec", now, body)
    assert verify_webhook("sec", str(now), body, good, now)
    assert verify_webhook("sec", str(now), body.decode(), good, now + 299)
    # The same request captured and replayed later (or from the future) is refused.
    assert not verify_webhook("sec", str(now), body, good, now + 301)
    assert not verify_webhook("sec", str(now), body, good, now - 301)
    # A fresh timestamp on an old signature does not verify either.
    assert not verify_webhook("sec", str(now + 400), body, good, now + 400)
    assert not verify_webhook("sec", "not-a-number", body, good, now)
    assert not verify_webhook("sec", str(now), body, "v1=00", now)
    # During a secret rotation either signature is accepted.
    rotated = f"{sign_webhook('new', now, body)}, {good}"
    assert verify_webhook("sec", str(now), body, rotated, now)
    assert verify_webhook("new", str(now), body, rotated, now)
    assert verify_webhook("sec", now, body, good, datetime.fromtimestamp(now, UTC), tolerance=1)
