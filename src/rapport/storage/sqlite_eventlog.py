"""The SQLite event log (``events.db``); ``append`` is the ingest hot path.

Layout: one ``event_batch`` row per append of at most ``MAX_ROW_EVENTS``
events (longer appends take several rows), keyed by the offset of its last
event, its events stored as one JSON array; the events before the last take
the offsets just below (migration ``events_0002`` says why). A data dir
created before that keeps its first entries in ``event_log``, one event per
row, read-only. An append is durable once its rows are committed; offsets
grow, so those inserts are sequential and cheap.

Appends are coalesced (``sqlite_db.Coalescer``): appends made while one is
waiting for the writer thread join it and share its statements, its commit
and its dedup lookup. Encoding happens on the caller's side, once per row.

Deduplication by ``(workspace_id, message_id)``: see ``sqlite_dedup``.

The rows of this process's latest appends (``RECENT_EVENTS`` events and
``RECENT_BYTES`` of JSON at most) are kept as they were stored, after their
commit: a read of them (the processor right behind the relay or ingest)
decodes them from memory instead of asking a reader thread for rows just
written. A read the kept rows do not cover in full goes to the database for
the rest, so it answers exactly what the database holds: the same bytes
decoded the same way, rows of other processes (which take offsets in
between) included.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import msgspec
import structlog

from rapport.core.model import Event, LogEntry
from rapport.storage.base import EventLog
from rapport.storage.migrations import dialect_directory, load_migrations
from rapport.storage.sqlite_db import (
    BulkInsert,
    Coalescer,
    DatabaseClosedError,
    MicrosCache,
    SqliteDatabase,
    to_micros,
)
from rapport.storage.sqlite_dedup import (
    Key,
    RecentIds,
    clear_staged,
    index_staged,
    indexed,
    prune_key_range,
    stage_flush,
)

MAX_ROW_EVENTS = 100
"""Most events in one ``event_batch`` row. A read that stops inside a row
decodes the whole row again next time, so rows stay small next to reads."""
# Flush the in-memory ids once this many wait: bigger flushes touch fewer
# pages per id (measured on a 1M-id index: 28 us/id at 5k, 10 at 50k, 5 at 200k).
DEDUP_FLUSH_THRESHOLD = 100_000
# Ids per flush write job, so appends interleave with a running flush.
DEDUP_FLUSH_CHUNK = 10_000
# Seconds between background checkpoints: appends never rewrite a page, so
# frequent small checkpoints cost no more I/O than rare big ones, and keep
# the writer's own (stalling) checkpoints short.
CHECKPOINT_EVERY = 0.5
RECENT_EVENTS = 50_000
"""Most events of the latest appends kept in memory for reads."""
RECENT_BYTES = 16 * 1024 * 1024
"""Most bytes of stored JSON kept in memory for reads (some 25,000 customer
events). Enough for what a processor behind a burst of ingest still has to
read: the membership events the relay appends meanwhile would otherwise push
the burst's unread rows out, and both would be read back from the file."""

_log = structlog.get_logger(__name__)
_encode = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(Event).decode
_decode_events = msgspec.json.Decoder(list[Event]).decode


class _StoredKey(msgspec.Struct, rename="camel"):
    """What dedup needs of a stored event; its other fields are skipped."""

    workspace_id: str
    message_id: str
    received_at: datetime


_decode_keys = msgspec.json.Decoder(list[_StoredKey]).decode

_INSERT_ROWS = BulkInsert("event_batch", ("last_offset", "events", "body"))


EncodedEvent = tuple[str, str, int, bytes]
"""An event as stored elsewhere: ``(workspace_id, message_id, received_at micros, JSON)``,
the JSON being what this module's encoder makes of the ``Event`` (``append_encoded``)."""


@dataclass(slots=True)
class _Row:
    """Up to ``MAX_ROW_EVENTS`` events of one append, encoded by the caller."""

    events: Sequence[Event]
    """The events (none when ``parts`` holds them)."""
    keys: list[Key]
    first_seen: list[int]
    """``received_at`` of each event, in microseconds."""
    body: bytes
    stored: tuple[int, int, bytes] | None = None
    """``(first offset, last offset, body)`` as inserted (writer thread); None if all
    its events were duplicates."""
    parts: Sequence[bytes] | None = None
    """Each event's JSON, for rows of ``append_encoded``."""


