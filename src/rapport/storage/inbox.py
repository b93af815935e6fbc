"""In-app inboxes: the messages the ``in_app`` channel delivered, per profile.

Every backend keeps an ``InboxStore`` as ``Storage.inbox`` (``memory_inbox``,
``sqlite_inbox``, ``postgres_inbox``). A message's id is derived from its
workspace and idempotency key (``inbox_message_id``), so a retried delivery
stores it once and the app never shows it twice.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec


class InboxMessage(msgspec.Struct, frozen=True, kw_only=True):
    workspace_id: str
    id: str
    profile_id: str
    """The profile it was delivered to (a merge later keeps it readable from the winner)."""
    idempotency_key: str
    title: str
    body: str
    category: str
    topic: str | None = None
    metadata: dict[str, Any] = {}
    created_at: datetime
    read_at: datetime | None = None
    seq: int = 0
    """Given by the storage at insertion: orders an inbox (newest first) and pages it."""


class InboxPage(msgspec.Struct, frozen=True):
    messages: list[InboxMessage]
    next_before: int | None
    """Pass as ``before`` to get the next (older) page; None when done."""


def inbox_message_id(workspace_id: str, idempotency_key: str) -> str:
    """Stable across retries; reveals nothing of the key (journey and instance ids)."""
    digest = hashlib.sha256(f"{workspace_id}\n{idempotency_key}".encode()).hexdigest()
    return f"inapp_{digest[:24]}"


class InboxStore(abc.ABC):
    @abc.abstractmethod
    async def put_message(self, message: InboxMessage) -> InboxMessage:
        """Store a message unless its ``(workspace, id)`` is stored; return the stored one."""

    @abc.abstractmethod
    async def get_message(self, workspace_id: str, message_id: str) -> InboxMessage | None: ...

    @abc.abstractmethod
    async def list_messages(
        self,
        workspace_id: str,
        profile_ids: Sequence[str],
        limit: int,
        before: int | None = None,
        *,
        unread_only: bool = False,
    ) -> InboxPage:
        """The messages of these profiles (a profile and those merged into it), newest first."""

    @abc.abstractmethod
    async def mark_read(
        self, workspace_id: str, message_id: str, now: datetime
    ) -> InboxMessage | None:
        """Set ``read_at`` unless already set (the first read is kept); None if no such message."""

    @abc.abstractmethod
    async def unread_count(self, workspace_id: str, profile_ids: Sequence[str]) -> int: ...


def check_page(limit: int, now: datetime | None = None) -> None:
    if limit <= 0:
        raise ValueError(f"limit must be positive, not {limit}")
    if now is not None and now.utcoffset() is None:
        raise ValueError(f"naive datetime {now.isoformat()}: only aware datetimes are stored")
