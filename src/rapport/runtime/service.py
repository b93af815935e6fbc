"""The running Rapport: backends, clock, processor and background tasks, wired once.

``Rapport.open(settings)`` picks the backends from the settings (SQLite files
by default, PostgreSQL for ``postgresql://`` URLs), ``start()`` launches the
processor (with the relay of its scheduled events) and housekeeping tasks,
``close()`` stops them and drains writes. The HTTP layer and the CLI only
talk to this object.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import structlog

from rapport.channels.in_app import InAppChannel
from rapport.channels.setup import build_channels, link_signer
from rapport.core.clock import Clock
from rapport.core.identity import IdentityRules
from rapport.core.ids import IdGenerator
from rapport.runtime.clock import RandomIds, SystemClock
from rapport.runtime.compose import Composer as MessageComposer
from rapport.runtime.journey_triggers import JourneyTriggers
from rapport.runtime.keys import generate_key, hash_key
from rapport.runtime.memberships import MembershipIndexer
from rapport.runtime.metrics import Metrics
from rapport.runtime.processor import Processor
from rapport.runtime.relay import Relay
from rapport.runtime.sender import Composer, Sender
from rapport.settings import Settings
from rapport.storage.base import ApiKey, EventLog, Storage

log = structlog.get_logger("rapport")

DEFAULT_WORKSPACE = "default"

KEY_CACHE_SECONDS = 5.0
"""How long a found key is trusted without asking storage again.

