"""What only the SQLite backend has: group commit, files and pragmas, migrations, dedup flushes.

The backend-neutral behaviour is in the contract tests; these pin down the
machinery underneath (``sqlite_db``, ``migrations``) that the contract cannot see.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from rapport.core.model import Event
from rapport.storage import sqlite_dedup
from rapport.storage.migrations import (
    Migration,
    MigrationError,
    apply_migrations_sqlite,
    dialect_directory,
    load_migrations,
    split_sqlite_script,
)
from rapport.storage.sqlite import open_sqlite
from rapport.storage.sqlite_db import BulkInsert, DatabaseClosedError, SqliteDatabase
from rapport.storage.sqlite_eventlog import SqliteEventLog

ITEMS = [Migration(1, "items", "CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT);")]


def insert(item_id: int, note: str = "x") -> Callable[[sqlite3.Connection], int]:
    def run(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO items (id, note) VALUES (?, ?)", (item_id, note))
        return item_id

    return run


def count(conn: sqlite3.Connection) -> int:
    (n,) = conn.execute("SELECT count(*) FROM items").fetchone()
    return int(n)


async def open_items(tmp_path: Path, **options: object) -> SqliteDatabase:
    db = SqliteDatabase(tmp_path / "items.db", ITEMS, **options)  # type: ignore[arg-type]
    await db.open()
    return db


@pytest.mark.parametrize("rows", [0, 1, 100, BulkInsert.MAX_ROWS, BulkInsert.MAX_ROWS + 1, 600])
def test_bulk_insert_writes_every_row_in_order(rows: int) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT)")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    last = BulkInsert("items", ("note",)).run(conn, [(f"n{i}",) for i in range(rows)])
    notes = [note for (note,) in conn.execute("SELECT note FROM items ORDER BY id")]
    assert notes == [f"n{i}" for i in range(rows)]
    assert last == (rows or None)
    # One statement per MAX_ROWS rows: a whole batch is one call into SQLite.
    assert len([s for s in statements if s.startswith("INSERT")]) == -(-rows // BulkInsert.MAX_ROWS)


def test_bulk_insert_statements_hold_one_to_max_rows() -> None:
    insert_items = BulkInsert("items", ("id", "note"), suffix="ON CONFLICT DO NOTHING")
    assert insert_items.sql(2) == (
        "INSERT INTO items (id, note) VALUES (?, ?), (?, ?) ON CONFLICT DO NOTHING"
    )
    for bad in (0, BulkInsert.MAX_ROWS + 1):
        with pytest.raises(ValueError):
            insert_items.sql(bad)


async def test_a_failing_job_rolls_back_alone_within_a_group(tmp_path: Path) -> None:
    db = await open_items(tmp_path)
    gate = threading.Event()
    groups: list[int] = []

    def hold_the_writer(conn: sqlite3.Connection) -> None:
        gate.wait(5)

    def fail_after_writing(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO items (id, note) VALUES (100, 'rolled back')")
        conn.execute("INSERT INTO items (id, note) VALUES (1, 'duplicate key')")

    def see_own_transaction(conn: sqlite3.Connection) -> None:
        groups.append(count(conn))

    try:
        blocker = asyncio.ensure_future(db.write(hold_the_writer))
        await asyncio.sleep(0.05)  # the writer is now inside the blocker
        # Queued while the writer is busy, so they share the next commit.
        jobs = [
            asyncio.ensure_future(db.write(insert(1))),
            asyncio.ensure_future(db.write(fail_after_writing)),
            asyncio.ensure_future(db.write(insert(2))),
            asyncio.ensure_future(db.write(see_own_transaction)),
        ]
        gate.set()
        await blocker
        results = await asyncio.gather(*jobs, return_exceptions=True)

        assert results[0] == 1 and results[2] == 2 and results[3] is None
        assert isinstance(results[1], sqlite3.IntegrityError)
        assert groups == [2]  # the failed job's first insert was undone at once
        ids = await db.read(lambda c: [r[0] for r in c.execute("SELECT id FROM items")])
        assert sorted(ids) == [1, 2]
    finally:
        gate.set()
        await db.close()


async def test_an_awaited_write_is_visible_to_the_next_read(tmp_path: Path) -> None:
    db = await open_items(tmp_path)
    try:
        for item_id in range(20):
            await db.write(insert(item_id))
            assert await db.read(count) == item_id + 1
    finally:
        await db.close()


async def test_close_commits_every_queued_write_first(tmp_path: Path) -> None:
    db = await open_items(tmp_path)
    pending = [asyncio.ensure_future(db.write(insert(i))) for i in range(200)]
    await asyncio.sleep(0)  # let every task enqueue its job
    await db.close()
    assert [await job for job in pending] == list(range(200))
    with pytest.raises(DatabaseClosedError):
        await db.write(insert(1000))
    with pytest.raises(DatabaseClosedError):
        await db.read(count)
    await db.close()  # idempotent

    reopened = await open_items(tmp_path)
    try:
        assert await reopened.read(count) == 200
    finally:
        await reopened.close()


async def test_a_cancelled_caller_does_not_stop_the_writer(tmp_path: Path) -> None:
    db = await open_items(tmp_path)
    try:
        task = asyncio.ensure_future(db.write(insert(1)))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await db.write(insert(2)) == 2
    finally:
        await db.close()


async def test_data_dir_layout_and_pragmas(tmp_path: Path) -> None:
    storage, event_log = await open_sqlite(tmp_path / "data", synchronous="NORMAL")
    try:
        assert (tmp_path / "data" / "events.db").exists()
        assert (tmp_path / "data" / "rapport.db").exists()

        def pragmas(conn: sqlite3.Connection) -> tuple[str, int]:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
            (sync,) = conn.execute("PRAGMA synchronous").fetchone()
            return mode, sync

        for db in (storage._db, event_log._db):
            assert await db.write(pragmas) == ("wal", 1)  # 1 = NORMAL
    finally:
        await event_log.close()
        await storage.close()


async def test_synchronous_defaults_to_full_and_is_validated(tmp_path: Path) -> None:
    db = await open_items(tmp_path)
    try:
        sync = await db.write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        assert sync == 2  # FULL
    finally:
        await db.close()
    with pytest.raises(ValueError, match="synchronous"):
        SqliteDatabase(tmp_path / "x.db", ITEMS, synchronous="SOMETIMES")


# -- migrations ------------------------------------------------------------------


def test_migrations_apply_once_in_order(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    try:
        first = [Migration(1, "a", "CREATE TABLE a (x);")]
        both = [*first, Migration(2, "b", "CREATE TABLE b (y); INSERT INTO b VALUES ('a;b');")]
        assert [m.version for m in apply_migrations_sqlite(conn, first)] == [1]
        assert [m.version for m in apply_migrations_sqlite(conn, both)] == [2]
        assert apply_migrations_sqlite(conn, both) == []
        rows = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
        assert rows == [(1, "a"), (2, "b")]
        assert conn.execute("SELECT y FROM b").fetchall() == [("a;b",)]
    finally:
        conn.close()


def test_a_failing_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    try:
        broken = [
            Migration(1, "ok", "CREATE TABLE ok (x);"),
            Migration(2, "bad", "CREATE TABLE half (x); CREATE TABLE ok (x);"),
        ]
        with pytest.raises(sqlite3.OperationalError):
            apply_migrations_sqlite(conn, broken)
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        assert tables == []
    finally:
        conn.close()


def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    try:
        apply_migrations_sqlite(conn, [Migration(1, "a", "SELECT 1;"), Migration(2, "b", "")])
        with pytest.raises(MigrationError, match=r"\[2\]"):
            apply_migrations_sqlite(conn, [Migration(1, "a", "SELECT 1;")])
    finally:
        conn.close()


def test_split_keeps_triggers_literals_and_comments_whole() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (x TEXT DEFAULT 'a;b'); CREATE TABLE u (y);
    CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN
        INSERT INTO u VALUES (1);
        INSERT INTO u VALUES (2);
    END;
    """
    statements = split_sqlite_script(script)
    assert len(statements) == 3
    assert statements[1] == "CREATE TABLE u (y);"
    assert statements[2].startswith("CREATE TRIGGER") and statements[2].endswith("END;")
    with pytest.raises(MigrationError, match="incomplete"):
        split_sqlite_script("CREATE TABLE v (z);\nCREATE TABLE w (")


