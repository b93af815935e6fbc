"""SQLite: emitted events' rows in ``scheduled_outbox``, delivered to the log as stored.

What every backend must do is in ``tests/contract/test_scheduled_contract.py``;
here, what SQLite does to do it cheaply: rows keyed ``outbox:<message id>``
appended to a table of their own (unless they would sort before its last
row), and a relay that moves their JSON to ``events.db`` without decoding it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from rapport.core.clock import VirtualClock
from rapport.core.model import Event, ScheduledEvent
from rapport.runtime.relay import Relay
from rapport.storage.base import ProcessingBatch
from rapport.storage.sqlite import EVENTS_DB, RAPPORT_DB, SqliteEventLog, SqliteStorage, open_sqlite

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
WS = "ws_a"


def event(message_id: str, *, ws: str = WS, at: datetime = T0) -> Event:
    return Event(
        workspace_id=ws,
        message_id=message_id,
        type="track",
        event="Segment Entered",
        timestamp=at,
        received_at=at,
        source="rapport:segments",
        properties={"segment_id": "seg_1", "version": 2, "note": "é \x00 🧥"},
        profile_id="prof_1",
    )


def emitted(message_id: str, due_at: datetime = T0, *, ws: str = WS) -> ScheduledEvent:
    return ScheduledEvent(
        workspace_id=ws,
        key=f"outbox:{message_id}",
        due_at=due_at,
        event=event(message_id, ws=ws, at=due_at),
    )


def timer(key: str, due_at: datetime) -> ScheduledEvent:
    return ScheduledEvent(
        workspace_id=WS, key=key, due_at=due_at, event=event(f"{key}@{due_at.isoformat()}")
    )


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[tuple[SqliteStorage, SqliteEventLog]]:
    storage, log = await open_sqlite(tmp_path, synchronous="OFF")
    try:
        yield storage, log
    finally:
        await log.close()
        await storage.close()


async def commit(storage: SqliteStorage, offset: int, *rows: ScheduledEvent) -> None:
    await storage.commit_processing(
        ProcessingBatch(consumer="profiles", offset=offset, scheduled=list(rows))
    )


async def tables(storage: SqliteStorage) -> dict[str, list[Any]]:
    def read(conn: sqlite3.Connection) -> dict[str, list[Any]]:
        return {
            "outbox": [
                r[0] for r in conn.execute("SELECT message_id FROM scheduled_outbox ORDER BY id")
            ],
            "events": [
                r[0]
                for r in conn.execute("SELECT schedule_key FROM scheduled_events ORDER BY rowid")
            ],
        }

    return await storage._db.read(read)


async def test_emitted_rows_are_appended_to_their_table_in_delivery_order(
    opened: tuple[SqliteStorage, SqliteEventLog],
) -> None:
    storage, _ = opened
    await commit(storage, 1, emitted("a"), timer("segments:p1", T0 + US), emitted("b"))
    # A key that does not name its event's id is a timer, whatever its prefix.
    other = ScheduledEvent(workspace_id=WS, key="outbox:x", due_at=T0, event=event("y"))
    await commit(storage, 2, emitted("c", T0 + US), other)
    # Sorting before the last appended row: kept with the timers instead.
    await commit(storage, 3, emitted("late", T0), emitted("d", T0 + 2 * US))
    assert await tables(storage) == {
        "outbox": ["a", "b", "c", "d"],
        "events": ["segments:p1", "outbox:x", "outbox:late"],
    }
    due = await storage.due_scheduled(T0 + 2 * US, 100)
    assert [r.key for r in due] == [
        "outbox:a",
        "outbox:b",
        "outbox:x",
        "outbox:late",
        "segments:p1",
        "outbox:c",
        "outbox:d",
    ]
    assert due[0] == emitted("a")


async def test_the_relay_moves_the_events_as_stored(
    opened: tuple[SqliteStorage, SqliteEventLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, log = opened
    rows = [emitted(f"e{n}", T0 + (n % 3) * US) for n in range(250)]
    await commit(storage, 1, timer("segments:p1", T0), *rows[:120])
    await commit(storage, 2, *rows[120:])

    async def no_decoded_append(events: Sequence[Event]) -> list[bool]:
        raise AssertionError("the relay decoded rows it could move as stored")

    monkeypatch.setattr(log, "append", no_decoded_append)
    expected = [r.event for r in await storage.due_scheduled(T0 + 5 * US, 1000)]
    relay = Relay(storage, log, VirtualClock(T0 + 5 * US), batch_size=100)
    assert await relay.run_due() == 251
    assert [entry.event for entry in await log.read(0, 1000)] == expected
    assert await tables(storage) == {"outbox": [], "events": []}
    assert await storage.next_scheduled_at() is None


async def test_the_log_stores_what_append_would_have(tmp_path: Path) -> None:
    storage, log = await open_sqlite(tmp_path, synchronous="OFF")
    events = [event(f"m{n}", at=T0 + n * US) for n in range(150)]
    await commit(storage, 1, *(emitted(e.message_id, e.received_at) for e in events))
    await Relay(storage, log, VirtualClock(T0 + timedelta(days=1))).run_due()
    await log.close()
    await storage.close()
    with sqlite3.connect(tmp_path / EVENTS_DB) as conn:
        bodies = [r[0] for r in conn.execute("SELECT body FROM event_batch ORDER BY last_offset")]
    encode = msgspec.json.Encoder().encode
    assert bodies == [encode(events[:100]), encode(events[100:])]


async def test_a_crash_between_append_and_delete_appends_nothing_new(
    opened: tuple[SqliteStorage, SqliteEventLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, log = opened
    await commit(storage, 1, emitted("a"), timer("segments:p1", T0), emitted("b"))
    delete_due = storage.delete_due

    async def crash(rows: object) -> int:
        raise OSError("crashed before deleting")

    monkeypatch.setattr(storage, "delete_due", crash)
    relay = Relay(storage, log, VirtualClock(T0))
    with pytest.raises(OSError):
        await relay.run_due()
    assert await log.end_offset() == 3
    monkeypatch.setattr(storage, "delete_due", delete_due)
    await commit(storage, 2, emitted("c"))
    assert await relay.run_due() == 4
    logged = [entry.event.message_id for entry in await log.read(0, 100)]
    assert logged == ["a", f"segments:p1@{T0.isoformat()}", "b", "c"]
    assert await tables(storage) == {"outbox": [], "events": []}


async def test_encoded_appends_drop_duplicates_within_a_row(
    opened: tuple[SqliteStorage, SqliteEventLog],
) -> None:
    _, log = opened
    known = [event("m1"), event("m3")]
    await log.append(known)
    encode = msgspec.json.Encoder().encode
    fresh = [event(f"m{n}", at=T0 + n * US) for n in range(5)] + [event("m0", at=T0)]
    encoded = [(e.workspace_id, e.message_id, 0, encode(e)) for e in fresh]
    assert await log.append_encoded(encoded) == [True, False, True, False, True, False]
    assert await log.append_encoded([]) == []
    stored = [entry.event for entry in await log.read(0, 100)]
    assert stored == [*known, fresh[0], fresh[2], fresh[4]]


async def test_rows_of_a_data_dir_from_before_the_outbox_table_are_delivered(
    tmp_path: Path,
) -> None:
    # Written as the previous version did (every row in scheduled_events), its
    # JSON as a migration's SQL may write it: the log gets the encoder's bytes.
    storage, log = await open_sqlite(tmp_path, synchronous="OFF")
    await log.close()
    await storage.close()
    old = emitted("old")
    spaced = json.dumps(json.loads(msgspec.json.encode(old.event)), indent=1).encode()
    with sqlite3.connect(tmp_path / RAPPORT_DB) as conn:
        conn.execute(
            "INSERT INTO scheduled_events (workspace_id, schedule_key, due_at, origin_offset,"
            " origin_index, message_id, event) VALUES (?, ?, ?, 1, 0, ?, ?)",
            (WS, old.key, 0, old.event.message_id, spaced),
        )
    storage, log = await open_sqlite(tmp_path, synchronous="OFF")
    new = emitted("new")
    try:
        await commit(storage, 2, new)
        assert await Relay(storage, log, VirtualClock(T0)).run_due() == 2
        assert [e.event for e in await log.read(0, 10)] == [old.event, new.event]
    finally:
        await log.close()
        await storage.close()
    with sqlite3.connect(tmp_path / EVENTS_DB) as conn:
        [(body,)] = conn.execute("SELECT body FROM event_batch").fetchall()
    assert body == msgspec.json.encode([old.event, new.event])