_Stored = tuple[int, int, bytes]


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
        self._ids = RecentIds()
        self._db = SqliteDatabase(
            path,
            migrations,
            synchronous=synchronous,
            listener=self._ids,
            checkpoint_every=CHECKPOINT_EVERY,
        )
        self._appends = Coalescer(self._db, self._append_many)
        self._legacy_end = 0
        """Newest offset in the one-event-per-row ``event_log`` (0: none)."""
        self._flush_threshold = dedup_flush_threshold
        self._flush_chunk = dedup_flush_chunk
        self._flush_task: asyncio.Task[None] | None = None
        self._closed = False
        self._recent_rows: deque[_Stored] = deque()
        self._recent_bytes = 0
        """Bytes of the bodies of ``_recent_rows``."""
        self._recent_by_offset: dict[int, _Stored] = {}
        """Each kept offset -> its row (event loop thread only)."""

    async def open(self) -> None:
        await self._db.open()
        self._legacy_end = await self._db.write(self._rebuild_recent_ids)
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
        received_micros = MicrosCache()
        rows: list[_Row] = []
        for start in range(0, len(events), MAX_ROW_EVENTS):
            chunk = events[start : start + MAX_ROW_EVENTS]
            rows.append(
                _Row(
                    chunk,
                    [(e.workspace_id, e.message_id) for e in chunk],
                    [received_micros(e.received_at) for e in chunk],
                    _encode(chunk),
                )
            )
        is_new = await self._appends.add(rows)
        self._keep(rows)
        self._maybe_flush()
        return is_new

    async def append_encoded(self, events: Sequence[EncodedEvent]) -> list[bool]:
        """``append`` for events already encoded (the relay's rows): nothing is decoded.

        A row's body is its events' JSON joined into an array, the bytes
        ``append`` would have encoded.
        """
        if not events:
            return []
        rows: list[_Row] = []
        for start in range(0, len(events), MAX_ROW_EVENTS):
            chunk = events[start : start + MAX_ROW_EVENTS]
            parts = [body for _, _, _, body in chunk]
            rows.append(
                _Row(
                    (),
                    [(ws, message_id) for ws, message_id, _, _ in chunk],
                    [received_at for _, _, received_at, _ in chunk],
                    b"[" + b",".join(parts) + b"]",
                    parts=parts,
                )
            )
        is_new = await self._appends.add(rows)
        self._keep(rows)
        self._maybe_flush()
        return is_new

    async def read(self, after: int, limit: int) -> list[LogEntry]:
        if limit <= 0:
            return []
        entries = self._read_kept(after, limit)
        if len(entries) >= limit:
            return entries
        if entries:
            after, limit = entries[-1].offset, limit - len(entries)
        return entries + await self._db.read(partial(_read_entries, after, limit, self._legacy_end))

    def _keep(self, rows: list[_Row]) -> None:
        """Keep the rows of a committed append (``RECENT_EVENTS`` and ``RECENT_BYTES`` at most)."""
        kept, by_offset = self._recent_rows, self._recent_by_offset
        for row in rows:
            if row.stored is None:
                continue
            first, last, body = row.stored
            kept.append(row.stored)
            self._recent_bytes += len(body)
            for offset in range(first, last + 1):
                by_offset[offset] = row.stored
        while kept and (len(by_offset) > RECENT_EVENTS or self._recent_bytes > RECENT_BYTES):
            first, last, body = kept.popleft()
            self._recent_bytes -= len(body)
            for offset in range(first, last + 1):
                by_offset.pop(offset, None)

    def _read_kept(self, after: int, limit: int) -> list[LogEntry]:
        """The entries after ``after`` that the kept rows hold without a gap (maybe none)."""
        entries: list[LogEntry] = []
        row = self._recent_by_offset.get(after + 1)
        while row is not None and len(entries) < limit:
            first, _, body = row
            skip = after + 1 - first
            wanted = _decode_events(body)[skip : skip + limit - len(entries)]
            entries.extend(LogEntry(after + 1 + i, event) for i, event in enumerate(wanted))
            after = entries[-1].offset
            row = self._recent_by_offset.get(after + 1)
        return entries

    async def end_offset(self) -> int:
        return await self._db.read(partial(_newest_offset, self._legacy_end))

    async def prune_dedup(self, older_than: datetime) -> int:
        cutoff = to_micros(older_than)
        total = await self._db.write(partial(self._forget_recent, cutoff))
        # Walk the index in key order, one range per write job, so appends
        # interleave with a prune of any size.
        after: Key | None = None
        while True:
            deleted, after = await self._db.write(partial(prune_key_range, cutoff, after))
            total += deleted
            if after is None:
                return total

    # -- write jobs (writer thread) ----------------------------------------------
    def _append_many(self, appends: list[list[_Row]], conn: sqlite3.Connection) -> list[list[bool]]:
        """Several callers' appends, in the order they came, as one append."""
        if len(appends) == 1:
            return [self._append_rows(appends[0], conn)]
        is_new = self._append_rows([row for rows in appends for row in rows], conn)
        answers: list[list[bool]] = []
        start = 0
        for rows in appends:
            end = start + sum(len(row.keys) for row in rows)
            answers.append(is_new[start:end])
            start = end
        return answers

    def _append_rows(self, rows: list[_Row], conn: sqlite3.Connection) -> list[bool]:
        # Written for speed (this is the ingest hot path): the usual call (all
        # ids new) stores the rows as the callers encoded them.
        self._take_in_foreign_appends(conn)
        ids = self._ids
        recent, flushing = ids.recent, ids.flushing
        keys = rows[0].keys if len(rows) == 1 else [key for row in rows for key in row.keys]
        seen = {key for key in keys if key in recent or key in flushing}
        seen.update(indexed(conn, keys))
        last = ids.last_offset
        stored: list[tuple[int, int, bytes]] = []
        fresh: list[tuple[Key, int]] = []
        if not seen and len(set(keys)) == len(keys):
            for row in rows:
                row.stored = (last + 1, last + len(row.keys), row.body)
                last += len(row.keys)
                stored.append((last, len(row.keys), row.body))
                fresh.extend(zip(row.keys, row.first_seen, strict=True))
            is_new = [True] * len(keys)
        else:
            is_new = []
            for row in rows:
                kept: list[int] = []
                for index, (key, first_seen) in enumerate(
                    zip(row.keys, row.first_seen, strict=True)
                ):
                    if key in seen:
                        is_new.append(False)
                        continue
                    seen.add(key)  # a repeat later in this same append is a duplicate
                    is_new.append(True)
                    kept.append(index)
                    fresh.append((key, first_seen))
                row.stored = None
                if kept:
                    body = row.body if len(kept) == len(row.keys) else _body(row, kept)
                    row.stored = (last + 1, last + len(kept), body)
                    last += len(kept)
                    stored.append((last, len(kept), body))
        if stored:
            _INSERT_ROWS.run(conn, stored)
            # Last: a job that fails before here has changed nothing in memory.
            ids.add(fresh, last)
        return is_new

    def _take_in_foreign_appends(self, conn: sqlite3.Connection) -> None:
        """Add to the in-memory ids what other processes appended to this file.

        A ``rapport worker`` appends (Segment Entered/Exited events) to the
        same ``events.db`` as ``rapport serve``. Its ids are not in this
        process's memory, and a flush here advances ``indexed_through`` past
        them; taking them in keeps dedup exact across processes and makes
        that flush index them too. It also keeps this process's offsets
        after the other's. Inside the write transaction nobody else can
        append, so the check is consistent; the newest offset is O(log n).
        """
        ids = self._ids
        newest = _newest_offset(self._legacy_end, conn)
        if newest <= ids.last_offset:
            return
        foreign = [
            (key, seen)
            for key, seen in _keys_after(ids.last_offset, self._legacy_end, conn)
            if key not in ids
        ]
        ids.add(foreign, newest)

    def _rebuild_recent_ids(self, conn: sqlite3.Connection) -> int:
        """Re-read the ids not in ``event_dedup`` yet; returns the legacy table's end."""
        (legacy_end,) = conn.execute(
            "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'event_log'"
        ).fetchone()
        indexed_through, pruned_before = conn.execute(
            "SELECT indexed_through, pruned_before FROM event_dedup_state"
        ).fetchone()
        found = {
            key: seen
            for key, seen in _keys_after(indexed_through, legacy_end, conn)
            if seen >= pruned_before
        }
        # A flush that crashed half way indexed some of them already.
        for key in indexed(conn, found):
            del found[key]
        self._ids.add(list(found.items()), _newest_offset(legacy_end, conn))
        if found:
            _log.info(
                "dedup ids re-read from the event log", path=str(self._db.path), count=len(found)
            )
        return int(legacy_end)

    def _start_flush(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """Stage the ids to flush in key order; returns ``(count, through)``."""
        if self._ids.flushing:
            return 0, 0
        count = stage_flush(conn, self._ids.start_flush())
        return count, self._ids.flush_through

    def _write_flush_chunk(
        self, first: int, last: int, through: int | None, conn: sqlite3.Connection
    ) -> None:
        """Index staged ids ``first``..``last``; ``through`` comes with the last chunk."""
        index_staged(conn, first, last)
        if through is not None:
            conn.execute("UPDATE event_dedup_state SET indexed_through = ?", (through,))
            clear_staged(conn)
            self._ids.finish_flush()

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
        count, through = await self._db.write(self._start_flush)
        if not count:
            return
        try:
            for first in range(1, count + 1, self._flush_chunk):
                last = min(count, first + self._flush_chunk - 1)
                await self._db.write(
                    partial(
                        self._write_flush_chunk, first, last, through if last == count else None
                    )
                )
        except BaseException:
            await self._db.write(self._abort_flush)
            raise


def _body(row: _Row, kept: list[int]) -> bytes:
    """The body of ``row`` holding only its events at ``kept``."""
    if row.parts is not None:
        parts = row.parts
        return b"[" + b",".join([parts[i] for i in kept]) + b"]"
    events = row.events
    return _encode([events[i] for i in kept])


def _read_entries(
    after: int, limit: int, legacy_end: int, conn: sqlite3.Connection
) -> list[LogEntry]:
    entries: list[LogEntry] = []
    if after < legacy_end:
        entries = [
            LogEntry(offset, _decode_event(body))
            for offset, body in conn.execute(
                "SELECT log_offset, body FROM event_log"
                " WHERE log_offset > ? ORDER BY log_offset LIMIT ?",
                (after, limit),
            )
        ]
        if len(entries) >= limit:
            return entries
        after = legacy_end
    # Rows are fetched one at a time, and only as many as the limit needs.
    cursor = conn.execute(
        "SELECT last_offset, events, body FROM event_batch"
        " WHERE last_offset > ? ORDER BY last_offset",
        (after,),
    )
    try:
        for last, count, body in cursor:
            first = last - count + 1
            skip = max(0, after - first + 1)  # entries at or before ``after``
            wanted = _decode_events(body)[skip : skip + limit - len(entries)]
            offset = first + skip
            entries.extend(LogEntry(offset + i, event) for i, event in enumerate(wanted))
            if len(entries) >= limit:
                break
    finally:
        cursor.close()
    return entries


def _keys_after(after: int, legacy_end: int, conn: sqlite3.Connection) -> list[tuple[Key, int]]:
    """``(key, received_at micros)`` of every entry after offset ``after``, in order."""
    keys: list[tuple[Key, int]] = []
    if after < legacy_end:
        keys.extend(
            ((workspace_id, message_id), received_at)
            for workspace_id, message_id, received_at in conn.execute(
                "SELECT workspace_id, message_id, received_at FROM event_log"
                " WHERE log_offset > ? ORDER BY log_offset",
                (after,),
            )
        )
    for last, count, body in conn.execute(
        "SELECT last_offset, events, body FROM event_batch"
        " WHERE last_offset > ? ORDER BY last_offset",
        (after,),
    ):
        skip = max(0, after - (last - count))
        keys.extend(
            ((stored.workspace_id, stored.message_id), to_micros(stored.received_at))
            for stored in _decode_keys(body)[skip:]
        )
    return keys


def _newest_offset(legacy_end: int, conn: sqlite3.Connection) -> int:
    (newest,) = conn.execute("SELECT max(last_offset) FROM event_batch").fetchone()
    return legacy_end if newest is None else int(newest)
