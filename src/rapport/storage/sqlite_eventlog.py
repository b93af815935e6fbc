"""The SQLite event log (``events.db``); ``append`` is the ingest hot path.

An append is durable once its rows are committed to ``event_log``: offsets
grow by one per event, so those inserts are sequential and cheap.

Deduplication by ``(workspace_id, message_id)`` answers from two places: the
persistent index ``event_dedup``, and the ids appended since that index was
last brought up to date, kept in memory (``_RecentIds``). Writing each id to
``event_dedup`` as it arrives would be simpler but slow: message ids are
random, so every id lands on a different B-tree page and every commit writes
one page per event to the WAL (and again at checkpoint) -- measured at 15 to
60 us per event on this kind of machine, a quarter of the ingest target.
Instead the in-memory ids are flushed in bulk, sorted, in key-range chunks,
which touches each page once per flush. After a crash nothing is lost: the
ids that were only in memory are re-read from the log on open (every entry
after ``event_dedup_state.indexed_through``).

The in-memory ids belong to the writer thread: they change only inside write
jobs, and each change records its undo, applied when the job's savepoint or
the whole transaction rolls back (see ``TransactionListener``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from operator import itemgetter
from pathlib import Path

import msgspec
import structlog

from rapport.core.model import Event, LogEntry
from rapport.storage.base import EventLog
from rapport.storage.migrations import dialect_directory, load_migrations
from rapport.storage.sqlite_db import (
    BulkInsert,
    DatabaseClosedError,
    MicrosCache,
    SqliteDatabase,
    to_micros,
)

# Flush the in-memory ids once this many wait: bigger flushes touch fewer
# pages per id (measured on a 1M-id index: 28 us/id at 5k, 10 at 50k, 5 at 200k).
DEDUP_FLUSH_THRESHOLD = 100_000
# Ids per flush write job, so appends interleave with a running flush.
DEDUP_FLUSH_CHUNK = 10_000
# Index rows examined per prune write job, for the same reason.
PRUNE_CHUNK = 20_000

_log = structlog.get_logger(__name__)
_encode = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(Event).decode

Key = tuple[str, str]
"""``(workspace_id, message_id)``"""
LogRow = tuple[str, str, int, bytes]
"""``(workspace_id, message_id, received_at micros, body)``"""

_SELECT_SEEN = (
    "SELECT message_id FROM event_dedup"
    " WHERE workspace_id = ? AND message_id IN (SELECT value FROM json_each(?))"
)
_INSERT_LOG = BulkInsert("event_log", ("workspace_id", "message_id", "received_at", "body"))
# A flush that crashed half way may have indexed some ids already.
_INSERT_DEDUP = BulkInsert(
    "event_dedup", ("workspace_id", "message_id", "first_seen"), suffix="ON CONFLICT DO NOTHING"
)


class _RecentIds:
    """Ids in the log but not (yet) in ``event_dedup``, with their first-seen time.

    ``recent`` takes new appends; a flush moves it to ``flushing`` and writes
    that out chunk by chunk. Writer thread only.
    """

    def __init__(self) -> None:
        self.recent: dict[Key, int] = {}
        self.flushing: dict[Key, int] = {}
        self.last_offset = 0
        """Newest log offset, including this transaction's appends."""
        self.flush_through = 0
        """Newest log offset whose id the running flush covers."""
        self._undo: list[Callable[[], None]] = []
        self._job_mark = 0

    def __contains__(self, key: Key) -> bool:
        return key in self.recent or key in self.flushing

    # -- TransactionListener ---------------------------------------------------
    def job_started(self) -> None:
        self._job_mark = len(self._undo)

    def job_rolled_back(self) -> None:
        self._undo_to(self._job_mark)

    def transaction_committed(self) -> None:
        self._undo.clear()
        self._job_mark = 0

    def transaction_rolled_back(self) -> None:
        self._undo_to(0)
        self._job_mark = 0

    def _undo_to(self, mark: int) -> None:
        while len(self._undo) > mark:
            self._undo.pop()()

    # -- changes (each records its undo) ---------------------------------------
    def add(self, first_seen: list[tuple[Key, int]], last_offset: int) -> None:
        recent = self.recent
        previous_offset = self.last_offset
        recent.update(first_seen)
        self.last_offset = last_offset

        def undo() -> None:
            for key, _ in first_seen:
                del recent[key]
            self.last_offset = previous_offset

        self._undo.append(undo)

    def start_flush(self) -> list[tuple[Key, int]]:
        """Move every recent id to ``flushing``; returns them sorted by key."""
        if self.flushing:
            raise RuntimeError("a dedup flush is already running")
        moved, previous_through = self.recent, self.flush_through
        self.flushing, self.recent = moved, {}
        self.flush_through = self.last_offset

        def undo() -> None:
            self.recent, self.flushing = moved, {}
            self.flush_through = previous_through

        self._undo.append(undo)
        return _sorted_by_key(moved)

    def indexed(self, keys: list[Key]) -> None:
        """``keys`` are now in ``event_dedup``."""
        flushing = self.flushing
        removed = [(key, flushing.pop(key)) for key in keys]
        self._undo.append(lambda: flushing.update(removed))

    def abort_flush(self) -> None:
        """A flush failed: what it had not written waits in ``recent`` again."""
        moved, recent = self.flushing, self.recent
        recent.update(moved)
        self.flushing = {}

        def undo() -> None:
            for key in moved:
                del recent[key]
            self.flushing = moved

        self._undo.append(undo)

    def forget_older_than(self, cutoff: int) -> int:
        forgotten = 0
        for ids in (self.recent, self.flushing):
            old = [(key, seen) for key, seen in ids.items() if seen < cutoff]
            for key, _ in old:
                del ids[key]
            self._undo.append(partial(ids.update, old))
            forgotten += len(old)
        return forgotten


