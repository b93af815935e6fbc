"""What every definition endpoint shares: a bounded JSON body, a compiled condition.

Definitions (conditions, segments, and later journeys and policies) are read
the same way and a wrong condition gets the same answer everywhere: 422
``invalid_condition`` listing every error with its path inside the condition,
``field`` naming the first one as a path of the request body.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request

from rapport.api.errors import ApiError
from rapport.core.conditions import CompiledCondition, InvalidCondition, compile_condition

MAX_DEFINITION_BYTES = 256 * 1024


async def read_definition(request: Request) -> Any:
    """The request's JSON body, refusing bodies over ``MAX_DEFINITION_BYTES``."""
    raw = await request.body()
    if len(raw) > MAX_DEFINITION_BYTES:
        raise ApiError(413, "definition_too_large", f"at most {MAX_DEFINITION_BYTES} bytes")
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"Body is not valid JSON: {exc}") from None


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
