"""OpenAPI documentation of the ingest routes: request bodies and answers.

The routes validate by hand (see ``rapport.core.tracking``) for speed, so the
request schemas are written here for the docs rather than derived from models.
"""

from __future__ import annotations

from typing import Any

from rapport.core.model import EVENT_TYPES

_ID = {"type": ["string", "number"], "description": "Numbers are coerced to strings."}
_OBJECT = {"type": "object", "additionalProperties": True}
_TIME = {"type": "string", "format": "date-time"}

_COMMON: dict[str, Any] = {
    "messageId": {
        "type": "string",
        "maxLength": 99,
        "description": "Deduplication key; generated when absent.",
    },
    "userId": _ID,
    "anonymousId": _ID,
    "timestamp": {**_TIME, "description": "When it happened, by the device's clock."},
    "sentAt": {**_TIME, "description": "When the device sent it; corrects clock skew."},
    "context": _OBJECT,
    "integrations": _OBJECT,
    "writeKey": {"type": "string", "description": "If not sent as Basic auth user."},
}

_PER_TYPE: dict[str, dict[str, Any]] = {
    "track": {"event": {"type": "string"}, "properties": _OBJECT},
    "identify": {"traits": _OBJECT},
    "page": {"name": {"type": "string"}, "category": {"type": "string"}, "properties": _OBJECT},
    "screen": {"name": {"type": "string"}, "category": {"type": "string"}, "properties": _OBJECT},
    "group": {"groupId": _ID, "traits": _OBJECT},
    "alias": {"previousId": _ID},
}

_REQUIRED: dict[str, list[str]] = {
    "track": ["event"],
    "group": ["groupId"],
    "alias": ["previousId", "userId"],
}


def _event_schema(event_type: str | None) -> dict[str, Any]:
    properties = dict(_COMMON)
    if event_type is None:
        properties["type"] = {"type": "string", "enum": sorted(EVENT_TYPES)}
        for fields in _PER_TYPE.values():
            properties.update(fields)
    else:
        properties.update(_PER_TYPE[event_type])
    schema: dict[str, Any] = {
        "type": "object",
        "description": "Needs userId or anonymousId.",
        "properties": properties,
    }
    required = ["type"] if event_type is None else _REQUIRED.get(event_type, [])
    if required:
        schema["required"] = required
    return schema


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    # Browsers send text/plain to avoid a CORS preflight; the body is JSON either way.
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "text/plain": {"schema": schema},
            },
        }
    }


BATCH_BODY = _body(
    {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {"type": "array", "maxItems": 2500, "items": _event_schema(None)},
            "context": {**_OBJECT, "description": "Merged under each event's context."},
            "integrations": {**_OBJECT, "description": "Merged under each event's."},
            "sentAt": _TIME,
            "writeKey": {"type": "string"},
        },
    }
)

SINGLE_BODIES = {t: _body(_event_schema(t)) for t in sorted(EVENT_TYPES)}

_AUTH = (
    "Authenticate with the write key as HTTP Basic user (`<writeKey>:`), the body's "
    "`writeKey` or the `X-Write-Key` header; a secret key works too. The body may be "
    "gzipped (`Content-Encoding: gzip`) and is JSON whatever the Content-Type. "
    "A 200 means the accepted events are durable."
)

DESCRIPTIONS = {
    "batch": (
        "Up to 2,500 events and 500 KB per request, 32 KB per event. Invalid events are "
        "refused one by one (listed in `rejected`) while the others are accepted; if none "
        "is valid the answer is 400. " + _AUTH
    ),
    **{t: f"One `{t}` call (the type comes from the path). " + _AUTH for t in EVENT_TYPES},
}

_ERROR = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
            "required": ["code", "message"],
        }
    }
}

INGEST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Accepted (durable); duplicates and refused events are counted.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "success": {"type": "boolean"},
                        "accepted": {"type": "integer"},
                        "duplicates": {"type": "integer"},
                        "rejected": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "index": {"type": "integer"},
                                    "code": {"type": "string"},
                                    "message": {"type": "string"},
                                    "field": {"type": "string"},
                                },
                            },
                        },
                    },
                }
            }
        },
    },
    400: {"description": "Malformed, too large, or no valid event.", "content": _ERROR},
    401: {"description": "Missing, unknown or revoked key.", "content": _ERROR},
    415: {"description": "Unsupported Content-Encoding.", "content": _ERROR},
    429: {"description": "Processing is behind; retry after Retry-After.", "content": _ERROR},
}
