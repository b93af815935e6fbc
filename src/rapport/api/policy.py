"""Admin API for the workspace policy: ``GET /api/policy`` and ``PUT /api/policy``.

The body of a PUT is the whole policy document (topics, consent, caps,
quiet_hours, timezone, addresses, confirmation; see docs/policies.md). A
wrong document gets 422 ``invalid_policy`` listing every error with its path
(``$.caps[0].window: ...``), ``field`` naming the first. Every write is the
next version; send ``If-Match: <version>`` to refuse a write over a version
you have not seen (409 ``policy_version_conflict``). A workspace that never
wrote one answers version 0 and the default policy.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from rapport.api.auth import get_rapport, require_secret_key
from rapport.api.definitions import json_response, read_definition
from rapport.api.errors import ApiError
from rapport.core.policy.document import DEFAULT_POLICY, PolicyVersionConflict, StoredPolicy
from rapport.core.policy.validate import parse_policy
from rapport.storage.base import ApiKey

router = APIRouter(prefix="/api/policy", tags=["policy"])

_EXAMPLE: dict[str, Any] = {
    "topics": [
        {"id": "offers", "name": "Offers and discounts"},
        {"id": "birthday", "name": "Birthday wishes", "default_subscribed": False},
        {"id": "delivery", "name": "Delivery alerts", "category": "transactional"},
    ],
    "caps": [
        {"id": "weekly-promotions", "category": "promotional", "max": 3, "window": "7d"},
        {"topic": "offers", "max": 1, "window": "calendar_day"},
    ],
    "quiet_hours": {"start": "21:00", "end": "09:00", "channels": ["sms", "push"]},
    "timezone": {"trait": "timezone", "default": "Europe/Paris"},
}


def policy_body(stored: StoredPolicy | None) -> dict[str, Any]:
    """The policy in force as answered: its version (0: the default), time and document."""
    return {
        "version": 0 if stored is None else stored.version,
        "updated_at": None if stored is None else stored.updated_at.isoformat(),
        "policy": msgspec.to_builtins(DEFAULT_POLICY if stored is None else stored.document),
    }


def _expected_version(request: Request) -> int | None:
    header = request.headers.get("if-match")
    if header is None:
        return None
    text = header.strip().strip('"')
    if not text.isdigit():
        raise ApiError(
            400,
            "invalid_if_match",
            "If-Match must be the policy version you read (a whole number)",
            field="If-Match",
        )
    return int(text)


@router.get("", summary="The workspace policy in force (version 0: the default)")
async def get_policy(
    request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    rapport = get_rapport(request)
    return json_response(policy_body(await rapport.storage.get_policy(key.workspace_id)))


@router.put(
    "",
    summary="Replace the workspace policy (every write is the next version)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "description": "A policy document"},
                    "example": _EXAMPLE,
                }
            },
        }
    },
)
async def put_policy(
    request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    rapport = get_rapport(request)
    expected = _expected_version(request)
    parsed = parse_policy(await read_definition(request))
    if isinstance(parsed, list):
        first = parsed[0]
        raise ApiError(
            422,
            "invalid_policy",
            str(first),
            field=first.path,
            extra={"errors": [error.as_json() for error in parsed]},
        )
    try:
        stored = await rapport.storage.put_policy(
            key.workspace_id, parsed, rapport.clock.now(), expected_version=expected
        )
    except PolicyVersionConflict as conflict:
        raise ApiError(
            409,
            "policy_version_conflict",
            f"The policy is at version {conflict.current}, not {conflict.expected};"
            " read it again and retry",
            field="If-Match",
        ) from None
    return json_response(policy_body(stored))
