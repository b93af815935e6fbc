"""Template versions on SQLite (table of ``rapport_0009_templates.sql``).

Jobs for ``SqliteDatabase`` (see ``sqlite_db``): writes run on the single
writer thread, so reading an id's latest version and storing the next one
is race free.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

import msgspec

from rapport.core.templates.definitions import (
    TemplateAlreadyExists,
    TemplateDefinition,
    TemplateDraft,
    deleted_template,
    next_template,
)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(TemplateDefinition).decode

_LATEST_SQL = (
    "SELECT doc FROM template_versions WHERE workspace_id = ? AND template_id = ?"
    " ORDER BY version DESC LIMIT 1"
)
_VERSION_SQL = (
    "SELECT doc FROM template_versions"
    " WHERE workspace_id = ? AND template_id = ? AND version = ? AND status = 'active'"
)
_LIST_SQL = """
SELECT doc FROM template_versions AS t
WHERE workspace_id = ? AND status = 'active' AND version = (
    SELECT max(version) FROM template_versions
    WHERE workspace_id = t.workspace_id AND template_id = t.template_id
)
"""


def put_template(
    conn: sqlite3.Connection, draft: TemplateDraft, now: datetime, create_only: bool
) -> TemplateDefinition:
    previous = latest(conn, draft.workspace_id, draft.id)
    if create_only and previous is not None and previous.active:
        raise TemplateAlreadyExists(draft.workspace_id, draft.id)
    return _store(conn, next_template(previous, draft, now))


def get_template(
    conn: sqlite3.Connection, workspace_id: str, template_id: str, version: int | None
) -> TemplateDefinition | None:
    if version is None:
        found = latest(conn, workspace_id, template_id)
        return found if found is not None and found.active else None
    row = conn.execute(_VERSION_SQL, (workspace_id, template_id, version)).fetchone()
    return None if row is None else _decode(row[0])


def list_templates(conn: sqlite3.Connection, workspace_id: str) -> list[TemplateDefinition]:
    found = [_decode(doc) for (doc,) in conn.execute(_LIST_SQL, (workspace_id,)).fetchall()]
    return sorted(found, key=lambda definition: definition.id)


def delete_template(
    conn: sqlite3.Connection, workspace_id: str, template_id: str, now: datetime
) -> TemplateDefinition | None:
    previous = latest(conn, workspace_id, template_id)
    if previous is None or not previous.active:
        return None
    return _store(conn, deleted_template(previous, now))


def latest(
    conn: sqlite3.Connection, workspace_id: str, template_id: str
) -> TemplateDefinition | None:
    row = conn.execute(_LATEST_SQL, (workspace_id, template_id)).fetchone()
    return None if row is None else _decode(row[0])


def _store(conn: sqlite3.Connection, definition: TemplateDefinition) -> TemplateDefinition:
    doc = _encode(definition)
    conn.execute(
        "INSERT INTO template_versions (workspace_id, template_id, version, status, doc)"
        " VALUES (?, ?, ?, ?, ?)",
        (definition.workspace_id, definition.id, definition.version, definition.status, doc),
    )
    # What a reader will get back (the caller's parts are not shared).
    return _decode(doc)