def test_load_migrations_by_prefix(tmp_path: Path) -> None:
    (tmp_path / "0002_second.sql").write_text("SELECT 2;")
    (tmp_path / "0001_first.sql").write_text("SELECT 1;")
    (tmp_path / "events_0001_log.sql").write_text("SELECT 'e';")
    (tmp_path / "README.txt").write_text("not a migration")
    assert [(m.version, m.name) for m in load_migrations(tmp_path)] == [
        (1, "first"),
        (2, "second"),
    ]
    assert [m.name for m in load_migrations(tmp_path, prefix="events_")] == ["log"]
    (tmp_path / "events_01_bad.sql").write_text("")
    with pytest.raises(MigrationError, match="badly named"):
        load_migrations(tmp_path, prefix="events_")


def test_the_packaged_sqlite_migrations_load() -> None:
    directory = dialect_directory("sqlite")
    for prefix in ("events_", "rapport_"):
        versions = [m.version for m in load_migrations(directory, prefix=prefix)]
        assert versions == list(range(1, len(versions) + 1))
    with pytest.raises(MigrationError):
        dialect_directory("oracle")


# -- event log dedup: the in-memory ids and their bulk flush ---------------------

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ev(message_id: str, received_at: datetime = T0) -> Event:
    return Event(
        workspace_id="ws_a",
        message_id=message_id,
        type="track",
        timestamp=received_at,
        received_at=received_at,
        source="write_key:key_1",
    )


