"""The SQLite event log's kept rows: reads right behind appends, served from memory.

What a read answers must not depend on what the log kept: every read is
compared with the same read through a second log on the same file, which
keeps nothing of these appends (it only made its own, in between).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from rapport.core.model import Event, LogEntry
from rapport.storage import sqlite_eventlog
from rapport.storage.sqlite_eventlog import MAX_ROW_EVENTS, SqliteEventLog

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ev(message_id: str, n: int = 0) -> Event:
    return Event(
        workspace_id="ws_a",
        message_id=message_id,
        type="track",
        event="Viewed",
        timestamp=T0,
        received_at=T0,
        source="write_key:key_1",
        properties={"n": n},
    )


async def open_log(path: Path) -> SqliteEventLog:
    log = SqliteEventLog(path)
    await log.open()
    return log


async def every_read(log: SqliteEventLog, end: int) -> list[list[LogEntry]]:
    reads = []
    for after in range(0, end + 1):
        for limit in (1, 7, MAX_ROW_EVENTS, 2 * MAX_ROW_EVENTS + 3, end + 10):
            reads.append(await log.read(after, limit))
    return reads


async def build(path: Path) -> tuple[SqliteEventLog, SqliteEventLog]:
    """A log with kept rows of every shape, and a second log on the same file."""
    log = await open_log(path)
    other = await open_log(path)
    await log.append([ev(f"a{n}", n) for n in range(2 * MAX_ROW_EVENTS + 50)])  # 3 rows
    # Duplicates inside a row: what is stored is re-encoded without them.
    await log.append([ev("a3"), ev("b1", 1), ev("a4"), ev("b2", 2), ev("b2", 3)])
    await log.append([ev("a5"), ev("a6")])  # nothing stored, nothing kept
    await other.append([ev(f"c{n}", n) for n in range(30)])  # another writer's offsets
    await log.append([ev(f"d{n}", n) for n in range(40)])
    return log, other


async def test_reads_of_kept_rows_answer_what_the_database_holds(tmp_path: Path) -> None:
    log, other = await build(tmp_path / "events.db")
    try:
        end = await log.end_offset()
        assert end == 2 * MAX_ROW_EVENTS + 50 + 2 + 30 + 40
        kept = set(log._recent_by_offset)
        assert len(kept) == end - 30 and not kept & set(range(253, 283))
        expected = await every_read(other, end)
        assert await every_read(log, end) == expected
        # The other writer's entries are read from the file, between kept ones.
        middle = await log.read(250, 40)
        assert [e.event.message_id for e in middle] == (
            ["b1", "b2"] + [f"c{n}" for n in range(30)] + [f"d{n}" for n in range(8)]
        )
        assert [e.offset for e in middle] == list(range(251, 291))
    finally:
        await log.close()
        await other.close()


async def test_only_the_latest_appends_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_eventlog, "RECENT_EVENTS", 60)
    log, other = await build(tmp_path / "events.db")
    try:
        end = await log.end_offset()
        # The oldest rows went first, whole: 251-252 and 283-322 are left.
        assert set(log._recent_by_offset) == {251, 252} | set(range(283, end + 1))
        assert len(log._recent_rows) == 2
        assert await every_read(log, end) == await every_read(other, end)
    finally:
        await log.close()
        await other.close()


async def test_reads_hand_out_their_own_events(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "events.db")
    try:
        await log.append([ev("a1", 1)])
        first = await log.read(0, 10)
        first[0].event.properties["n"] = 99
        assert (await log.read(0, 10))[0].event.properties == {"n": 1}
    finally:
        await log.close()


async def test_kept_rows_are_bounded_in_bytes_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row_bytes = len(sqlite_eventlog._encode([ev(f"0-{n:02d}", n) for n in range(10)]))
    monkeypatch.setattr(sqlite_eventlog, "RECENT_BYTES", 2 * row_bytes)
    log = await open_log(tmp_path / "events.db")
    try:
        for batch in range(4):
            await log.append([ev(f"{batch}-{n:02d}", n) for n in range(10)])
        # Far fewer events than RECENT_EVENTS, but only the last two rows fit.
        assert set(log._recent_by_offset) == set(range(21, 41))
        assert log._recent_bytes == sum(len(body) for _, _, body in log._recent_rows)
        assert await log.read(0, 100) == (await log.read(0, 20)) + (await log.read(20, 80))
        assert [e.offset for e in await log.read(15, 10)] == list(range(16, 26))
    finally:
        await log.close()