def _sorted_by_key(ids: dict[Key, int]) -> list[tuple[Key, int]]:
    """``ids`` in primary-key order, so each flush chunk covers one key range.

    Sorting per workspace on the message id alone compares plain strings,
    several times faster than comparing nested tuples. Python orders strings
    by code point, which is the order of their UTF-8 bytes: SQLite's order.
    """
    by_workspace: dict[str, list[tuple[str, int]]] = {}
    for (workspace_id, message_id), seen in ids.items():
        by_workspace.setdefault(workspace_id, []).append((message_id, seen))
    ordered: list[tuple[Key, int]] = []
    for workspace_id in sorted(by_workspace):
        entries = by_workspace[workspace_id]
        entries.sort(key=itemgetter(0))
        ordered.extend(((workspace_id, message_id), seen) for message_id, seen in entries)
    return ordered


class SqliteEventLog(EventLog):
    """The event log in one SQLite file, with its own writer thread."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        dedup_flush_threshold: int = DEDUP_FLUSH_THRESHOLD,
        dedup_flush_chunk: int = DEDUP_FLUSH_CHUNK,
    ) -> None:
        if dedup_flush_threshold < 1 or dedup_flush_chunk < 1:
            raise ValueError("dedup flush threshold and chunk must be at least 1")
        migrations = load_migrations(dialect_directory("sqlite"), prefix="events_")
        self._ids = _RecentIds()
        self._db = SqliteDatabase(path, migrations, synchronous=synchronous, listener=self._ids)
        self._flush_threshold = dedup_flush_threshold
        self._flush_chunk = dedup_flush_chunk
        self._flush_task: asyncio.Task[None] | None = None
        self._closed = False

    async def open(self) -> None:
        await self._db.open()
        await self._db.write(self._rebuild_recent_ids)
        self._maybe_flush()

    async def close(self) -> None:
        """Finish queued appends, bring the dedup index up to date, close."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._flush_task is not None:
                await self._flush_task
            # Flushed now, a reopen has nothing to re-read from the log.
            await self._flush()
        finally:
            await self._db.close()

    # -- EventLog ----------------------------------------------------------------
    async def append(self, events: Sequence[Event]) -> list[bool]:
        if not events:
            return []
        # Encoding happens here, on the caller's side, so the writer thread
        # spends its time in SQLite (which releases the GIL) only.
        received_micros = MicrosCache()
        rows = [
            (e.workspace_id, e.message_id, received_micros(e.received_at), _encode(e))
            for e in events
        ]
        is_new = await self._db.write(partial(self._append_rows, rows))
        self._maybe_flush()
        return is_new

    async def read(self, after: int, limit: int) -> list[LogEntry]:
        if limit <= 0:
            return []
        return await self._db.read(partial(_read_entries, after, limit))

    async def end_offset(self) -> int:
        return await self._db.read(_end_offset)

    async def prune_dedup(self, older_than: datetime) -> int:
        cutoff = to_micros(older_than)
        total = await self._db.write(partial(self._forget_recent, cutoff))
        # Walk the index in key order, one range per write job, so appends
        # interleave with a prune of any size.
        after: Key | None = None
        while True:
            deleted, after = await self._db.write(partial(_prune_key_range, cutoff, after))
            total += deleted
            if after is None:
                return total

    # -- write jobs (writer thread) ----------------------------------------------
    def _append_rows(self, rows: list[LogRow], conn: sqlite3.Connection) -> list[bool]:
        # Written for speed (this is the ingest hot path): each key tuple is
        # built once, and the usual call (one workspace, all ids new) takes
        # the shortest way through.
        self._take_in_foreign_appends(conn)
        recent, flushing = self._ids.recent, self._ids.flushing
        keys = [(row[0], row[1]) for row in rows]
        seen = {key for key in keys if key in recent or key in flushing}
        unknown: dict[str, list[str]] = {}
        for workspace_id, message_id in keys:
            unknown.setdefault(workspace_id, []).append(message_id)
        for workspace_id, message_ids in unknown.items():
            for (message_id,) in conn.execute(_SELECT_SEEN, (workspace_id, _encode(message_ids))):
                seen.add((workspace_id, message_id))
        if not seen and len(set(keys)) == len(keys):
            fresh, fresh_keys, is_new = rows, keys, [True] * len(rows)
        else:
            fresh, fresh_keys, is_new = [], [], []
            for row, key in zip(rows, keys, strict=True):
                if key in seen:
                    is_new.append(False)
                else:
                    seen.add(key)  # a repeat later in this same call is a duplicate
                    is_new.append(True)
                    fresh.append(row)
                    fresh_keys.append(key)
        if fresh:
            last_offset = _INSERT_LOG.run(conn, fresh)
            assert last_offset is not None
            # Last: a job that fails before here has changed nothing in memory.
            self._ids.add(
                list(zip(fresh_keys, [row[2] for row in fresh], strict=True)), last_offset
            )
        return is_new

    def _take_in_foreign_appends(self, conn: sqlite3.Connection) -> None:
        """Add to the in-memory ids what other processes appended to this file.

        A ``rapport worker`` appends (Segment Entered/Exited events) to the
        same ``events.db`` as ``rapport serve``. Its ids are not in this
        process's memory, and a flush here advances ``indexed_through`` past
        them; taking them in keeps dedup exact across processes and makes
        that flush index them too. Inside the write transaction nobody else
        can append, so the check is consistent; the rowid max is O(log n).
        """
        ids = self._ids
        (newest,) = conn.execute("SELECT coalesce(max(log_offset), 0) FROM event_log").fetchone()
        if newest <= ids.last_offset:
            return
        foreign = [
            ((workspace_id, message_id), received_at)
            for workspace_id, message_id, received_at in conn.execute(
                "SELECT workspace_id, message_id, received_at FROM event_log WHERE log_offset > ?",
                (ids.last_offset,),
            )
            if (workspace_id, message_id) not in ids
        ]
        ids.add(foreign, newest)

    def _rebuild_recent_ids(self, conn: sqlite3.Connection) -> None:
        indexed_through, pruned_before = conn.execute(
            "SELECT indexed_through, pruned_before FROM event_dedup_state"
        ).fetchone()
        (last_offset,) = conn.execute(
            "SELECT coalesce(max(log_offset), 0) FROM event_log"
        ).fetchone()
        found: dict[Key, int] = {}
        by_workspace: dict[str, list[str]] = {}
        for workspace_id, message_id, received_at in conn.execute(
            "SELECT workspace_id, message_id, received_at FROM event_log"
            " WHERE log_offset > ? ORDER BY log_offset",
            (indexed_through,),
        ):
            if received_at >= pruned_before:
                found[(workspace_id, message_id)] = received_at
                by_workspace.setdefault(workspace_id, []).append(message_id)
        # A flush that crashed half way indexed some of them already.
        for workspace_id, message_ids in by_workspace.items():
            for start in range(0, len(message_ids), DEDUP_FLUSH_CHUNK):
                chunk = _encode(message_ids[start : start + DEDUP_FLUSH_CHUNK])
                for (message_id,) in conn.execute(_SELECT_SEEN, (workspace_id, chunk)):
                    del found[(workspace_id, message_id)]
        self._ids.add(list(found.items()), last_offset)
        if found:
            _log.info(
                "dedup ids re-read from the event log", path=str(self._db.path), count=len(found)
            )

    def _start_flush(self, conn: sqlite3.Connection) -> tuple[list[tuple[Key, int]], int]:
        if self._ids.flushing:
            return [], 0
        moved = self._ids.start_flush()
        return moved, self._ids.flush_through

    def _write_flush_chunk(
        self,
        chunk: list[tuple[Key, int]],
        through: int | None,
        conn: sqlite3.Connection,
    ) -> None:
        flushing = self._ids.flushing
        # Ids pruned since the flush started are no longer waiting: skip them.
        waiting = [(key, seen) for key, seen in chunk if key in flushing]
        _INSERT_DEDUP.run(conn, [(key[0], key[1], seen) for key, seen in waiting])
        if through is not None:
            conn.execute("UPDATE event_dedup_state SET indexed_through = ?", (through,))
        self._ids.indexed([key for key, _ in waiting])

    def _abort_flush(self, conn: sqlite3.Connection) -> None:
        self._ids.abort_flush()

    def _forget_recent(self, cutoff: int, conn: sqlite3.Connection) -> int:
        conn.execute(
            "UPDATE event_dedup_state SET pruned_before = max(pruned_before, ?)", (cutoff,)
        )
        return self._ids.forget_older_than(cutoff)

    # -- flushing ----------------------------------------------------------------
    def _maybe_flush(self) -> None:
        if (
            self._flush_task is None
            and not self._closed
            and len(self._ids.recent) >= self._flush_threshold
        ):
            self._flush_task = asyncio.create_task(self._background_flush())

    async def _background_flush(self) -> None:
        try:
            await self._flush()
        except (sqlite3.Error, DatabaseClosedError) as error:
            # The ids stay in memory (and in the log): the next flush retries.
            _log.error("dedup flush failed", path=str(self._db.path), error=repr(error))
        finally:
            self._flush_task = None

    async def _flush(self) -> None:
        moved, through = await self._db.write(self._start_flush)
        if not moved:
            return
        try:
            for start in range(0, len(moved), self._flush_chunk):
                chunk = moved[start : start + self._flush_chunk]
                last = start + self._flush_chunk >= len(moved)
                await self._db.write(
                    partial(self._write_flush_chunk, chunk, through if last else None)
                )
        except BaseException:
            await self._db.write(self._abort_flush)
            raise


