"""The in-app inbox over HTTP: what the app shows, and the reads it reports.

``GET /v1/inbox`` and ``POST /v1/inbox/{message}/read`` take the same write
key as ingest (Basic auth ``<writeKey>:``, ``X-Write-Key`` or Bearer) and
the user as ``userId`` or ``anonymousId`` in the query. A write key ships
in the app (or web page), so anyone holding it can read the inbox of any
user whose id they know: treat in-app messages as visible to whoever knows
the user id (no secrets in them), and use ids that cannot be guessed. An
app with its own backend reads inboxes with a secret key instead:
``GET /api/profiles/{ref}/inbox``.

Marking a message read appends an ``In-App Message Read`` track event to
her timeline (once per message: its message id derives from the inbox
message), which journeys and segments can use like any other event.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from rapport.api.auth import get_rapport, require_secret_key
from rapport.api.definitions import json_response
from rapport.api.errors import ApiError
from rapport.api.ingest import authenticate_ingest, header_write_key, source_of
from rapport.api.profiles import resolve_profile
from rapport.channels.in_app import NAME as IN_APP
from rapport.core.identity import ANONYMOUS_ID, USER_ID, normalize_identifier
from rapport.core.model import Event, Identifier, Profile
from rapport.runtime.service import Rapport
from rapport.storage.base import ApiKey
from rapport.storage.inbox import InboxMessage

router = APIRouter(tags=["inbox"])

READ_EVENT = "In-App Message Read"
MAX_ID_LENGTH = 500


async def _write_key(request: Request) -> ApiKey:
    key = header_write_key(request)
    if key is None:
        raise ApiError(
            401,
            "missing_write_key",
            "Send the write key as Basic auth user ('<writeKey>:') or in the X-Write-Key header",
            field="writeKey",
        )
    return await authenticate_ingest(get_rapport(request), key)


def _user(user_id: str | None, anonymous_id: str | None) -> Identifier:
    for name, kind, value in (
        ("userId", USER_ID, user_id),
        ("anonymousId", ANONYMOUS_ID, anonymous_id),
    ):
        if value is None:
            continue
        if not value.strip() or len(value) > MAX_ID_LENGTH:
            raise ApiError(
                422, "invalid_user", f"{name} must be 1-{MAX_ID_LENGTH} characters", field=name
            )
        return Identifier(kind, value)
    raise ApiError(
        422, "missing_user", "Name the user: userId or anonymousId in the query", field="userId"
    )


async def _profile_of(rapport: Rapport, workspace_id: str, user: Identifier) -> Profile | None:
    normalized = normalize_identifier(user, rapport.rules)
    owner = (await rapport.storage.find_profile_ids(workspace_id, [normalized])).get(normalized)
    live = await rapport.storage.resolve_profile_id(workspace_id, owner) if owner else None
    if live is None:
        return None
    return (await rapport.storage.load_profiles(workspace_id, [live])).get(live)


def _message_body(message: InboxMessage, *, internal: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": message.id,
        "title": message.title,
        "body": message.body,
        "category": message.category,
        "topic": message.topic,
        "created_at": message.created_at.isoformat(),
        "read_at": None if message.read_at is None else message.read_at.isoformat(),
    }
    if internal:
        body["profile_id"] = message.profile_id
        body["metadata"] = message.metadata
    return body


async def _inbox_page(
    rapport: Rapport,
    profile: Profile | None,
    workspace_id: str,
    limit: int,
    before: int | None,
    unread: bool,
    *,
    internal: bool = False,
) -> dict[str, Any]:
    if profile is None:
        return {"messages": [], "unread": 0, "next_before": None}
    owners = [profile.id, *profile.merged_from]
    inbox = rapport.storage.inbox
    page = await inbox.list_messages(workspace_id, owners, limit, before, unread_only=unread)
    return {
        "messages": [_message_body(m, internal=internal) for m in page.messages],
        "unread": await inbox.unread_count(workspace_id, owners),
        "next_before": page.next_before,
    }


@router.get("/v1/inbox", summary="A user's in-app messages, newest first (write key)")
async def get_inbox(
    request: Request,
    user_id: str | None = Query(None, alias="userId"),
    anonymous_id: str | None = Query(None, alias="anonymousId"),
    limit: int = Query(20, ge=1, le=100),
    before: int | None = Query(None, ge=1, description="`next_before` from the previous page"),
    unread: bool = Query(False, description="only messages not read yet"),
) -> Response:
    """Anyone with the write key and the user's id can read this inbox (see the module
    documentation); an unknown user has an empty inbox."""
    key = await _write_key(request)
    rapport = get_rapport(request)
    profile = await _profile_of(rapport, key.workspace_id, _user(user_id, anonymous_id))
    return json_response(
        await _inbox_page(rapport, profile, key.workspace_id, limit, before, unread)
    )


@router.post(
    "/v1/inbox/{message_id}/read",
    summary="Mark an in-app message read; records In-App Message Read (write key)",
)
async def read_message(
    message_id: str,
    request: Request,
    user_id: str | None = Query(None, alias="userId"),
    anonymous_id: str | None = Query(None, alias="anonymousId"),
) -> Response:
    key = await _write_key(request)
    rapport = get_rapport(request)
    user = _user(user_id, anonymous_id)
    profile = await _profile_of(rapport, key.workspace_id, user)
    inbox = rapport.storage.inbox
    found = await inbox.get_message(key.workspace_id, message_id)
    # Another user's message is as unknown as a missing one.
    if (
        profile is None
        or found is None
        or found.profile_id not in (profile.id, *profile.merged_from)
    ):
        raise ApiError(
            404,
            "message_not_found",
            f"No inbox message {message_id!r} for this user",
            field="message",
        )
    now = rapport.clock.now()
    read = await inbox.mark_read(key.workspace_id, message_id, now) or found
    event = Event(
        workspace_id=key.workspace_id,
        message_id=_read_event_id(key.workspace_id, message_id),
        type="track",
        event=READ_EVENT,
        timestamp=now,
        received_at=now,
        source=source_of(key),
        properties={
            "message": found.idempotency_key,
            "inbox_message_id": found.id,
            "channel": IN_APP,
            **({"topic": found.topic} if found.topic is not None else {}),
            **{
                name: found.metadata[name]
                for name in ("journey_id", "step_id", "template")
                if name in found.metadata
            },
        },
        profile_id=profile.id,
    )
    # Reading twice appends once: the second event is a duplicate by message id.
    await rapport.event_log.append([event])
    rapport.processor.notify()
    return json_response(_message_body(read))


def _read_event_id(workspace_id: str, message_id: str) -> str:
    digest = hashlib.sha256(f"{workspace_id}\x00{message_id}".encode()).hexdigest()[:32]
    return f"inapp-read-{digest}"


@router.get(
    "/api/profiles/{ref:path}/inbox",
    summary="A profile's in-app messages, newest first (secret key)",
)
async def get_profile_inbox(
    ref: str,
    request: Request,
    limit: int = Query(20, ge=1, le=100),
    before: int | None = Query(None, ge=1, description="`next_before` from the previous page"),
    unread: bool = Query(False, description="only messages not read yet"),
    key: ApiKey = Depends(require_secret_key),
) -> Response:
    rapport = get_rapport(request)
    profile = await resolve_profile(rapport, key.workspace_id, ref)
    body = await _inbox_page(
        rapport, profile, key.workspace_id, limit, before, unread, internal=True
    )
    return json_response({"profile_id": profile.id, **body})
