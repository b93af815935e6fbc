"""Workspaces, their API keys and their rejected input on SQLite.

Jobs for ``SqliteDatabase`` (see ``sqlite_db``) over the tables of
``rapport_0001_initial.sql``.
"""

from __future__ import annotations

import sqlite3

from rapport.core.model import Rejection
from rapport.storage.base import ApiKey, Workspace
from rapport.storage.sqlite_db import from_micros, to_micros

_NO_UPPER_BOUND = 2**63 - 1

_RejectionRow = tuple[int, str, int, str, str, str | None, int | None, str | None, str | None, str]
RejectionParams = tuple[str, int, str, str, str | None, int | None, str | None, str | None, str]
ApiKeyParams = tuple[str, str, str, str, str | None, int, int | None]


def ensure_workspace(
    conn: sqlite3.Connection, name: str, new_id: str, created_at: int
) -> Workspace:
    conn.execute(
        "INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO NOTHING",
        (new_id, name, created_at),
    )
    row = conn.execute(
        "SELECT id, name, created_at FROM workspaces WHERE name = ?", (name,)
    ).fetchone()
    return _workspace(row)


def get_workspace(conn: sqlite3.Connection, workspace_id: str) -> Workspace | None:
    row = conn.execute(
        "SELECT id, name, created_at FROM workspaces WHERE id = ?", (workspace_id,)
    ).fetchone()
    return None if row is None else _workspace(row)


def find_workspace(conn: sqlite3.Connection, name: str) -> Workspace | None:
    row = conn.execute(
        "SELECT id, name, created_at FROM workspaces WHERE name = ?", (name,)
    ).fetchone()
    return None if row is None else _workspace(row)


def api_key_params(key: ApiKey) -> ApiKeyParams:
    """The row ``create_api_key`` stores, built before the writer sees it."""
    return (
        key.id,
        key.workspace_id,
        key.kind,
        key.key_hash,
        key.name,
        to_micros(key.created_at),
        None if key.revoked_at is None else to_micros(key.revoked_at),
    )


def create_api_key(conn: sqlite3.Connection, row: ApiKeyParams) -> None:
    conn.execute(
        "INSERT INTO api_keys"
        " (id, workspace_id, kind, key_hash, name, created_at, revoked_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        row,
    )


def find_api_key(conn: sqlite3.Connection, key_hash: str) -> ApiKey | None:
    row = conn.execute(
        "SELECT id, workspace_id, kind, key_hash, created_at, name, revoked_at"
        " FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
        (key_hash,),
    ).fetchone()
    if row is None:
        return None
    key_id, workspace_id, kind, stored_hash, created_at, name, revoked_at = row
    return ApiKey(
        id=key_id,
        workspace_id=workspace_id,
        kind=kind,
        key_hash=stored_hash,
        created_at=from_micros(created_at),
        name=name,
        revoked_at=None if revoked_at is None else from_micros(revoked_at),
    )


def rejection_params(r: Rejection) -> RejectionParams:
    """The row ``record_rejections`` stores, built before the writer sees it."""
    return (
        r.workspace_id,
        to_micros(r.received_at),
        r.code,
        r.message,
        r.field,
        r.index,
        r.message_id,
        r.source,
        r.payload,
    )


def record_rejections(conn: sqlite3.Connection, rows: list[RejectionParams]) -> None:
    conn.executemany(
        "INSERT INTO rejections (workspace_id, received_at, code, message, field,"
        " batch_index, message_id, source, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def list_rejections(
    conn: sqlite3.Connection, workspace_id: str, limit: int, before: int | None
) -> list[Rejection]:
    upper = _NO_UPPER_BOUND if before is None else before
    rows = conn.execute(
        "SELECT id, workspace_id, received_at, code, message, field, batch_index,"
        " message_id, source, payload FROM rejections"
        " WHERE workspace_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
        (workspace_id, upper, limit),
    ).fetchall()
    return [_rejection(row) for row in rows]


def _workspace(row: tuple[str, str, int]) -> Workspace:
    workspace_id, name, created_at = row
    return Workspace(id=workspace_id, name=name, created_at=from_micros(created_at))


def _rejection(row: _RejectionRow) -> Rejection:
    (rid, workspace_id, received_at, code, message, field, index, message_id, source, payload) = row
    return Rejection(
        id=rid,
        workspace_id=workspace_id,
        received_at=from_micros(received_at),
        code=code,
        message=message,
        field=field,
        index=index,
        message_id=message_id,
        source=source,
        payload=payload,
    )
