"""The SQLite event log's batch rows and the writer machinery under them.

Appends are stored one row per append (``event_batch``) and coalesced while
they wait for the writer (``Coalescer``); a data dir from before keeps its
one-event-per-row ``event_log``. The contract suite checks what callers see;
this checks the layout, the boundaries between rows and the upgrade path.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest

from rapport.core.model import Event
from rapport.storage.migrations import apply_migrations_sqlite, dialect_directory, load_migrations
from rapport.storage.sqlite_db import Coalescer, DatabaseClosedError, SqliteDatabase, to_micros
from rapport.storage.sqlite_eventlog import MAX_ROW_EVENTS, SqliteEventLog, _keys_after
from tests.contract.test_sqlite_internals import ITEMS, count, insert, open_items

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ev(message_id: str, workspace_id: str = "ws_a") -> Event:
    return Event(
        workspace_id=workspace_id,
        message_id=message_id,
        type="track",
        event="Viewed",
        timestamp=T0,
        received_at=T0,
        source="write_key:key_1",
    )


async def open_log(path: Path, **options: int) -> SqliteEventLog:
    log = SqliteEventLog(path, **options)
    await log.open()
    return log


async def batch_rows(log: SqliteEventLog) -> list[tuple[int, int]]:
    rows = await log._db.read(
        lambda c: c.execute("SELECT last_offset, events FROM event_batch ORDER BY 1").fetchall()
    )
    return [(row[0], row[1]) for row in rows]


# -- rows ------------------------------------------------------------------------


async def test_an_append_is_one_row_and_a_long_one_several(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "events.db")
    try:
        assert await log.append([ev("a"), ev("b")]) == [True, True]
        long = [ev(f"m{i:03}") for i in range(2 * MAX_ROW_EVENTS + 50)]
        assert all(await log.append(long))
        first = 3
        assert await batch_rows(log) == [
            (2, 2),
            (first + MAX_ROW_EVENTS - 1, MAX_ROW_EVENTS),
            (first + 2 * MAX_ROW_EVENTS - 1, MAX_ROW_EVENTS),
            (first + 2 * MAX_ROW_EVENTS + 49, 50),
        ]
        assert await log.end_offset() == 2 + len(long)
    finally:
        await log.close()


@pytest.mark.parametrize(
    ("after", "limit"),
    [(0, 1), (0, 30), (1, 2), (30, 100), (99, 2), (100, 100), (130, 1000), (249, 5), (250, 5)],
)
async def test_reads_start_and_stop_inside_rows(tmp_path: Path, after: int, limit: int) -> None:
    log = await open_log(tmp_path / "events.db")
    try:
        events = [ev(f"m{i:03}") for i in range(250)]
        await log.append(events[:120])
        await log.append(events[120:])
        entries = await log.read(after, limit)
        expected = list(range(after + 1, min(250, after + limit) + 1))
        assert [entry.offset for entry in entries] == expected
        assert [entry.event for entry in entries] == [events[o - 1] for o in expected]
    finally:
        await log.close()


async def test_a_duplicate_inside_a_row_is_left_out_of_it(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "events.db")
    try:
        await log.append([ev("a")])
        assert await log.append([ev("b"), ev("a"), ev("c"), ev("b")]) == [
            True,
            False,
            True,
            False,
        ]
        assert await batch_rows(log) == [(1, 1), (3, 2)]
        assert [e.event.message_id for e in await log.read(0, 10)] == ["a", "b", "c"]
    finally:
        await log.close()


async def test_dedup_keys_can_be_read_from_inside_a_row(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "events.db")
    try:
        await log.append([ev("a"), ev("b"), ev("c", workspace_id="ws_b")])
        keys = await log._db.read(partial(_keys_after, 1, 0))
        seen = to_micros(T0)
        assert keys == [(("ws_a", "b"), seen), (("ws_b", "c"), seen)]
    finally:
        await log.close()


# -- coalesced appends ---------------------------------------------------------


async def test_appends_waiting_for_the_writer_share_one_job(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "events.db")
    gate = threading.Event()
    jobs: list[int] = []
    run_many = log._appends._run_many

    def recording(appends: list[Any], conn: sqlite3.Connection) -> list[Any]:
        jobs.append(len(appends))
        return run_many(appends, conn)

    log._appends._run_many = recording
    try:
        blocker = asyncio.ensure_future(log._db.write(lambda conn: gate.wait(5)))
        await asyncio.sleep(0.05)  # the writer is now inside the blocker
        appends = [
            asyncio.ensure_future(log.append(events))
            for events in ([ev("a"), ev("b")], [ev("c"), ev("a")], [ev("d")])
        ]
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        # In the order they came: the second caller's "a" is the duplicate.
        assert await asyncio.gather(*appends) == [[True, True], [True, False], [True]]
        assert jobs == [3]
        assert await batch_rows(log) == [(2, 2), (3, 1), (4, 1)]
        assert [e.event.message_id for e in await log.read(0, 10)] == ["a", "b", "c", "d"]
    finally:
        gate.set()
        await log.close()


async def test_every_request_of_a_failed_job_gets_the_error(tmp_path: Path) -> None:
    db = await open_items(tmp_path)
    calls: list[list[int]] = []

    def run_many(item_ids: list[int], conn: sqlite3.Connection) -> list[int]:
        calls.append(item_ids)
        for item_id in item_ids:
            insert(item_id)(conn)
        return item_ids

    coalescer: Coalescer[int, int] = Coalescer(db, run_many)
    gate = threading.Event()
    try:
        blocker = asyncio.ensure_future(db.write(lambda conn: gate.wait(5)))
        await asyncio.sleep(0.05)
        # 2 twice: the second insert breaks the primary key and the whole job.
        requests = [asyncio.ensure_future(coalescer.add(i)) for i in (1, 2, 2)]
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        results = await asyncio.gather(*requests, return_exceptions=True)
        assert all(isinstance(r, sqlite3.IntegrityError) for r in results)
        assert calls == [[1, 2, 2]]
        assert await db.read(count) == 0  # nothing of the job stayed
        assert await coalescer.add(3) == 3
        assert await db.read(count) == 1
    finally:
        gate.set()
        await db.close()


async def test_a_closed_database_refuses_a_request_and_keeps_no_batch(tmp_path: Path) -> None:
    db = await open_items(tmp_path)
    coalescer: Coalescer[int, int] = Coalescer(db, lambda ids, conn: ids)
    await db.close()
    with pytest.raises(DatabaseClosedError):
        await coalescer.add(1)
    assert coalescer._open == {}


async def test_a_job_alone_in_its_group_rolls_back_without_a_savepoint(tmp_path: Path) -> None:
    db = await open_items(tmp_path)

    def fail_after_writing(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO items (id, note) VALUES (100, 'rolled back')")
        raise ValueError("bad job")

    try:
        with pytest.raises(ValueError, match="bad job"):
            await db.write(fail_after_writing)
        assert await db.read(count) == 0
        assert await db.write(insert(1)) == 1
        assert await db.read(count) == 1
    finally:
        await db.close()


# -- background checkpoints ------------------------------------------------------


def notes(item_ids: range) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO items (id, note) VALUES (?, ?)", [(i, "x" * 2000) for i in item_ids]
        )

    return run


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


async def test_committed_pages_reach_the_database_file_in_the_background(tmp_path: Path) -> None:
    db = await open_items(tmp_path, checkpoint_every=0.05)
    path = tmp_path / "items.db"
    try:
        before = path.stat().st_size
        for start in range(0, 200, 50):
            await db.write(notes(range(start, start + 50)))
        # Far below wal_autocheckpoint: only the background checkpointer copies.
        assert await wait_until(lambda: path.stat().st_size > before + 200 * 2000)
        checkpointer = db._checkpointer
        assert checkpointer is not None and checkpointer.is_alive()
    finally:
        await db.close()
    assert not checkpointer.is_alive()


async def test_without_background_checkpoints_the_pages_stay_in_the_wal(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "items.db", ITEMS)
    await db.open()
    path = tmp_path / "items.db"
    try:
        before = path.stat().st_size
        await db.write(notes(range(50)))
        await asyncio.sleep(0.2)
        assert path.stat().st_size == before
        assert db._checkpointer is None
    finally:
        await db.close()


# -- a data dir from before event_batch ---------------------------------------------


def legacy_events_db(path: Path, events: list[Event], indexed: int) -> None:
    """An events.db as the code before ``events_0002`` left it."""
    migrations = load_migrations(dialect_directory("sqlite"), prefix="events_")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        apply_migrations_sqlite(conn, migrations[:1])
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO event_log (workspace_id, message_id, received_at, body)"
            " VALUES (?, ?, ?, ?)",
            [
                (e.workspace_id, e.message_id, to_micros(e.received_at), msgspec.json.encode(e))
                for e in events
            ],
        )
        # The first ``indexed`` ids reached event_dedup; the rest were only in memory.
        conn.executemany(
            "INSERT INTO event_dedup (workspace_id, message_id, first_seen) VALUES (?, ?, ?)",
            [(e.workspace_id, e.message_id, to_micros(e.received_at)) for e in events[:indexed]],
        )
        conn.execute("UPDATE event_dedup_state SET indexed_through = ?", (indexed,))
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_a_log_from_before_batch_rows_opens_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    old = [ev("old1"), ev("old2"), ev("old3", workspace_id="ws_b")]
    legacy_events_db(path, old, indexed=1)

    log = await open_log(path)
    try:
        assert await log.end_offset() == 3
        assert [(e.offset, e.event) for e in await log.read(0, 10)] == list(
            zip([1, 2, 3], old, strict=True)
        )
        # Indexed or only re-read from the old table, the old ids are known.
        assert await log.append([ev("old1"), ev("new1"), ev("old3", workspace_id="ws_b")]) == [
            False,
            True,
            False,
        ]
        assert await log.append([ev("old2"), ev("new2")]) == [False, True]
        assert await log.end_offset() == 5
        entries = await log.read(2, 10)
        assert [(e.offset, e.event.message_id) for e in entries] == [
            (3, "old3"),
            (4, "new1"),
            (5, "new2"),
        ]
        assert [e.offset for e in await log.read(0, 4)] == [1, 2, 3, 4]
    finally:
        await log.close()

    # Unclean stop: the new ids were never flushed to the index.
    reopened = await open_log(path)
    try:
        await reopened._db.write(lambda conn: conn.execute("DELETE FROM event_dedup"))
        await reopened._db.write(
            lambda conn: conn.execute("UPDATE event_dedup_state SET indexed_through = 0")
        )
    finally:
        await reopened._db.close()
    again = await open_log(path)
    try:
        assert await again.append([ev(m) for m in ("old2", "new1", "new3")]) == [
            False,
            False,
            True,
        ]
        assert await again.end_offset() == 6
    finally:
        await again.close()
