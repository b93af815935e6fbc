"""Policy documents on SQLite (table of ``rapport_0010_policies.sql``).

Jobs for ``SqliteDatabase`` (see ``sqlite_db``): writes run on the single
writer thread, so reading the latest version and storing the next one is
race free.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from rapport.core.policy.document import PolicyDocument, StoredPolicy
from rapport.storage.policies import decode_policy, encode_policy, next_policy

_LATEST_SQL = "SELECT coalesce(max(version), 0) FROM policy_versions WHERE workspace_id = ?"


def put_policy(
    conn: sqlite3.Connection,
    workspace_id: str,
    document: PolicyDocument,
    now: datetime,
    expected_version: int | None,
) -> StoredPolicy:
    (current,) = conn.execute(_LATEST_SQL, (workspace_id,)).fetchone()
    stored = next_policy(workspace_id, int(current), document, now, expected_version)
    doc = encode_policy(stored)
    conn.execute(
        "INSERT INTO policy_versions (workspace_id, version, doc) VALUES (?, ?, ?)",
        (workspace_id, stored.version, doc),
    )
    return decode_policy(doc)


def get_policy(
    conn: sqlite3.Connection, workspace_id: str, version: int | None
) -> StoredPolicy | None:
    if version is None:
        row = conn.execute(
            "SELECT doc FROM policy_versions WHERE workspace_id = ? ORDER BY version DESC LIMIT 1",
            (workspace_id,),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT doc FROM policy_versions WHERE workspace_id = ? AND version = ?",
            (workspace_id, version),
        ).fetchone()
    return None if row is None else decode_policy(row[0])


def policies_revision(conn: sqlite3.Connection) -> int:
    # Versions are never deleted: the row count grows with every write.
    (count,) = conn.execute("SELECT count(*) FROM policy_versions").fetchone()
    return int(count)
