"""What the backends share for policy documents: the stored shape and the next version."""

from __future__ import annotations

from datetime import datetime

import msgspec

from rapport.core.policy.document import PolicyDocument, PolicyVersionConflict, StoredPolicy

encode_policy = msgspec.json.Encoder().encode
decode_policy = msgspec.json.Decoder(StoredPolicy).decode


def next_policy(
    workspace_id: str,
    current: int,
    document: PolicyDocument,
    now: datetime,
    expected_version: int | None,
) -> StoredPolicy:
    """The version after ``current`` (0: none yet); refuses a stale ``expected_version``."""
    if now.utcoffset() is None:
        raise ValueError(f"naive datetime {now.isoformat()}: only aware datetimes are stored")
    if expected_version is not None and expected_version != current:
        raise PolicyVersionConflict(workspace_id, expected_version, current)
    return StoredPolicy(
        workspace_id=workspace_id, version=current + 1, document=document, updated_at=now
    )