def _read_entries(after: int, limit: int, conn: sqlite3.Connection) -> list[LogEntry]:
    rows = conn.execute(
        "SELECT log_offset, body FROM event_log WHERE log_offset > ? ORDER BY log_offset LIMIT ?",
        (after, limit),
    ).fetchall()
    return [LogEntry(offset, _decode_event(body)) for offset, body in rows]


def _end_offset(conn: sqlite3.Connection) -> int:
    (offset,) = conn.execute("SELECT coalesce(max(log_offset), 0) FROM event_log").fetchone()
    return int(offset)


def _prune_key_range(
    cutoff: int, after: Key | None, conn: sqlite3.Connection
) -> tuple[int, Key | None]:
    """Delete old ids among the next ``PRUNE_CHUNK`` keys; returns where to go on."""
    if after is None:
        bounds = conn.execute(
            "SELECT workspace_id, message_id FROM event_dedup"
            " ORDER BY workspace_id, message_id LIMIT 1 OFFSET ?",
            (PRUNE_CHUNK - 1,),
        ).fetchone()
    else:
        bounds = conn.execute(
            "SELECT workspace_id, message_id FROM event_dedup"
            " WHERE (workspace_id, message_id) > (?, ?)"
            " ORDER BY workspace_id, message_id LIMIT 1 OFFSET ?",
            (*after, PRUNE_CHUNK - 1),
        ).fetchone()
    # ``bounds`` is the last key of this range; None means the range runs to the end.
    lower = "" if after is None else " AND (workspace_id, message_id) > (?, ?)"
    upper = "" if bounds is None else " AND (workspace_id, message_id) <= (?, ?)"
    params = (cutoff, *(after or ()), *(bounds or ()))
    cursor = conn.execute(f"DELETE FROM event_dedup WHERE first_seen < ?{lower}{upper}", params)
    return cursor.rowcount, None if bounds is None else (bounds[0], bounds[1])
