"""The endpoints behind the signed links in messages (see ``rapport.channels.links``).

Each one checks the link's token (a token of another kind, or one byte off,
is refused with a 400 naming the problem) and turns what happened into a
``track`` event of source ``rapport:channels`` addressed to the token's
profile, appended to the log like any other event. Opens, clicks, one-click
unsubscribes and status callbacks also carry what the message was about
(``journey_id``, ``step_id`` and the step's ``data``, from the outbox):

=================================  ==============================================
``GET /l/o/{token}.gif``           ``Email Opened`` (always answers the pixel)
``GET /l/c/{token}?u=&s=``         ``Email Link Clicked`` {url}, then 302 to ``u``
``POST /l/u/{token}``              one-click unsubscribe: ``Unsubscribed``
``GET /l/u/{token}``               the hosted preference page
``POST /l/u/{token}`` (the form)   ``Preferences Updated``
``POST /l/s/{token}``              ``Message Delivered`` / ``Failed`` / ``Status``
``GET /l/confirm/{token}``         ``Contact Confirmed`` {channel, address}
=================================  ==============================================

Consent changes travel in ``context.consent.categoryPreferences``, which
processing applies to the profile's consent. Opens and clicks count every
time (random message ids); the others derive their message id from the
request, so a provider or browser repeating it appends nothing new.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from rapport.api.auth import get_rapport
from rapport.api.errors import ApiError
from rapport.api.link_pages import confirmed_page, preference_page, unsubscribed_page
from rapport.channels.links import LinkKind, LinkPayload, LinkSigner
from rapport.channels.setup import link_signer
from rapport.core.journeys.effects import SendEffect
from rapport.core.model import ConsentValue, Event, Profile
from rapport.runtime.service import Rapport

CHANNEL_EVENT_SOURCE = "rapport:channels"
MAX_FORM_BYTES = 64 * 1024
MAX_CATEGORIES = 100
MAX_TOPIC_CHARS = 100
# The smallest transparent GIF: 1x1, one colour, fully transparent.
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
STATUS_EVENTS = {
    "delivered": "Message Delivered",
    "failed": "Message Failed",
    "undelivered": "Message Failed",
}

router = APIRouter(prefix="/l", tags=["message links"])


def get_signer(request: Request) -> LinkSigner:
    """The app's signer: ``app.state.link_signer``, the runtime's, or one from the settings."""
    state = request.app.state
    signer: LinkSigner | None = getattr(state, "link_signer", None)
    if signer is None:
        rapport = get_rapport(request)
        signer = getattr(rapport, "link_signer", None) or link_signer(rapport.settings)
        state.link_signer = signer
    return signer


def _verified(request: Request, kind: LinkKind, token: str) -> LinkPayload:
    payload = get_signer(request).verify(kind, token)
    if payload is None:
        raise ApiError(
            400, "invalid_link", f"this {kind} link is not valid (altered or forged)", field="token"
        )
    return payload


def _derived_id(kind: str, *parts: str) -> str:
    """A message id that the same request derives again (so a repeat is a duplicate)."""
    digest = hashlib.sha256("\x00".join((kind, *parts)).encode()).hexdigest()[:32]
    return f"channels-{kind}-{digest}"


def link_event(
    rapport: Rapport,
    payload: LinkPayload,
    name: str,
    message_id: str,
    properties: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> Event:
    """The event a link reports: userless, addressed to the token's profile."""
    now = rapport.clock.now()
    props: dict[str, Any] = {"message": payload.m, "channel": payload.c}
    if payload.t is not None:
        props["topic"] = payload.t
    props.update(properties or {})
    return Event(
        workspace_id=payload.w,
        message_id=message_id,
        type="track",
        event=name,
        timestamp=now,
        received_at=now,
        source=CHANNEL_EVENT_SOURCE,
        properties=props,
        context=context or {},
        profile_id=payload.p,
    )


