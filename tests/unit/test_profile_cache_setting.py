"""``profile_cache_size``: the service's processor keeps what it committed, or not."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rapport.core.clock import VirtualClock
from rapport.core.model import Event, Identifier
from rapport.runtime.service import Rapport
from rapport.settings import load_settings

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def view(workspace_id: str, n: int) -> Event:
    return Event(
        workspace_id=workspace_id,
        message_id=f"m{n}",
        type="track",
        event="Product Viewed",
        timestamp=NOW,
        received_at=NOW,
        source="write_key:test",
        user_id="u1",
    )


@pytest.mark.parametrize(("size", "loads"), [(None, 0), (0, 1)])
async def test_a_returning_customer_is_read_from_storage_only_without_a_cache(
    tmp_path: Path, size: int | None, loads: int
) -> None:
    overrides: dict[str, Any] = {"data_dir": str(tmp_path), "sender": "off"}
    if size is not None:
        overrides["profile_cache_size"] = size
    settings = load_settings(overrides, environ={})
    runtime = await Rapport.open(settings, clock=VirtualClock(NOW))
    try:
        assert runtime.processor.cache_size == settings.profile_cache_size
        assert (size is None) == (settings.profile_cache_size == 10_000)
        ws = await runtime.storage.ensure_workspace("default", "ws_cache", NOW)
        await runtime.processor.load_offset()
        await runtime.event_log.append([view(ws.id, 1)])
        assert await runtime.processor.run_once() == 1

        loaded: list[str] = []
        load_profiles = runtime.storage.load_profiles

        async def counting(workspace_id: str, ids: Any) -> Any:
            found = await load_profiles(workspace_id, ids)
            loaded.extend(found)
            return found

        vars(runtime.storage)["load_profiles"] = counting
        await runtime.event_log.append([view(ws.id, 2)])
        assert await runtime.processor.run_once() == 1
        assert len(loaded) == loads
        owners = await runtime.storage.find_profile_ids(ws.id, [Identifier("user_id", "u1")])
        stored = await load_profiles(ws.id, list(owners.values()))
        assert [p.event_count for p in stored.values()] == [2]
    finally:
        await runtime.close()
