"""The condition language over HTTP: its published JSON Schema and a validator.

``GET /api/schemas/condition`` needs no key: a schema is not a secret, and
editors (and the console) fetch it to check definitions as they are written.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from rapport.api.auth import require_secret_key
from rapport.api.definitions import compile_or_422, read_definition
from rapport.core.conditions import CONDITION_SCHEMA
from rapport.storage.base import ApiKey

router = APIRouter(tags=["conditions"])

_ENCODER = msgspec.json.Encoder()


def _json(body: Any, status: int = 200, media_type: str = "application/json") -> Response:
    return Response(_ENCODER.encode(body), status_code=status, media_type=media_type)


@router.get("/api/schemas/condition", summary="The JSON Schema of the condition language")
async def condition_schema() -> Response:
    return _json(CONDITION_SCHEMA, media_type="application/schema+json")


@router.post(
    "/api/conditions/validate",
    summary="Check a condition; list every error with the path of the wrong node",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "A condition, as GET /api/schemas/condition describes",
                    },
                    "example": {
                        "event": "Product Viewed",
                        "aggregate": "count",
                        "window": "1h",
                        "key": "properties.product_id",
                        "op": "gte",
                        "value": 3,
                    },
                }
            },
        }
    },
)
async def validate(request: Request, _: Annotated[ApiKey, Depends(require_secret_key)]) -> Response:
    compiled = compile_or_422(await read_definition(request))
    return _json(
        {
            "valid": True,
            "depends_on": {
                "traits": sorted(compiled.traits),
                "events": sorted(compiled.events),
                "segments": sorted(compiled.segments),
                "consents": sorted(compiled.consents),
            },
            "time_dependent": compiled.time_dependent,
        }
    )