async def indexed_ids(log: SqliteEventLog) -> list[str]:
    rows = await log._db.read(
        lambda c: c.execute("SELECT message_id FROM event_dedup ORDER BY message_id").fetchall()
    )
    return [row[0] for row in rows]


async def open_log(path: Path, **options: int) -> SqliteEventLog:
    log = SqliteEventLog(path, **options)
    await log.open()
    return log


async def test_duplicates_are_found_before_during_and_after_a_flush(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "events.db", dedup_flush_threshold=1000, dedup_flush_chunk=2)
    try:
        assert await log.append([ev(f"m{i}") for i in range(5)]) == [True] * 5
        assert await indexed_ids(log) == []  # below the threshold: in memory only

        count, through = await log._db.write(log._start_flush)
        assert (count, through) == (5, 5)
        await log._db.write(partial(log._write_flush_chunk, 1, 2, None))
        # Two ids indexed, three still being flushed, one new in memory.
        assert await indexed_ids(log) == ["m0", "m1"]
        assert await log.append([ev("m0"), ev("m4"), ev("new")]) == [False, False, True]
        await log._db.write(partial(log._write_flush_chunk, 3, 5, through))

        assert await indexed_ids(log) == ["m0", "m1", "m2", "m3", "m4"]
        assert await log.append([ev("m3"), ev("new"), ev("newer")]) == [False, False, True]
        assert await log.end_offset() == 7
    finally:
        await log.close()
    reopened = await open_log(tmp_path / "events.db")
    try:
        # close() flushed everything: nothing left to re-read from the log.
        assert reopened._ids.recent == {}
        assert await indexed_ids(reopened) == ["m0", "m1", "m2", "m3", "m4", "new", "newer"]
    finally:
        await reopened.close()


async def test_reaching_the_threshold_flushes_in_the_background(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "events.db", dedup_flush_threshold=10, dedup_flush_chunk=3)
    try:
        await log.append([ev(f"m{i:02}") for i in range(12)])
        assert log._flush_task is not None
        await log._flush_task
        assert await indexed_ids(log) == [f"m{i:02}" for i in range(12)]
        state = await log._db.read(
            lambda c: c.execute("SELECT indexed_through FROM event_dedup_state").fetchone()
        )
        assert state == (12,)
        assert await log.append([ev("m05"), ev("m12")]) == [False, True]
    finally:
        await log.close()


async def test_ids_only_in_memory_survive_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = await open_log(path, dedup_flush_threshold=1000, dedup_flush_chunk=2)
    await log.append([ev(f"m{i}") for i in range(6)])
    await log._db.write(log._start_flush)
    await log._db.write(partial(log._write_flush_chunk, 1, 2, None))
    await log.append([ev("late")])
    # A crash: the database closes without the final flush.
    await log._db.close()

    reopened = await open_log(path)
    try:
        assert sorted(key[1] for key in reopened._ids.recent) == ["late", "m2", "m3", "m4", "m5"]
        assert await reopened.append([ev("m0"), ev("m5"), ev("late"), ev("x")]) == [
            False,
            False,
            False,
            True,
        ]
        # Each id is counted once, wherever it sits.
        assert await reopened.prune_dedup(T0 + timedelta(seconds=1)) == 8
        assert await reopened.append([ev("m0"), ev("late")]) == [True, True]
    finally:
        await reopened.close()


