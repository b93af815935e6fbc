"""What every definition endpoint shares: a bounded JSON body, a compiled condition.

Definitions (conditions, segments, and later journeys and policies) are read
the same way and a wrong condition gets the same answer everywhere: 422
``invalid_condition`` listing every error with its path inside the condition,
``field`` naming the first one as a path of the request body.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from rapport.api.errors import ApiError
from rapport.core.conditions import CompiledCondition, InvalidCondition, compile_condition

MAX_DEFINITION_BYTES = 256 * 1024
_ENCODER = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200) -> Response:
    """``body`` encoded with msgspec (datetimes as RFC 3339, no FastAPI encoder pass)."""
    return Response(_ENCODER.encode(body), status_code=status, media_type="application/json")


async def read_definition(request: Request) -> Any:
    """The request's JSON body, refusing bodies over ``MAX_DEFINITION_BYTES``."""
    raw = await request.body()
    if len(raw) > MAX_DEFINITION_BYTES:
        raise ApiError(413, "definition_too_large", f"at most {MAX_DEFINITION_BYTES} bytes")
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"Body is not valid JSON: {exc}") from None


async def read_definition_object(
    request: Request, fields: Collection[str], invalid_code: str
) -> dict[str, Any]:
    """The body as a JSON object holding only ``fields``; 422 ``invalid_code`` when
    it is not an object, 422 ``unknown_field`` naming the first unknown field."""
    body = await read_definition(request)
    if not isinstance(body, dict):
        raise ApiError(422, invalid_code, "The body must be a JSON object")
    for name in sorted(body):
        if name not in fields:
            raise ApiError(
                422,
                "unknown_field",
                f"Unknown field {name!r}; a definition has {', '.join(sorted(fields))}",
                field=name,
            )
    return body


def compile_or_422(tree: Any, *, body_path: str = "$") -> CompiledCondition:
    """``tree`` compiled, or a 422 listing every error.

    ``body_path`` is where the condition sits in the body (``condition`` in
    a segment), so ``field`` points into the body the client sent.
    """
    try:
        return compile_condition(tree)
    except InvalidCondition as exc:
        first = exc.errors[0]
        field = first.path if body_path == "$" else body_path + first.path.removeprefix("$")
        raise ApiError(
            422,
            "invalid_condition",
            str(first),
            field=field,
            extra={"errors": [{"path": e.path, "message": e.message} for e in exc.errors]},
        ) from None
