"""One SQLite database file driven from asyncio without blocking the event loop.

Writes go through ONE writer thread per file, fed by a queue. The writer
takes every job waiting in the queue, runs each inside its own SAVEPOINT
within a single ``BEGIN IMMEDIATE`` transaction, commits once, and only then
resolves the callers' futures (group commit): a job that fails rolls back its
savepoint alone and gets its exception, and a caller never hears "done" for a
write that is not durable yet. Many concurrent small writes thus share one
fsync instead of queueing for one each.

Reads run on read-only connections in a small thread pool, each read in its
own snapshot (WAL lets them proceed while the writer commits).

Jobs are plain functions ``(sqlite3.Connection) -> T``; write jobs must not
issue BEGIN/COMMIT/ROLLBACK themselves. A ``TransactionListener`` hears how
each job and transaction ends, for backends that keep state in memory.

Optionally (``checkpoint_every``) a third thread copies the WAL into the
database file in the background, so commits stop stalling on checkpoints.

Also here: ``Coalescer`` (requests that wait for the writer share one job),
``BulkInsert`` (fast multi-row inserts) and the datetime <->
INTEGER-microseconds conversion every table uses.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import structlog

from rapport.storage.migrations import Migration, apply_migrations_sqlite

T = TypeVar("T")
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

SYNCHRONOUS_MODES = frozenset(("OFF", "NORMAL", "FULL", "EXTRA"))
# Cap on jobs per group commit, so one transaction (and the wait of its
# first caller) stays bounded under a flood of writes.
MAX_JOBS_PER_COMMIT = 1000

_log = structlog.get_logger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch, how datetimes are stored in columns.

    Refuses naive datetimes: their instant is unknown.
    """
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: only aware datetimes are stored")
    return (value - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


class MicrosCache:
    """``to_micros`` that reuses the last answer: a batch shares one ``received_at``."""

    __slots__ = ("_last", "_micros")

    def __init__(self) -> None:
        self._last: datetime | None = None
        self._micros = 0

    def __call__(self, value: datetime) -> int:
        if value is not self._last:
            self._micros = to_micros(value)
            self._last = value
        return self._micros


class TransactionListener(Protocol):
    """Told, on the writer thread, how each job and transaction ends.

    Lets a backend keep in-memory state in step with the database: change it
    inside a job, remember how to undo it, and undo on rollback.
    """

    def job_started(self) -> None: ...

    def job_rolled_back(self) -> None:
        """The job that just started failed; its savepoint was rolled back."""

    def transaction_committed(self) -> None: ...

    def transaction_rolled_back(self) -> None:
        """Everything since the last commit is gone."""


class DatabaseClosedError(RuntimeError):
    """A job was submitted to a database that is closed or closing."""


@dataclass
class _WriteJob:
    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


@dataclass
class _Stop:
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


# (loop, future, succeeded, result or exception)
_Outcome = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", bool, Any]


class SqliteDatabase:
    """A database file with a serialized group-committing writer and pooled readers."""

    def __init__(
        self,
        path: Path,
        migrations: Sequence[Migration],
        *,
        synchronous: str = "FULL",
        readers: int = 2,
        busy_timeout_ms: int = 5000,
        listener: TransactionListener | None = None,
        checkpoint_every: float | None = None,
    ) -> None:
        """``checkpoint_every``: seconds between background checkpoints (see
        ``_checkpointer_main``); ``None`` leaves checkpoints to the writer."""
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS_MODES)}")
        if readers < 1:
            raise ValueError("readers must be at least 1")
        if checkpoint_every is not None and checkpoint_every <= 0:
            raise ValueError("checkpoint_every must be positive")
        self.path = path
        self._migrations = list(migrations)
        self._synchronous = mode
        self._readers = readers
        self._busy_timeout_ms = busy_timeout_ms
        self._listener = listener
        self._queue: queue.SimpleQueue[_WriteJob | _Stop] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._reader_local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_conns_lock = threading.Lock()
        self._closing = False
        self._writer_dead = False
        self._checkpoint_every = checkpoint_every
        self._checkpointer: threading.Thread | None = None
        self._committed = threading.Event()
        self._stop_checkpoints = threading.Event()

    # -- lifecycle -----------------------------------------------------------
    async def open(self) -> None:
        """Open the writer connection, apply migrations, start the readers."""
        if self._writer is not None:
            raise RuntimeError(f"{self.path} is already open")
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._writer = threading.Thread(
            target=self._writer_main,
            args=(loop, ready),
            name=f"sqlite-writer:{self.path.name}",
            daemon=True,
        )
        self._writer.start()
        await ready
        if self._checkpoint_every is not None:
            self._checkpointer = threading.Thread(
                target=self._checkpointer_main,
                args=(self._checkpoint_every,),
                name=f"sqlite-checkpointer:{self.path.name}",
                daemon=True,
            )
            self._checkpointer.start()
        self._read_pool = ThreadPoolExecutor(
            max_workers=self._readers, thread_name_prefix=f"sqlite-reader:{self.path.name}"
        )

    async def close(self) -> None:
        """Finish every queued write, then close all connections. Idempotent."""
        if self._closing or self._writer is None:
            return
        self._closing = True
        if self._checkpointer is not None:
            self._stop_checkpoints.set()
            self._committed.set()
            await asyncio.to_thread(self._checkpointer.join)
        if self._read_pool is not None:
            await asyncio.to_thread(self._read_pool.shutdown, wait=True)
        with self._reader_conns_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        if self._writer_dead:
            return
        loop = asyncio.get_running_loop()
        stopped: asyncio.Future[None] = loop.create_future()
        # FIFO: everything queued before this marker is committed first.
        self._queue.put(_Stop(stopped, loop))
        await stopped

    # -- jobs ----------------------------------------------------------------
    async def write(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``run`` on the writer; returns once its effects are committed."""
        return await self.submit(run)

    def submit(self, run: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``run`` for the writer; the future resolves once its effects are committed.

        For callers that attach callbacks instead of awaiting (see the event
        log's coalesced appends). Call from a running event loop.
        """
        if self._closing or self._writer is None or self._writer_dead:
            raise DatabaseClosedError(f"{self.path} is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_WriteJob(run, future, loop))
        return future

    async def read(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``run`` on a reader connection, inside one snapshot."""
        if self._closing or self._read_pool is None:
            raise DatabaseClosedError(f"{self.path} is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, self._run_read, run)

    # -- readers -------------------------------------------------------------
    def _run_read(self, run: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = self._connect_reader()
            self._reader_local.conn = conn
        conn.execute("BEGIN")
        try:
            return run(conn)
        finally:
            conn.execute("COMMIT")

    def _connect_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"{self.path.resolve().as_uri()}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,  # closed by close(), from another thread
        )
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        with self._reader_conns_lock:
            self._reader_conns.append(conn)
        return conn

    # -- writer --------------------------------------------------------------
    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=True,
            # Room for the bulk-insert statements of many batch sizes.
            cached_statements=512,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            (journal_mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(journal_mode).lower() != "wal":
                raise sqlite3.OperationalError(
                    f"{self.path}: cannot switch to WAL mode (got {journal_mode!r})"
                )
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA cache_size = -65536")  # 64 MiB
            # Truncate the WAL back to 64 MiB after checkpoints instead of
            # letting it keep its high-water size forever.
            conn.execute("PRAGMA journal_size_limit = 67108864")
            # Checkpoint every ~40 MB of WAL instead of ~4 MB: fewer, larger
            # checkpoints cut page rewrites on write-heavy processing.
            conn.execute("PRAGMA wal_autocheckpoint = 10000")
            apply_migrations_sqlite(conn, self._migrations)
        except BaseException:
            conn.close()
            raise
        return conn

    def _checkpointer_main(self, every: float) -> None:
        """Copy committed WAL frames into the database file, off the writer's path.

        Left to the writer, a checkpoint runs inside the COMMIT that crosses
        ``wal_autocheckpoint``: that commit (and every caller waiting on it)
        stalls while ~40 MB are copied and synced, measured at 70-190 ms on
        this kind of machine. Here a PASSIVE checkpoint runs every ``every``
        seconds after a commit, on its own connection, beside the writer; it
        never blocks writers or readers. The writer's own checkpoint still
        runs when the WAL reaches its limit -- under constant appends the
        background one never catches up completely, and only a checkpoint with
        no write in between lets the next transaction start the WAL over --
        but by then almost every frame is already copied, so it is short.
        """
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            _log.warning("sqlite checkpointer not started", path=str(self.path), error=repr(exc))
            return
        try:
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            while True:
                self._committed.wait()
                if self._stop_checkpoints.is_set():
                    return
                self._committed.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # the writer's own checkpoints still run
                    _log.warning("sqlite checkpoint failed", path=str(self.path), error=repr(exc))
                if self._stop_checkpoints.wait(every):
                    return
        finally:
            conn.close()

    def _writer_main(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect_writer()
        except Exception as exc:  # delivered to open()'s caller
            self._writer_dead = True
            _deliver([(loop, ready, False, exc)])
            return
        _deliver([(loop, ready, True, None)])
        stop: _Stop | None = None
        jobs: list[_WriteJob] = []
        try:
            while stop is None:
                jobs, stop = self._take_jobs()
                if jobs:
                    _deliver(self._commit_group(conn, jobs))
                    jobs = []
        finally:
            self._writer_dead = True
            # Whatever did not get an answer (a group interrupted by a bug in
            # this loop, writes that raced close()) is refused, never left
            # waiting forever.
            refused: list[_Outcome] = []
            closed = DatabaseClosedError(f"{self.path} was closed")
            refused.extend((job.loop, job.future, False, closed) for job in jobs)
            stops = [stop] if stop is not None else []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Stop):
                    stops.append(item)
                else:
                    refused.append((item.loop, item.future, False, closed))
            conn.close()
            if refused:
                _log.warning("sqlite writes refused", path=str(self.path), count=len(refused))
            _deliver(refused)
            _deliver([(item.loop, item.future, True, None) for item in stops])

    def _take_jobs(self) -> tuple[list[_WriteJob], _Stop | None]:
        """Block for one job, then take whatever else is already queued."""
        jobs: list[_WriteJob] = []
        item = self._queue.get()
        while True:
            if isinstance(item, _Stop):
                return jobs, item
            jobs.append(item)
            if len(jobs) >= MAX_JOBS_PER_COMMIT:
                return jobs, None
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return jobs, None

    def _commit_group(self, conn: sqlite3.Connection, jobs: list[_WriteJob]) -> list[_Outcome]:
        """Run ``jobs`` in one transaction, one savepoint each; commit once.

        A job alone in its group needs no savepoint: rolling back the whole
        transaction undoes exactly that job. Every statement costs the writer
        a hand-back of the GIL, which under load means waiting for the event
        loop's thread, so the two statements are worth saving.
        """
        listener = self._listener or _NO_LISTENER
        outcomes: list[_Outcome] = []
        # Successful jobs whose work sits in the open transaction: final only
        # once COMMIT succeeds.
        pending: list[_Outcome] = []
        alone = len(jobs) == 1
        try:
            for job in jobs:
                if not conn.in_transaction:
                    conn.execute("BEGIN IMMEDIATE")
                if not alone:
                    conn.execute("SAVEPOINT job")
                listener.job_started()
                try:
                    value = job.run(conn)
                except Exception as exc:  # delivered to the job's caller
                    if alone:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        listener.transaction_rolled_back()
                    elif conn.in_transaction:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                        listener.job_rolled_back()
                    else:
                        # Some errors (disk full, I/O) make SQLite roll back
                        # the whole transaction: earlier jobs' work is gone.
                        listener.transaction_rolled_back()
                        lost = sqlite3.OperationalError(
                            f"rolled back because another write in its transaction failed: {exc}"
                        )
                        outcomes.extend((lp, fut, False, lost) for lp, fut, _, _ in pending)
                        pending = []
                    outcomes.append((job.loop, job.future, False, exc))
                else:
                    if not alone:
                        conn.execute("RELEASE job")
                    pending.append((job.loop, job.future, True, value))
            if conn.in_transaction:
                conn.execute("COMMIT")
                listener.transaction_committed()
                self._committed.set()
        except sqlite3.Error as exc:
            # BEGIN (busy), SAVEPOINT or COMMIT (I/O) failed: nothing pending
            # is durable, and jobs not reached yet never ran.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            listener.transaction_rolled_back()
            answered = {id(fut) for _, fut, _, _ in outcomes}
            outcomes.extend(
                (job.loop, job.future, False, exc) for job in jobs if id(job.future) not in answered
            )
            return outcomes
        outcomes.extend(pending)
        return outcomes


class _NoListener:
    def job_started(self) -> None:
        pass

    def job_rolled_back(self) -> None:
        pass

    def transaction_committed(self) -> None:
        pass

    def transaction_rolled_back(self) -> None:
        pass


_NO_LISTENER = _NoListener()


class BulkInsert:
    """A multi-row ``INSERT`` for many rows at once, one statement per ``MAX_ROWS``.

    One statement with many ``VALUES`` rows costs about half as much per row
    as ``executemany`` (no per-row reset and step from Python). Each statement
    holds up to ``MAX_ROWS`` rows, the remainder goes in one statement of its
    exact size: a batch of 100 is one call into SQLite (one release and
    re-acquisition of the GIL) instead of several. The statement text for each
    size is built once; the connection's statement cache keeps the prepared
    statements of the sizes that recur.
    """

    MAX_ROWS = 256

    def __init__(self, table: str, columns: Sequence[str], suffix: str = "") -> None:
        self._placeholders = "(" + ", ".join("?" * len(columns)) + ")"
        self._head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        self._suffix = f" {suffix}" if suffix else ""
        self._sql: dict[int, str] = {}

    def sql(self, rows: int) -> str:
        """The statement inserting ``rows`` rows (1 to ``MAX_ROWS``)."""
        sql = self._sql.get(rows)
        if sql is None:
            if not 1 <= rows <= self.MAX_ROWS:
                raise ValueError(f"a statement holds 1 to {self.MAX_ROWS} rows, not {rows}")
            sql = self._head + ", ".join([self._placeholders] * rows) + self._suffix
            self._sql[rows] = sql
        return sql

    def run(self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> int | None:
        """Insert ``rows``; returns the rowid of the last one inserted, if any."""
        last_rowid: int | None = None
        for start in range(0, len(rows), self.MAX_ROWS):
            chunk = rows[start : start + self.MAX_ROWS]
            cursor = conn.execute(self.sql(len(chunk)), [value for row in chunk for value in row])
            last_rowid = cursor.lastrowid
        return last_rowid


@dataclass(eq=False, slots=True)
class _Batch(Generic[ItemT, ResultT]):
    loop: asyncio.AbstractEventLoop
    items: list[ItemT]
    futures: list[asyncio.Future[ResultT]]


class Coalescer(Generic[ItemT, ResultT]):
    """Requests that arrive while one write job is queued join that job.

    Group commit already shares one COMMIT between the jobs waiting for the
    writer, but each job still pays its own statements, and after every
    statement the writer thread must get the GIL back from the event loop's
    thread: beside a busy event loop, the same append statements took several
    times longer than alone (measured). Here at most one job per event loop is
    queued at a time; requests that come while it waits for the writer are
    added to it, and it runs them all with one call of ``run_many`` (one set
    of statements), whose result holds one answer per request, in order.
    Requests that come once it has started form the next job.

    A request's answer, like a plain write's, is delivered only after its
    transaction commits; if the job fails, every request in it gets the error.
    """

    def __init__(
        self,
        db: SqliteDatabase,
        run_many: Callable[[list[ItemT], sqlite3.Connection], list[ResultT]],
    ) -> None:
        self._db = db
        self._run_many = run_many
        # Guards the hand-over of a batch between the event loop (which adds
        # to it) and the writer thread (which takes it when the job starts).
        self._lock = threading.Lock()
        self._open: dict[asyncio.AbstractEventLoop, _Batch[ItemT, ResultT]] = {}

    async def add(self, item: ItemT) -> ResultT:
        """Run ``item`` with whatever else is waiting; returns its answer once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ResultT] = loop.create_future()
        with self._lock:
            batch = self._open.get(loop)
            opened = batch is None
            if batch is None:
                batch = self._open[loop] = _Batch(loop, [item], [future])
            else:
                batch.items.append(item)
                batch.futures.append(future)
        if opened:
            # This request opened the batch: queue its job. Nothing can join
            # in between (this loop's thread is here, other loops have their
            # own batch), so a refused job takes no one else down with it.
            try:
                job = self._db.submit(partial(self._run, batch))
            except BaseException:
                self._close(batch)
                raise
            job.add_done_callback(partial(self._finished, batch))
        return await future

    def _close(self, batch: _Batch[ItemT, ResultT]) -> None:
        with self._lock:
            if self._open.get(batch.loop) is batch:
                del self._open[batch.loop]

    def _run(self, batch: _Batch[ItemT, ResultT], conn: sqlite3.Connection) -> list[ResultT]:
        self._close(batch)  # from here on, the batch's items are fixed
        results = self._run_many(batch.items, conn)
        if len(results) != len(batch.items):
            raise RuntimeError(f"{len(results)} answers for {len(batch.items)} requests")
        return results

    def _finished(self, batch: _Batch[ItemT, ResultT], job: asyncio.Future[list[ResultT]]) -> None:
        self._close(batch)  # a job refused before it ran never closed its batch
        error = asyncio.CancelledError() if job.cancelled() else job.exception()
        results = None if error is not None else job.result()
        for index, future in enumerate(batch.futures):
            if future.done():  # the caller was cancelled
                continue
            if results is None:
                future.set_exception(error or RuntimeError("no result"))
            else:
                future.set_result(results[index])


def _deliver(outcomes: list[_Outcome]) -> None:
    """Hand outcomes to their event loops: one thread-safe call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for loop, future, ok, value in outcomes:
        by_loop.setdefault(loop, []).append((future, ok, value))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, items)
        except RuntimeError:
            # The loop is closed: nobody can be awaiting these futures.
            _log.warning("sqlite outcome for a closed event loop dropped", count=len(items))


def _resolve(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in items:
        if future.done():  # the caller was cancelled
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
