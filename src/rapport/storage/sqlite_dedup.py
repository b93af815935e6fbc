"""Deduplication for the SQLite event log: recent ids in memory, the rest indexed.

An id ``(workspace_id, message_id)`` is known from two places: the persistent
index ``event_dedup`` in ``events.db``, and the ids appended since that index
was last brought up to date, kept in memory (``RecentIds``). Writing each id
to ``event_dedup`` as it arrives would be simpler but slow: message ids are
random, so every id lands on a different B-tree page and every commit writes
one page per event to the WAL (and again at checkpoint) -- measured at 15 to
60 us per event on this kind of machine. Instead the in-memory ids are
flushed in bulk, in key order, in key-range chunks, which touches each page
once per flush:

1. ``stage_flush`` copies the ids into a temporary table sorted by key (the
   sort runs in SQLite, in C, without holding the GIL the event loop needs;
   sorting 100k ids in Python took ~0.2 s of it);
2. ``index_staged`` inserts one range of staged rows per write job, so
   appends interleave with a flush of any size.

After a crash nothing is lost: the ids that were only in memory are re-read
from the log on open (every entry after ``event_dedup_state.indexed_through``).

``RecentIds`` belongs to the writer thread: it changes only inside write
jobs, and each change records its undo, applied when the job's savepoint or
the whole transaction rolls back (it is the database's
``TransactionListener``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from functools import partial

import msgspec

Key = tuple[str, str]
"""``(workspace_id, message_id)``"""

PRUNE_CHUNK = 20_000
"""Index rows examined per prune write job, so appends interleave with a prune."""

LOOKUP_CHUNK = 10_000
"""Ids looked up in the index per statement."""

_encode = msgspec.json.Encoder().encode

# One index probe per id (CROSS JOIN keeps json_each outside): a third of the
# cost of ``message_id IN (SELECT value FROM json_each(?))``, which first
# builds a temporary index of the ids.
_SELECT_INDEXED = (
    "SELECT value FROM json_each(?2)"
    " CROSS JOIN event_dedup ON workspace_id = ?1 AND message_id = value"
)
# The ids of a flush, staged in primary-key order (rowids 1..n follow it).
_CREATE_STAGED = (
    "CREATE TEMP TABLE IF NOT EXISTS dedup_staged"
    " (workspace_id TEXT NOT NULL, message_id TEXT NOT NULL, first_seen INTEGER NOT NULL)"
)
# One workspace's ids as a JSON object {message_id: first_seen}. Python
# orders strings by code point, SQLite (BINARY) by UTF-8 bytes: the same order.
_STAGE_IDS = (
    "INSERT INTO temp.dedup_staged (workspace_id, message_id, first_seen)"
    " SELECT ?, key, value FROM json_each(?) ORDER BY key"
)
# Ids pruned since the flush started are no longer waiting: the condition on
# pruned_before skips them. A flush that crashed half way may have indexed
# some of them already.
_INDEX_STAGED = (
    "INSERT INTO event_dedup (workspace_id, message_id, first_seen)"
    " SELECT workspace_id, message_id, first_seen FROM temp.dedup_staged"
    " WHERE rowid BETWEEN ? AND ?"
    " AND first_seen >= (SELECT pruned_before FROM event_dedup_state)"
    " ON CONFLICT DO NOTHING"
)


class RecentIds:
    """Ids in the log but not (yet) in ``event_dedup``, with their first-seen time.

    ``recent`` takes new appends; a flush moves it to ``flushing`` until all
    of it is indexed. Writer thread only.
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

    def start_flush(self) -> dict[Key, int]:
        """Move every recent id to ``flushing`` and return them."""
        if self.flushing:
            raise RuntimeError("a dedup flush is already running")
        moved, previous_through = self.recent, self.flush_through
        self.flushing, self.recent = moved, {}
        self.flush_through = self.last_offset

        def undo() -> None:
            self.recent, self.flushing = moved, {}
            self.flush_through = previous_through

        self._undo.append(undo)
        return moved

    def finish_flush(self) -> None:
        """Every id in ``flushing`` is now in ``event_dedup``."""
        done = self.flushing
        self.flushing = {}

        def undo() -> None:
            self.flushing = done

        self._undo.append(undo)

    def abort_flush(self) -> None:
        """A flush failed: its ids wait in ``recent`` again (some may be indexed already)."""
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


def indexed(conn: sqlite3.Connection, keys: Iterable[Key]) -> set[Key]:
    """Those of ``keys`` that are in ``event_dedup``."""
    by_workspace: dict[str, list[str]] = {}
    for workspace_id, message_id in keys:
        by_workspace.setdefault(workspace_id, []).append(message_id)
    found: set[Key] = set()
    for workspace_id, message_ids in by_workspace.items():
        for start in range(0, len(message_ids), LOOKUP_CHUNK):
            chunk = _encode(message_ids[start : start + LOOKUP_CHUNK])
            for (message_id,) in conn.execute(_SELECT_INDEXED, (workspace_id, chunk)):
                found.add((workspace_id, message_id))
    return found


def stage_flush(conn: sqlite3.Connection, ids: dict[Key, int]) -> int:
    """Put ``ids`` in ``temp.dedup_staged`` in key order; returns how many (rowids 1..n)."""
    conn.execute(_CREATE_STAGED)
    conn.execute("DELETE FROM temp.dedup_staged")
    by_workspace: dict[str, dict[str, int]] = {}
    for (workspace_id, message_id), seen in ids.items():
        by_workspace.setdefault(workspace_id, {})[message_id] = seen
    # Workspace by workspace in order, each one's ids sorted by SQLite.
    for workspace_id in sorted(by_workspace):
        conn.execute(_STAGE_IDS, (workspace_id, _encode(by_workspace[workspace_id])))
    return len(ids)


def index_staged(conn: sqlite3.Connection, first: int, last: int) -> None:
    """Insert staged rows ``first``..``last`` (one key range) into ``event_dedup``."""
    conn.execute(_INDEX_STAGED, (first, last))


def clear_staged(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM temp.dedup_staged")


def prune_key_range(
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
