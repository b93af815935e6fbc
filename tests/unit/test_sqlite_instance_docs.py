"""How SQLite stores journey instances: compact MessagePack rows, JSON rows of before still read."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from rapport.core.journeys.instances import JourneyInstance, TraceEntry, WaitState
from rapport.storage import sqlite_journey_runs, sqlite_scheduled
from rapport.storage.base import ProcessingBatch
from rapport.storage.sqlite import RAPPORT_DB, open_sqlite

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WS = "ws_a"


def instance(
    instance_id: str, profile_id: str = "prof_01a204b4d0a4bf274afb61a0b604"
) -> JourneyInstance:
    cause = "event Signed Up (m-000008226)"
    return JourneyInstance(
        id=instance_id,
        journey_id="nudge",
        version=1,
        profile_id=profile_id,
        status="completed",
        entered_at=T0,
        entered_by="m-000008226",
        step_id="hello",
        timer_seq=1,
        visits={"pause": 1, "hello": 1},
        ended_at=T0 + timedelta(hours=1),
        end_reason="reached the end of the journey",
        trace=[
            TraceEntry(at=T0, step="pause", what="entered", why="trigger 0 fired", cause=cause),
            TraceEntry(at=T0, step="pause", what="waiting", why="for a duration", cause=cause),
            TraceEntry(at=T0, step="pause", what="wait over", why="for reached", cause="timer 1"),
            TraceEntry(
                at=T0, step="hello", what="sent", why="promotional message", cause="timer 1"
            ),
            TraceEntry(at=T0, step="hello", what="completed", why="the end", cause="timer 1"),
        ],
    )


async def test_an_instance_row_is_messagepack_and_stays_under_the_overflow_threshold(
    tmp_path: Path,
) -> None:
    storage, log = await open_sqlite(tmp_path)
    try:
        done = instance("jrn_660dc3778d00000264f0234e")
        batch = ProcessingBatch(consumer="profiles", offset=1, journey_instances=[(WS, done)])
        await storage.commit_processing(batch)
        assert await storage.get_journey_instance(WS, done.id) == done
    finally:
        await storage.close()
        await log.close()
    with sqlite3.connect(tmp_path / RAPPORT_DB) as conn:
        (doc, row_bytes) = conn.execute(
            "SELECT doc, length(doc) + length(workspace_id) + length(id) + length(journey_id)"
            " + length(profile_id) + length(status) + 16 FROM journey_instances"
        ).fetchone()
    assert bytes(doc)[:1] != b"{"
    assert msgspec.msgpack.decode(doc, type=JourneyInstance) == done
    # A WITHOUT ROWID row past ~1,000 bytes spills into an overflow page.
    assert row_bytes < 1000 < len(msgspec.json.encode(done)) + row_bytes - len(doc)


async def test_rows_written_as_json_before_still_read_and_are_rewritten_compact(
    tmp_path: Path,
) -> None:
    storage, log = await open_sqlite(tmp_path)
    await storage.close()
    await log.close()
    old = msgspec.structs.replace(
        instance("i_old", "prof_1"),
        status="waiting",
        ended_at=None,
        end_reason=None,
        wait=WaitState(kind="for", since=T0, until=T0 + timedelta(days=1)),
        timer_at=T0 + timedelta(days=1),
    )
    with sqlite3.connect(tmp_path / RAPPORT_DB) as conn:
        conn.execute(
            "INSERT INTO journey_instances (workspace_id, id, journey_id, version, profile_id,"
            " correlation_key, status, live, ended_at, doc)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 1, NULL, ?)",
            (
                WS,
                old.id,
                old.journey_id,
                old.version,
                old.profile_id,
                None,
                old.status,
                msgspec.json.encode(old),
            ),
        )
    storage, log = await open_sqlite(tmp_path)
    try:
        assert await storage.get_journey_instance(WS, "i_old") == old
        assert await storage.load_journey_instances(WS, ["prof_1"]) == [old]
        page = await storage.list_journey_instances(WS, "nudge", 10)
        assert page.instances == [old]
        moved = msgspec.structs.replace(old, profile_id="prof_2", status="completed")
        batch = ProcessingBatch(consumer="profiles", offset=1, journey_instances=[(WS, moved)])
        await storage.commit_processing(batch)
        assert await storage.load_journey_instances(WS, ["prof_1"]) == []
        assert await storage.load_journey_instances(WS, ["prof_2"]) == [moved]
        assert await storage.journey_instance_counts(WS, "nudge") == {"completed": 1}
    finally:
        await storage.close()
        await log.close()
    with sqlite3.connect(tmp_path / RAPPORT_DB) as conn:
        (doc,) = conn.execute("SELECT doc FROM journey_instances").fetchone()
    assert bytes(doc)[:1] != b"{"


async def test_bulk_moves_and_relay_deletes_probe_primary_keys_not_scan(tmp_path: Path) -> None:
    # One statement per 256 rows (not one step, and one GIL hand-back, per row)
    # must still find each row by its key: a scan per statement would read the
    # whole table at every step.
    storage, log = await open_sqlite(tmp_path)
    await storage.close()
    await log.close()
    with sqlite3.connect(tmp_path / RAPPORT_DB) as conn:
        move = " ".join(
            row[3]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + sqlite_journey_runs._MOVE_INSTANCES.sql(3), ["x"] * 18
            )
        )
        delete = " ".join(
            row[3]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + sqlite_scheduled._delete_statement(3), ["x"] * 12
            )
        )
    assert "SEARCH journey_instances USING PRIMARY KEY (workspace_id=? AND id=?)" in move
    assert "SCAN journey_instances" not in move
    assert "(workspace_id=? AND schedule_key=?)" in delete
    assert "SCAN scheduled_events" not in delete and "SCAN s" not in delete
