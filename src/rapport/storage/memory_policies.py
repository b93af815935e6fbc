"""Policy documents in memory: the in-memory backend's part for ``rapport.core.policy``.

Versions are kept encoded, as the database backends keep them, so what a
caller does with a document it got back never changes what is stored.
"""

from __future__ import annotations

from datetime import datetime

from rapport.core.policy.document import PolicyDocument, StoredPolicy
from rapport.storage.policies import decode_policy, encode_policy, next_policy


class MemoryPolicies:
    """Every version of every workspace's policy; mirrors ``Storage``'s policy methods."""

    def __init__(self) -> None:
        self._versions: dict[str, list[bytes]] = {}
        self.revision = 0

    def put(
        self,
        workspace_id: str,
        document: PolicyDocument,
        now: datetime,
        expected_version: int | None,
    ) -> StoredPolicy:
        versions = self._versions.setdefault(workspace_id, [])
        stored = next_policy(workspace_id, len(versions), document, now, expected_version)
        doc = encode_policy(stored)
        versions.append(doc)
        self.revision += 1
        return decode_policy(doc)

    def get(self, workspace_id: str, version: int | None) -> StoredPolicy | None:
        versions = self._versions.get(workspace_id, [])
        index = len(versions) if version is None else version
        return decode_policy(versions[index - 1]) if 1 <= index <= len(versions) else None
