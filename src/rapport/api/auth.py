"""Who is calling: write keys for ingest, secret keys (Bearer) for the admin API."""

from __future__ import annotations

import base64
import binascii

from fastapi import Request

from rapport.api.errors import ApiError
from rapport.runtime.service import Rapport
from rapport.storage.base import ApiKey


def get_rapport(request: Request) -> Rapport:
    rapport: Rapport = request.app.state.rapport
    return rapport


def basic_auth_user(request: Request) -> str | None:
    """The user part of ``Authorization: Basic base64(user:password)``."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(
            401,
            "invalid_auth",
            "Authorization header is not valid Basic auth",
            field="Authorization",
        ) from None
    return decoded.partition(":")[0]


async def require_secret_key(request: Request) -> ApiKey:
    """FastAPI dependency: a valid secret key from ``Authorization: Bearer``."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "missing_secret_key",
            "Send a secret key as 'Authorization: Bearer <key>'",
            field="Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = await get_rapport(request).authenticate(token.strip())
    if key is None:
        raise ApiError(
            401,
            "invalid_key",
            "Unknown or revoked key",
            field="Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if key.kind != "secret":
        raise ApiError(
            403,
            "forbidden",
            "Write keys can only ingest events; use a secret key",
            field="Authorization",
        )
    return key
