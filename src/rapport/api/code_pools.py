"""Admin API for code pools: create and list pools, upload codes, read counts.

A template reads a code as ``codes.<pool id>``; the composer claims one per
customer per pool when a message is sent (``rapport.core.code_pools``,
docs/code-pools.md). Codes are uploaded as a JSON array of strings (or
``{"codes": [...]}``) or as CSV / plain text, one code per line in the first
column, an optional ``code`` header line skipped. Re-uploading a code the pool
holds changes nothing; the answer counts what was added and what was a
duplicate.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from rapport.api.auth import get_rapport, require_secret_key
from rapport.api.definitions import json_response, read_definition_object
from rapport.api.errors import ApiError
from rapport.core.code_pools import (
    MAX_CODES_PER_UPLOAD,
    POOL_ID_PATTERN,
    CodeError,
    CodePool,
    CodePoolExists,
    CodePoolNotFound,
    PoolStats,
    clean_codes,
    is_pool_id,
    pool_errors,
)
from rapport.runtime.service import Rapport
from rapport.storage.base import ApiKey

router = APIRouter(prefix="/api/code-pools", tags=["code pools"])

MAX_UPLOAD_BYTES = 16 * 1024 * 1024
"""Enough for ``MAX_CODES_PER_UPLOAD`` codes of generous length."""

_CODES_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "array", "items": {"type": "string"}},
                        {
                            "type": "object",
                            "properties": {"codes": {"type": "array", "items": {"type": "string"}}},
                        },
                    ]
                },
                "example": ["SPRING-7Q2M", "SPRING-K3PD"],
            },
            "text/csv": {"schema": {"type": "string"}, "example": "code\nSPRING-7Q2M\n"},
        },
    }
}
_POOL_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {
                        "id": {"type": "string", "pattern": f"^{POOL_ID_PATTERN}$"},
                        "description": {"type": "string"},
                    },
                },
                "example": {"id": "inconvenience-15", "description": "15% apology codes"},
            }
        },
    }
}


def _pool_body(pool: CodePool, stats: PoolStats) -> dict[str, Any]:
    return {
        "id": pool.id,
        "description": pool.description,
        "created_at": pool.created_at.isoformat(),
        **_stats_body(stats),
    }


def _stats_body(stats: PoolStats) -> dict[str, int]:
    return {"available": stats.available, "claimed": stats.claimed, "total": stats.total}


def _not_found(pool_id: str) -> ApiError:
    return ApiError(404, "code_pool_not_found", f"No code pool {pool_id!r}", field="id")


def _invalid(error: CodeError, code: str = "invalid_code_pool") -> ApiError:
    return ApiError(422, code, f"{error.field}: {error.message}", field=error.field)


async def _existing(rapport: Rapport, workspace_id: str, pool_id: str) -> CodePool:
    pool = (
        await rapport.storage.code_pools.get_pool(workspace_id, pool_id)
        if is_pool_id(pool_id)
        else None
    )
    if pool is None:
        raise _not_found(pool_id)
    return pool


@router.post("", summary="Create a code pool", status_code=201, openapi_extra=_POOL_BODY)
async def create_code_pool(request: Request, key: ApiKey = Depends(require_secret_key)) -> Response:
    rapport = get_rapport(request)
    body = await read_definition_object(request, ("id", "description"), "invalid_code_pool")
    errors = pool_errors(body)
    if errors:
        raise _invalid(errors[0])
    pool = CodePool(
        workspace_id=key.workspace_id,
        id=body["id"],
        description=body.get("description", ""),
        created_at=rapport.clock.now(),
    )
    try:
        await rapport.storage.code_pools.create_pool(pool)
    except CodePoolExists:
        raise ApiError(
            409, "code_pool_exists", f"Code pool {pool.id!r} already exists", field="id"
        ) from None
    return json_response(_pool_body(pool, PoolStats(available=0, claimed=0)), 201)


@router.get("", summary="The workspace's code pools with their counts")
async def list_code_pools(request: Request, key: ApiKey = Depends(require_secret_key)) -> Response:
    store = get_rapport(request).storage.code_pools
    pools = await store.list_pools(key.workspace_id)
    stats = await store.pool_stats(key.workspace_id, [pool.id for pool in pools])
    return json_response({"code_pools": [_pool_body(pool, stats[pool.id]) for pool in pools]})


@router.get("/{pool_id}", summary="One code pool with its counts")
async def get_code_pool(
    pool_id: str, request: Request, key: ApiKey = Depends(require_secret_key)
) -> Response:
    rapport = get_rapport(request)
    pool = await _existing(rapport, key.workspace_id, pool_id)
    stats = await rapport.storage.code_pools.pool_stats(key.workspace_id, [pool_id])
    return json_response(_pool_body(pool, stats[pool_id]))


@router.get("/{pool_id}/stats", summary="How many codes are available and claimed")
async def code_pool_stats(
    pool_id: str, request: Request, key: ApiKey = Depends(require_secret_key)
) -> Response:
    rapport = get_rapport(request)
    await _existing(rapport, key.workspace_id, pool_id)
    stats = await rapport.storage.code_pools.pool_stats(key.workspace_id, [pool_id])
    return json_response({"id": pool_id, **_stats_body(stats[pool_id])})


@router.post(
    "/{pool_id}/codes",
    summary="Upload codes (JSON array or CSV); duplicates are skipped",
    openapi_extra=_CODES_BODY,
)
async def add_codes(
    pool_id: str, request: Request, key: ApiKey = Depends(require_secret_key)
) -> Response:
    rapport = get_rapport(request)
    await _existing(rapport, key.workspace_id, pool_id)
    raw = await request.body()
    if len(raw) > MAX_UPLOAD_BYTES:
        raise ApiError(413, "upload_too_large", f"at most {MAX_UPLOAD_BYTES} bytes per upload")
    values = _upload_values(request.headers.get("content-type", ""), raw)
    if len(values) > MAX_CODES_PER_UPLOAD:
        raise ApiError(
            422, "invalid_codes", f"at most {MAX_CODES_PER_UPLOAD} codes per upload", field="codes"
        )
    codes = clean_codes(values)
    if isinstance(codes, CodeError):
        raise _invalid(codes, "invalid_codes")
    if not codes:
        raise ApiError(422, "invalid_codes", "the upload holds no codes", field="codes")
    try:
        added = await rapport.storage.code_pools.add_codes(
            key.workspace_id, pool_id, codes, rapport.clock.now()
        )
    except CodePoolNotFound:
        raise _not_found(pool_id) from None
    stats = await rapport.storage.code_pools.pool_stats(key.workspace_id, [pool_id])
    return json_response(
        {
            "id": pool_id,
            "added": added.added,
            "duplicates": added.duplicates,
            **_stats_body(stats[pool_id]),
        }
    )


def _upload_values(content_type: str, raw: bytes) -> list[Any]:
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("text/csv", "text/plain"):
        return _csv_codes(raw)
    if media not in ("", "application/json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send codes as application/json (an array of strings) or text/csv",
            field="Content-Type",
        )
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"Body is not valid JSON: {exc}") from None
    if isinstance(body, dict) and set(body) == {"codes"}:
        body = body["codes"]
    if not isinstance(body, list):
        raise ApiError(
            422,
            "invalid_codes",
            'Send an array of codes, or {"codes": [...]}',
            field="codes",
        )
    return body


def _csv_codes(raw: bytes) -> list[Any]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_csv", "CSV must be UTF-8", field="codes") from None
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error as exc:
        raise ApiError(400, "invalid_csv", f"CSV cannot be read: {exc}", field="codes") from None
    if rows and rows[0][0].strip().lower() == "code":
        rows = rows[1:]
    return [row[0] for row in rows]
