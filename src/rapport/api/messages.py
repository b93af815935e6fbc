"""Admin API for outbound messages: "why did she get this?", and the dead-letter list.

``GET /api/messages/{idempotency_key}`` answers from stored facts: the event
that triggered the journey, the journey, version and step, the template (and
the version the sent message was rendered from), the channel and address the
policy gate chose with every check it made and its outcome, then delivery:
attempts, status, last error, the provider's message id.

``GET /api/profiles/{ref}/messages`` lists one profile's messages, newest
first, with those sent to the profiles merged into hers (``merged_from``: a
message keeps the profile id it was sent to); ``GET /api/dead-letters``
lists messages that gave up (retries spent or a permanent error), and
``POST /api/dead-letters/{key}/replay`` puts one back in the outbox with its
attempts reset (see ``rapport.runtime.sender``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from rapport.api.auth import get_rapport, require_secret_key
from rapport.api.definitions import json_response
from rapport.api.errors import ApiError
from rapport.api.profiles import resolve_profile
from rapport.core.journeys.effects import SendEffect
from rapport.storage.base import ApiKey, Storage
from rapport.storage.journey_runs import OutboxMessage
from rapport.storage.outbox import OutboxPage

router = APIRouter(tags=["messages"])


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def message_body(message: OutboxMessage) -> dict[str, Any]:
    """A message as answered: what it is, why it went (or not), how delivery went."""
    effect = message.effect
    verdict = message.verdict
    body: dict[str, Any] = {
        "idempotency_key": message.idempotency_key,
        "profile_id": message.profile_id,
        "status": message.status,
        "created_at": _time(message.created_at),
        "updated_at": _time(message.updated_at),
        "journey": {
            "id": effect.journey_id,
            "version": effect.version,
            "step_id": effect.step_id,
            "instance_id": effect.instance_id,
        },
    }
    if isinstance(effect, SendEffect):
        body.update(
            kind="send",
            trigger={"message_id": effect.trigger_message_id},
            template={
                # The template actually rendered (a channel variant such as
                # ``delivery-alert-sms``); the step's own when not recorded.
                "id": message.template_id or effect.template,
                "version": message.template_version,
                "step_template": effect.template,
            },
            category=effect.category,
            topic=effect.topic,
            channel=verdict.channel if verdict is not None else None,
            address=verdict.address if verdict is not None else None,
        )
    else:
        body.update(
            kind="webhook",
            trigger={"message_id": None},
            channel="webhook",
            address=effect.url,
            webhook={"url": effect.url, "method": effect.method},
        )
    body["gate"] = None if verdict is None else msgspec.to_builtins(verdict)
    body["delivery"] = {
        "attempts": message.attempts,
        "next_attempt_at": _time(message.next_attempt_at) if message.status == "pending" else None,
        "last_error": message.error,
        "provider_message_id": message.provider_message_id,
        "sent_at": _time(message.sent_at),
    }
    return body


async def _with_trigger(request: Request, key: ApiKey, message: OutboxMessage) -> dict[str, Any]:
    """The body, its trigger completed from the journey instance when the effect has none."""
    body = message_body(message)
    if body["trigger"]["message_id"] is None:
        instance = await get_rapport(request).storage.get_journey_instance(
            key.workspace_id, message.effect.instance_id
        )
        if instance is not None:
            body["trigger"]["message_id"] = instance.entered_by
    return body


@router.get(
    "/api/profiles/{ref:path}/messages",
    summary="A profile's outbound messages, newest first, each with why it was sent",
)
async def list_profile_messages(
    ref: str,
    request: Request,
    key: Annotated[ApiKey, Depends(require_secret_key)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[
        int | None, Query(ge=1, description="`next_before` from the previous page")
    ] = None,
) -> Response:
    rapport = get_rapport(request)
    profile = await resolve_profile(rapport, key.workspace_id, ref)
    owners = [profile.id, *profile.merged_from]
    page = await profiles_messages(rapport.storage, key.workspace_id, owners, limit, before)
    return json_response(
        {
            "profile_id": profile.id,
            "messages": [message_body(m) for m in page.messages],
            "next_before": page.next_cursor,
        }
    )


async def profiles_messages(
    storage: Storage, workspace_id: str, profile_ids: list[str], limit: int, before: int | None
) -> OutboxPage:
    """The messages to any of ``profile_ids``, newest ``seq`` first, one page.

    Messages keep the profile id they were sent to, so a merged profile's are
    read under each id it absorbed; ``seq`` is one sequence for the whole
    outbox, so the pages merge into one order and ``next_cursor`` stays a seq.
    Each id's page has at most ``limit`` messages: the newest ``limit`` of the
    union are among them, and there is more when the union has more or any id's
    page was cut.
    """
    pages = [
        await storage.list_profile_messages(workspace_id, owner, limit, before)
        for owner in dict.fromkeys(profile_ids)
    ]
    merged = sorted((m for p in pages for m in p.messages), key=lambda m: m.seq, reverse=True)
    chosen = merged[:limit]
    more = len(merged) > limit or any(p.next_cursor is not None for p in pages)
    return OutboxPage(chosen, chosen[-1].seq if more and chosen else None)


@router.get(
    "/api/messages/{idempotency_key:path}",
    summary="One message: trigger, journey, step, template, policy checks, delivery",
)
async def get_message(
    idempotency_key: str, request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    message = await get_rapport(request).storage.get_outbox(key.workspace_id, idempotency_key)
    if message is None:
        raise _not_found(idempotency_key)
    return json_response(await _with_trigger(request, key, message))


@router.get("/api/dead-letters", summary="Messages that gave up, oldest first")
async def list_dead_letters(
    request: Request,
    key: Annotated[ApiKey, Depends(require_secret_key)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[
        int | None, Query(ge=1, description="`next_after` from the previous page")
    ] = None,
) -> Response:
    page = await get_rapport(request).storage.list_dead(key.workspace_id, limit, after)
    return json_response(
        {"messages": [message_body(m) for m in page.messages], "next_after": page.next_cursor}
    )


@router.post(
    "/api/dead-letters/{idempotency_key:path}/replay",
    summary="Send a dead message again: back to pending, attempts reset",
)
async def replay_dead_letter(
    idempotency_key: str, request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    rapport = get_rapport(request)
    replayed = await rapport.storage.replay_dead(
        key.workspace_id, idempotency_key, rapport.clock.now()
    )
    if replayed is None:
        found = await rapport.storage.get_outbox(key.workspace_id, idempotency_key)
        if found is None:
            raise _not_found(idempotency_key)
        raise ApiError(
            409,
            "not_dead",
            f"Message {idempotency_key!r} is {found.status}; only dead messages are replayed",
            field="idempotency_key",
        )
    if rapport.sender is not None:
        rapport.sender.notify()
    return json_response(message_body(replayed))


def _not_found(idempotency_key: str) -> ApiError:
    return ApiError(
        404, "message_not_found", f"No message {idempotency_key!r}", field="idempotency_key"
    )