async def message_event(
    rapport: Rapport,
    payload: LinkPayload,
    name: str,
    message_id: str,
    properties: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> Event:
    """``link_event``, also saying what the message was about when the outbox still
    holds it: ``journey_id``, ``step_id`` and the step's ``data`` (so a computed
    trait can read, say, the appointment a reminder was for)."""
    about: dict[str, Any] = {}
    if payload.m is not None:
        message = await rapport.storage.get_outbox(payload.w, payload.m)
        if message is not None and isinstance(message.effect, SendEffect):
            effect = message.effect
            about = {"journey_id": effect.journey_id, "step_id": effect.step_id}
            about["data"] = dict(effect.data)
    return link_event(rapport, payload, name, message_id, {**about, **(properties or {})}, context)


async def _append(rapport: Rapport, event: Event) -> bool:
    fresh = await rapport.event_log.append([event])
    rapport.processor.notify()
    return fresh[0]


def _agent_context(request: Request) -> dict[str, Any]:
    agent = request.headers.get("user-agent")
    return {"userAgent": agent[:500]} if agent else {}


@router.get("/o/{token}.gif", summary="Open pixel: records Email Opened")
async def open_pixel(token: str, request: Request) -> Response:
    """Always the 1x1 GIF, so a mail client never shows a broken image; the
    event is appended only for a genuine token."""
    payload = get_signer(request).verify("open", token)
    if payload is not None:
        rapport = get_rapport(request)
        event = await message_event(
            rapport,
            payload,
            "Email Opened",
            rapport.ids.new_id("open"),
            context=_agent_context(request),
        )
        await _append(rapport, event)
    return Response(PIXEL_GIF, media_type="image/gif", headers={"Cache-Control": "no-store"})


@router.get("/c/{token}", summary="Click redirect: records the click, then redirects")
async def click(token: str, request: Request) -> Response:
    payload = _verified(request, "click", token)
    target = request.query_params.get("u", "")
    signature = request.query_params.get("s", "")
    if not target:
        raise ApiError(400, "missing_target", "the link has no target URL", field="u")
    if not signature or not get_signer(request).verify_target(token, target, signature):
        raise ApiError(400, "invalid_target", "the link's target is not the one signed", field="s")
    if not target.lower().startswith(("http://", "https://")):
        raise ApiError(400, "invalid_target", "only http(s) targets are redirected to", field="u")
    rapport = get_rapport(request)
    name = "Email Link Clicked" if payload.c in (None, "email") else "Link Clicked"
    event = await message_event(
        rapport,
        payload,
        name,
        rapport.ids.new_id("click"),
        {"url": target},
        context=_agent_context(request),
    )
    await _append(rapport, event)
    return RedirectResponse(target, status_code=302, headers={"Cache-Control": "no-store"})


async def _form(request: Request) -> dict[str, list[str]]:
    """A url-encoded body (multipart and other bodies read as empty)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ApiError(413, "body_too_large", f"at most {MAX_FORM_BYTES} bytes", field="body")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("", "application/x-www-form-urlencoded"):
        return {}
    try:
        return parse_qs(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=2 * MAX_CATEGORIES + 10
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "invalid_form", f"unreadable form body: {exc}", field="body") from None


async def _profile(rapport: Rapport, payload: LinkPayload) -> Profile:
    live = await rapport.storage.resolve_profile_id(payload.w, payload.p)
    if live is not None:
        found = await rapport.storage.load_profiles(payload.w, [live])
        if live in found:
            return found[live]
    raise ApiError(
        404, "profile_not_found", "the person this link was sent to is gone", field="token"
    )


def _link_category(payload: LinkPayload) -> str:
    return f"topic:{payload.t}" if payload.t else "marketing"


def _subscribed(profile: Profile, category: str) -> bool:
    """What the page shows: a category never answered reads as subscribed (she was sent it)."""
    value = profile.consent.get(category)
    return True if value is None else value.granted


def _state_mark(value: ConsentValue | None) -> str:
    if value is None:
        return "unset"
    return f"{value.granted}|{value.message_id}|{value.observed_at.isoformat()}"


def _page_states(profile: Profile, payload: LinkPayload) -> dict[str, bool]:
    link = _link_category(payload)
    others = sorted(c for c in profile.consent if c.startswith("topic:") and c != link)
    categories = [link, *others]
    return {c: _subscribed(profile, c) for c in categories}


async def _topic_names(rapport: Rapport, workspace_id: str) -> dict[str, str]:
    """Category -> the topic's name, for the topics the workspace policy defines."""
    policy = await rapport.storage.get_policy(workspace_id)
    if policy is None:
        return {}
    return {f"topic:{topic.id}": topic.name for topic in policy.document.topics}


@router.get("/u/{token}", summary="The hosted preference page")
async def preferences(token: str, request: Request) -> Response:
    payload = _verified(request, "unsubscribe", token)
    rapport = get_rapport(request)
    profile = await _profile(rapport, payload)
    return preference_page(
        _page_states(profile, payload),
        channel=payload.c,
        names=await _topic_names(rapport, payload.w),
    )


@router.post("/u/{token}", summary="One-click unsubscribe (RFC 8058) or the preference form")
async def unsubscribe(token: str, request: Request) -> Response:
    """A body with ``categories`` is the preference form; anything else (RFC 8058's
    ``List-Unsubscribe=One-Click``, or a provider's empty POST) unsubscribes
    from the link's topic, or from marketing when it has none."""
    payload = _verified(request, "unsubscribe", token)
    form = await _form(request)
    rapport = get_rapport(request)
    profile = await _profile(rapport, payload)
    if "categories" in form:
        return await _save_preferences(rapport, payload, token, profile, form)
    category = _link_category(payload)
    current = profile.consent.get(category)
    # Already off: a repeat (mail providers retry) changes nothing and says so once.
    if current is None or current.granted:
        event = await message_event(
            rapport,
            payload,
            "Unsubscribed",
            _derived_id("unsubscribe", token, category, _state_mark(current)),
            {"method": "one-click"},
            context={"consent": {"categoryPreferences": {category: False}}},
        )
        await _append(rapport, event)
    return unsubscribed_page(category, await _topic_names(rapport, payload.w))


def _valid_category(category: str) -> bool:
    if category == "marketing":
        return True
    topic = category.removeprefix("topic:")
    return (
        category.startswith("topic:")
        and 0 < len(topic) <= MAX_TOPIC_CHARS
        and topic.isprintable()
        and topic.strip() == topic
    )


async def _save_preferences(
    rapport: Rapport,
    payload: LinkPayload,
    token: str,
    profile: Profile,
    form: dict[str, list[str]],
) -> Response:
    categories = list(dict.fromkeys(form["categories"]))
    if len(categories) > MAX_CATEGORIES:
        raise ApiError(400, "too_many_categories", f"at most {MAX_CATEGORIES}", field="categories")
    for category in categories:
        if not _valid_category(category):
            raise ApiError(
                400,
                "invalid_category",
                f"{category!r} is not 'marketing' nor 'topic:<name>'",
                field="categories",
            )
    wanted = {c: c in form for c in categories}
    # Only what she changed: a box we showed ticked by default is not consent given.
    changes = {c: v for c, v in wanted.items() if v != _subscribed(profile, c)}
    if changes:
        marks = [
            f"{c}={v}|{_state_mark(profile.consent.get(c))}" for c, v in sorted(changes.items())
        ]
        event = link_event(
            rapport,
            payload,
            "Preferences Updated",
            _derived_id("preferences", token, *marks),
            {"method": "preference-page", "preferences": changes},
            context={"consent": {"categoryPreferences": changes}},
        )
        await _append(rapport, event)
    states = _page_states(profile, payload)
    states.update(wanted)
    return preference_page(
        states, saved=True, channel=payload.c, names=await _topic_names(rapport, payload.w)
    )


@router.post("/s/{token}", summary="Provider status callback (Twilio-compatible)")
async def status_callback(token: str, request: Request) -> Response:
    payload = _verified(request, "status", token)
    form = await _form(request)
    status = (form.get("MessageStatus") or [""])[0].strip().lower()
    if not status:
        raise ApiError(400, "missing_status", "MessageStatus is required", field="MessageStatus")
    sid = (form.get("MessageSid") or form.get("SmsSid") or [""])[0].strip()
    error_code = (form.get("ErrorCode") or [""])[0].strip()
    props: dict[str, Any] = {"status": status, "provider_message_id": sid or None}
    if error_code:
        props["error_code"] = error_code
    rapport = get_rapport(request)
    event = await message_event(
        rapport,
        payload,
        STATUS_EVENTS.get(status, "Message Status"),
        _derived_id("status", token, sid, status, error_code),
        props,
    )
    await _append(rapport, event)
    return Response(status_code=204)


@router.get("/confirm/{token}", summary="Confirms a contact point (double opt-in)")
async def confirm(token: str, request: Request) -> Response:
    payload = _verified(request, "confirm", token)
    if not payload.c or not payload.a:
        raise ApiError(400, "invalid_link", "the link names no contact point", field="token")
    rapport = get_rapport(request)
    event = link_event(
        rapport,
        payload,
        "Contact Confirmed",
        _derived_id("confirm", token),
        {"address": payload.a},
    )
    await _append(rapport, event)
    return confirmed_page(payload.c, payload.a)