Every ingest request (and admin API call) authenticates; without the cache
each one costs a database read. The price: a key revoked in storage keeps
working for up to this long in a running server, for ingest and the admin API
alike. Unknown keys are never cached, so a key that
is created works at once.
"""


class KeyCache:
    """Keys found by hash, each trusted for ``ttl_seconds`` after it was looked up."""

    MAX_ENTRIES = 10_000
    """Bound on memory; only real keys get in, so this is rarely reached."""

    def __init__(
        self, ttl_seconds: float, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self._monotonic = monotonic
        self._found: dict[str, tuple[float, ApiKey]] = {}

    def get(self, key_hash: str) -> ApiKey | None:
        entry = self._found.get(key_hash)
        if entry is None:
            return None
        expires, key = entry
        if self._monotonic() >= expires:
            del self._found[key_hash]
            return None
        return key

    def put(self, key_hash: str, key: ApiKey) -> None:
        if self.ttl_seconds <= 0:
            return
        if len(self._found) >= self.MAX_ENTRIES:
            self._found.clear()
        self._found[key_hash] = (self._monotonic() + self.ttl_seconds, key)

    def clear(self) -> None:
        self._found.clear()


GC_YOUNG_THRESHOLD = 50_000
"""Allocations between collections of the youngest generation (Python's default: 700)."""

_gc_tuned = False


def tune_garbage_collector() -> None:
    """Keep the cyclic garbage collector from dominating processing (once per process).

    A processing step allocates thousands of short-lived containers (decoded
    events, profiles and journey instances, their dicts and lists, traces) that
    die by reference counting, not by collection. At Python's default
    thresholds they trigger a young collection every few events and a full one
    every few hundred; each full one walks the whole heap of the application
    (modules, classes, compiled definitions). In a burst of journey timers that
    was ~17 of ~120 us of CPU per firing, ~12 of them in full collections.
    Freezing what exists once the runtime is open (after a collection, so no
    garbage is frozen) takes that heap out of every collection, and a larger
    young generation collects less often: ~2 us per firing left. Nothing is
    leaked: cycles made later are still collected, in bigger steps.

    Only the first call in a process does anything: a process that opens
    runtime after runtime (tests) must not freeze each one's leftovers for good.
    ``rapport serve`` freezes again once started (``freeze_heap``).
    """
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    freeze_heap()
    young, older, oldest = gc.get_threshold()
    gc.set_threshold(max(GC_YOUNG_THRESHOLD, young), older, oldest)


def freeze_heap() -> None:
    """Collect, then keep what is left out of every later collection (``gc.freeze``)."""
    gc.collect()
    gc.freeze()


async def open_backends(settings: Settings) -> tuple[Storage, EventLog]:
    """The storage and event log the settings ask for, opened and migrated."""
    if settings.is_postgres:
        from rapport.storage.postgres import open_postgres

        return await open_postgres(settings.database_url, schema=settings.database_schema)
    if settings.database_url.startswith("memory://"):
        from rapport.storage.memory import open_memory

        return open_memory()
    from rapport.storage.sqlite import open_sqlite

    data_dir = settings.sqlite_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    return await open_sqlite(Path(data_dir), synchronous=settings.sqlite_synchronous.upper())


def identity_rules(settings: Settings) -> IdentityRules:
    return IdentityRules.from_config(
        identifier_traits=settings.identifier_trait_map(),
        caps=settings.identifier_cap_map(),
    )


class Rapport:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        event_log: EventLog,
        *,
        clock: Clock | None = None,
        ids: IdGenerator | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.event_log = event_log
        self.clock: Clock = clock or SystemClock()
        self.ids: IdGenerator = ids or RandomIds()
        self.metrics = Metrics(sender=lambda: self.sender)
        self.key_cache = KeyCache(KEY_CACHE_SECONDS)
        self.rules = identity_rules(settings)
        self.processor = Processor(
            storage,
            event_log,
            self.clock,
            self.ids,
            self.rules,
            batch_size=settings.processing_batch_size,
            cache_profiles=settings.profile_cache_size,
        )
        # Scheduled internal events (outbox, segment timers) reach the log
        # through the relay, which runs wherever the processor runs.
        self.relay = Relay(storage, event_log, self.clock, on_appended=self._internal_appended)
        self.processor.on_scheduled = self.relay.notify
        # The membership index follows the log; the relay wakes it when it
        # appends (membership events come that way), and so does processing.
        self.memberships = MembershipIndexer(storage, event_log, upstream=self.processor)
        # Schedules, business events, publishes and resumes fan out to profiles
        # through the log (``journey_triggers``), once the log before them is processed.
        self.journey_triggers = JourneyTriggers(
            storage, event_log, self.clock, self.rules, ready=self._caught_up
        )
        self.journey_triggers.on_appended = self._internal_appended
        self.journey_triggers.on_scheduled = self.relay.notify
        # Delivery (``rapport.runtime.sender``): with ``sender = on`` it starts once
        # ``composer`` is set; whoever builds the runtime registers the channels.
        # The channels the settings configure, and in-app (the inbox is storage).
        # Tests and embedders may replace them, or the composer, before start().
        self.link_signer = link_signer(settings)
        self.channels = build_channels(settings, self.link_signer, self.clock)
        self.channels.register(InAppChannel(storage.inbox, self.clock))
        self.composer: Composer | None = MessageComposer(
            storage, self.link_signer, settings.public_url, self.clock
        )
        self.sender: Sender | None = None
        self.lag = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(
        cls, settings: Settings, *, clock: Clock | None = None, ids: IdGenerator | None = None
    ) -> Rapport:
        storage, event_log = await open_backends(settings)
        runtime = cls(settings, storage, event_log, clock=clock, ids=ids)
        # Start-up imports and definitions are loaded by now: ``rapport
        # serve``, ``rapport worker`` and the benchmarks all come this way.
        tune_garbage_collector()
        return runtime

    # -- lifecycle -----------------------------------------------------------
    async def start(self, *, process: bool | None = None) -> None:
        """Start housekeeping, and processing unless ``process`` is False.

        ``process`` defaults to the ``processing`` setting (``inline``).
        """
        if process is None:
            process = self.settings.processing == "inline"
        self._stop.clear()
        await self.processor.load_offset()
        self._tasks = [
            asyncio.create_task(self._watch_lag(), name="rapport-lag"),
            asyncio.create_task(self._prune_dedup(), name="rapport-dedup-pruner"),
        ]
        if self.settings.sender == "on" and self.composer is not None:
            # Its Message Sent / Failed events reach the log through the relay.
            self.sender = Sender(
                self.storage,
                self.channels,
                self.composer,
                self.clock,
                config=self.settings.sender_config(),
                on_recorded=self.relay.notify,
            )
            self.processor.on_outbox = self.sender.notify
            self._tasks.append(
                asyncio.create_task(self.sender.run(self._stop), name="rapport-sender")
            )
        if process:
            self._tasks.append(
                asyncio.create_task(self.processor.run(self._stop), name="rapport-processor")
            )
            self._tasks.append(
                asyncio.create_task(self.relay.run(self._stop), name="rapport-relay")
            )
            await self.memberships.load_offset()
            self._tasks.append(
                asyncio.create_task(self.memberships.run(self._stop), name="rapport-memberships")
            )
            await self.journey_triggers.load_offset()
            self._tasks.append(
                asyncio.create_task(
                    self.journey_triggers.run(self._stop), name="rapport-journey-triggers"
                )
            )

    def _internal_appended(self) -> None:
        """The relay appended internal events: wake the consumers of the log."""
        self.processor.notify()
        self.memberships.notify()
        self.journey_triggers.notify()

    async def _caught_up(self, offset: int) -> bool:
        """Whether profiles and the membership index have processed the log up to ``offset``."""
        processed = await self.processor.wait_processed(offset, 1.0)
        return processed and await self.memberships.wait_indexed(offset, 1.0)

    async def settle(self, timeout: float = 10.0) -> bool:
        """Wait until every event in the log is processed, no scheduled event or
        outbox message is due (with a running sender) and no segment backfill is running.

        Internal events reach the log through the relay after the commit that
        scheduled them, so "processed up to the end of the log" alone can be
        true for a moment while more is on its way. Returns False on timeout.
        Timers due later do not count (a virtual clock has to be moved).
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    end = await self.event_log.end_offset()
                    if not await self.processor.wait_processed(end, timeout):
                        return False
                    triggers = self.journey_triggers
                    if triggers.running:
                        triggers.notify()  # ingest does not wake it: it would poll
                    if triggers.running and not await triggers.wait_handled(end, timeout):
                        return False
                    if self.sender is not None and not await self.sender.settled():
                        # Due messages are sent first: their events come back through the relay.
                        self.sender.notify()
                        await asyncio.sleep(0.005)
                        continue
                    if await self.storage.due_scheduled(self.clock.now(), 1):
                        self.relay.notify()
                        await asyncio.sleep(0.005)
                        continue
                    if await self.storage.running_backfills():
                        # The processor walks them between steps.
                        self.processor.notify()
                        await asyncio.sleep(0.005)
                        continue
                    if await self.event_log.end_offset() == end:
                        return True
        return False

    async def wait_stopped(self) -> None:
        """Block until ``close()`` is called (for process entry points)."""
        await self._stop.wait()

    async def close(self) -> None:
        self._stop.set()
        # Every task watches ``_stop`` and ends at its next step; awaiting them
        # (instead of cancelling) lets an in-flight commit finish cleanly.
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.channels.close()
        await self.event_log.close()
        await self.storage.close()

    async def _watch_lag(self) -> None:
        seen_processed = seen_failed = 0
        while not self._stop.is_set():
            processed, failed = self.processor.processed_total, self.processor.failed_total
            self.metrics.events_processed.inc(processed - seen_processed)
            self.metrics.processing_failures.inc(failed - seen_failed)
            seen_processed, seen_failed = processed, failed
            end = await self.event_log.end_offset()
            self.lag = max(0, end - self.processor.processed_offset)
            self.metrics.log_end_offset.set(end)
            self.metrics.processing_lag.set(self.lag)
            self.metrics.processed_offset.set(self.processor.processed_offset)
            if not any(t.get_name() == "rapport-processor" for t in self._tasks):
                # Another process processes: follow its committed progress.
                await self.processor.load_offset()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=0.2)

    async def _prune_dedup(self) -> None:
        window = timedelta(days=self.settings.dedup_window_days)
        while not self._stop.is_set():
            removed = await self.event_log.prune_dedup(self.clock.now() - window)
            if removed:
                log.info("dedup.pruned", removed=removed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=3600)

    # -- workspaces and keys -------------------------------------------------
    async def create_key(self, kind: str, workspace: str = DEFAULT_WORKSPACE) -> str:
        """Create a key in ``workspace`` (created if missing); return the key itself."""
        now = self.clock.now()
        ws = await self.storage.ensure_workspace(workspace, self.ids.new_id("ws"), now)
        key = generate_key(kind)
        await self.storage.create_api_key(
            ApiKey(
                id=self.ids.new_id("key"),
                workspace_id=ws.id,
                kind=kind,
                key_hash=hash_key(key),
                created_at=now,
            )
        )
        return key

    async def authenticate(self, key: str) -> ApiKey | None:
        """The live key ``key`` is, or ``None``; see ``KEY_CACHE_SECONDS`` on revocation."""
        if not key:
            return None
        key_hash = hash_key(key)
        found = self.key_cache.get(key_hash)
        if found is None:
            found = await self.storage.find_api_key(key_hash)
            if found is not None:
                self.key_cache.put(key_hash, found)
        return found
