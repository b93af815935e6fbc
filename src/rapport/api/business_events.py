"""``POST /v1/business-events``: an event about the business, fanned out to customers.

A shipment delayed or an item back in stock is not something a customer
did, and it may reach thousands of them: only a secret key may send one (a
browser's write key could otherwise message every customer). The event is
logged once by its ``messageId`` (a retry is answered ``duplicate: true``
and fans out nothing again); the journey-trigger consumer then fans it out
to the customers each ``business_event`` trigger names
(``rapport.runtime.business_events``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from rapport.api.auth import get_rapport, require_secret_key
from rapport.api.errors import ApiError
from rapport.api.ingest import read_body
from rapport.core.journeys.triggers import BUSINESS_SOURCE
from rapport.core.model import Event
from rapport.storage.base import ApiKey

router = APIRouter(tags=["journeys"])

MAX_BODY_BYTES = 256 * 1024
MAX_TEXT = 200
FIELDS = ("event", "messageId", "properties", "timestamp")


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_business_event", message, field=field)


def parse_business_event(raw: bytes, workspace_id: str, key_id: str, now: datetime) -> Event:
    """The logged form of a request body; ``ApiError`` (422 naming the field) if it is wrong."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ApiError(400, "invalid_json", "The body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _invalid("body", "The body must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise _invalid(unknown[0], f"Unknown field {unknown[0]!r}; fields: {', '.join(FIELDS)}")
    name = body.get("event")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_TEXT:
        raise _invalid("event", f"event is required: the event's name (1-{MAX_TEXT} characters)")
    message_id = body.get("messageId")
    if not isinstance(message_id, str) or not message_id.strip() or len(message_id) > MAX_TEXT:
        raise _invalid(
            "messageId",
            f"messageId is required (1-{MAX_TEXT} characters): it makes a retry harmless",
        )
    properties = body.get("properties", {})
    if not isinstance(properties, dict):
        raise _invalid("properties", "properties must be an object")
    timestamp = now
    if "timestamp" in body:
        timestamp = _timestamp(body["timestamp"])
    return Event(
        workspace_id=workspace_id,
        message_id=message_id,
        type="track",
        event=name,
        timestamp=timestamp,
        received_at=now,
        source=BUSINESS_SOURCE,
        properties=properties,
        context={"rapport_sent_by": f"admin:{key_id}"},
    )


def _timestamp(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    raise _invalid("timestamp", "timestamp must be an ISO 8601 instant with a time zone")


@router.post(
    "/v1/business-events",
    summary="Send a business event (secret key): it fans out to the customers it concerns",
)
async def post_business_event(
    request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    """Body: ``event`` (name), ``messageId`` (idempotency), ``properties``,
    optional ``timestamp``. 200 ``{"messageId", "duplicate"}`` once it is
    durable; the fan-out follows asynchronously (docs/journeys.md)."""
    rapport = get_rapport(request)
    raw = await read_body(request, MAX_BODY_BYTES)
    event = parse_business_event(raw, key.workspace_id, key.id, rapport.clock.now())
    fresh = await rapport.event_log.append([event])
    rapport.journey_triggers.notify()
    return JSONResponse({"messageId": event.message_id, "duplicate": not fresh[0]})