async def test_pruned_ids_stay_forgotten_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = await open_log(path, dedup_flush_threshold=1000)
    await log.append([ev("old", T0 - timedelta(days=8)), ev("recent")])
    assert await log.prune_dedup(T0 - timedelta(days=7)) == 1
    await log._db.close()  # crash: "old" is still in the log, past indexed_through

    reopened = await open_log(path)
    try:
        assert await reopened.append([ev("old"), ev("recent")]) == [True, False]
    finally:
        await reopened.close()


async def test_a_prune_during_a_flush_is_not_undone_by_it(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "events.db", dedup_flush_threshold=1000)
    try:
        await log.append([ev("old", T0 - timedelta(days=8)), ev("recent")])
        count, through = await log._db.write(log._start_flush)
        assert await log.prune_dedup(T0 - timedelta(days=7)) == 1
        await log._db.write(partial(log._write_flush_chunk, 1, count, through))
        assert await indexed_ids(log) == ["recent"]
        assert await log.append([ev("old"), ev("recent")]) == [True, False]
    finally:
        await log.close()


async def test_prune_walks_the_index_in_several_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_dedup, "PRUNE_CHUNK", 3)
    log = await open_log(tmp_path / "events.db", dedup_flush_threshold=1000)
    try:
        old = T0 - timedelta(days=8)
        await log.append([ev(f"k{i:02}", old if i % 2 else T0) for i in range(20)])
        await log._flush()
        assert len(await indexed_ids(log)) == 20
        assert await log.prune_dedup(T0 - timedelta(days=1)) == 10
        assert await indexed_ids(log) == [f"k{i:02}" for i in range(0, 20, 2)]
    finally:
        await log.close()


def test_recent_ids_follow_savepoints_and_transactions() -> None:
    ids = sqlite_dedup.RecentIds()
    a, b, c = ("ws", "a"), ("ws", "b"), ("ws", "c")

    ids.job_started()
    ids.add([(a, 1)], last_offset=1)
    ids.job_started()
    ids.add([(b, 2)], last_offset=2)
    ids.job_rolled_back()  # the second job failed: only its id goes
    assert (a in ids, b in ids, ids.last_offset) == (True, False, 1)
    ids.transaction_committed()

    ids.job_started()
    assert ids.start_flush() == {a: 1}
    ids.add([(c, 3)], last_offset=3)
    ids.finish_flush()
    assert (ids.flushing, ids.recent) == ({}, {c: 3})
    ids.transaction_rolled_back()  # everything since the commit is undone
    assert (ids.recent, ids.flushing, ids.last_offset) == ({a: 1}, {}, 1)

    ids.job_started()
    ids.start_flush()
    ids.add([(b, 2)], last_offset=2)
    assert ids.forget_older_than(2) == 1  # a, being flushed
    ids.abort_flush()
    assert (ids.recent, ids.flushing) == ({b: 2}, {})
    ids.transaction_rolled_back()
    assert (ids.recent, ids.flushing) == ({a: 1}, {})


async def test_dedup_holds_across_two_processes_appending_to_one_file(tmp_path: Path) -> None:
    """`rapport serve` and `rapport worker` both append to one events.db."""
    path = tmp_path / "events.db"
    serve = await open_log(path, dedup_flush_threshold=1000)
    worker = await open_log(path, dedup_flush_threshold=1000)
    try:
        assert await serve.append([ev("a"), ev("b")]) == [True, True]
        # Not flushed to event_dedup yet: only the serving log's memory knows them.
        assert await indexed_ids(serve) == []
        assert await worker.append([ev("a"), ev("w1")]) == [False, True]
        assert await serve.append([ev("w1"), ev("c")]) == [False, True]
        # A flush in one process indexes what the other appended as well, so
        # a crash of the other loses nothing from dedup.
        count, through = await serve._db.write(serve._start_flush)
        await serve._db.write(partial(serve._write_flush_chunk, 1, count, through))
        assert await indexed_ids(serve) == ["a", "b", "c", "w1"]
    finally:
        await worker.close()
        await serve.close()
    reopened = await open_log(path)
    try:
        assert await reopened.append([ev(m) for m in ("a", "b", "c", "w1", "d")]) == [
            False,
            False,
            False,
            False,
            True,
        ]
    finally:
        await reopened.close()
