"""In-app inboxes in memory: the in-memory backend's ``InboxStore``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from rapport.storage.inbox import InboxMessage, InboxPage, InboxStore, check_page


class MemoryInbox(InboxStore):
    def __init__(self) -> None:
        self._messages: dict[tuple[str, str], InboxMessage] = {}
        self._seq = 0

    async def put_message(self, message: InboxMessage) -> InboxMessage:
        key = (message.workspace_id, message.id)
        found = self._messages.get(key)
        if found is not None:
            return found
        check_page(1, message.created_at)
        self._seq += 1
        stored = msgspec.structs.replace(message, seq=self._seq, read_at=None)
        self._messages[key] = stored
        return stored

    async def get_message(self, workspace_id: str, message_id: str) -> InboxMessage | None:
        return self._messages.get((workspace_id, message_id))

    async def list_messages(
        self,
        workspace_id: str,
        profile_ids: Sequence[str],
        limit: int,
        before: int | None = None,
        *,
        unread_only: bool = False,
    ) -> InboxPage:
        check_page(limit)
        wanted = set(profile_ids)
        found = sorted(
            (
                m
                for (ws, _), m in self._messages.items()
                if ws == workspace_id
                and m.profile_id in wanted
                and (before is None or m.seq < before)
                and not (unread_only and m.read_at is not None)
            ),
            key=lambda m: m.seq,
            reverse=True,
        )
        page = found[:limit]
        return InboxPage(page, page[-1].seq if len(found) > limit else None)

    async def mark_read(
        self, workspace_id: str, message_id: str, now: datetime
    ) -> InboxMessage | None:
        check_page(1, now)
        found = self._messages.get((workspace_id, message_id))
        if found is None or found.read_at is not None:
            return found
        read = msgspec.structs.replace(found, read_at=now)
        self._messages[(workspace_id, message_id)] = read
        return read

    async def unread_count(self, workspace_id: str, profile_ids: Sequence[str]) -> int:
        wanted = set(profile_ids)
        return sum(
            1
            for (ws, _), m in self._messages.items()
            if ws == workspace_id and m.profile_id in wanted and m.read_at is None
        )
