"""Segment definitions for unit tests, built one way everywhere."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rapport.core.segments import SegmentDefinition


def active_segment(
    segment_id: str,
    condition: Any,
    at: datetime,
    *,
    workspace_id: str = "ws",
    version: int = 1,
) -> SegmentDefinition:
    """An active dynamic segment named after its id, created and updated ``at``."""
    return SegmentDefinition(
        workspace_id=workspace_id,
        id=segment_id,
        name=segment_id,
        kind="dynamic",
        condition=condition,
        version=version,
        status="active",
        created_at=at,
        updated_at=at,
    )
