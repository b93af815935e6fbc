"""The two small interfaces every backend implements: ``Storage`` and ``EventLog``.

``EventLog`` is the durable, ordered, deduplicating log that ingest appends to
and processing reads from. ``Storage`` holds everything else: workspaces and
keys, rejections, the identity graph, profiles and their timelines, and the
scheduled internal events the relay delivers to the log.

The same contract suite (``tests/contract``) runs unchanged over every
implementation. Implementations live one per module: ``sqlite.py``,
``postgres.py``.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from rapport.core.backfill import BackfillJob
from rapport.core.computed_traits.definitions import ComputedTraitDefinition, ComputedTraitDraft
from rapport.core.journeys.effects import MetricIncrement
from rapport.core.journeys.instances import JourneyInstance
from rapport.core.journeys.lifecycle import JourneyVersion
from rapport.core.model import (
    Event,
    Identifier,
    LogEntry,
    MergeRecord,
    Profile,
    ProfileEvent,
    Rejection,
    ScheduledEvent,
)
from rapport.core.policy.document import PolicyDocument, StoredPolicy
from rapport.core.segments import SegmentAlreadyExists, SegmentDefinition, SegmentDraft
from rapport.core.templates.definitions import TemplateDefinition, TemplateDraft
from rapport.storage.code_pools import CodePoolStore
from rapport.storage.inbox import InboxStore
from rapport.storage.journey_runs import (
    InstancePage,
    JourneyMetrics,
    OutboxMessage,
)
from rapport.storage.membership_index import (
    MemberPage,
    MembershipBatch,
    SegmentChange,
    SegmentChangePage,
    SegmentMember,
)
from rapport.storage.outbox import DEFAULT_LEASE, DeliveryAttempt, OutboxPage

__all__ = [
    "ApiKey",
    "EventLog",
    "EventPage",
    "InstancePage",
    "JourneyMetrics",
    "MemberPage",
    "MembershipBatch",
    "OutboxMessage",
    "ProcessingBatch",
    "ScheduledEvent",
    "SegmentAlreadyExists",
    "SegmentChange",
    "SegmentChangePage",
    "SegmentDefinition",
    "SegmentDraft",
    "SegmentMember",
    "Storage",
    "Workspace",
]

KeyKind = str  # "write" | "secret"


class Workspace(msgspec.Struct, frozen=True):
    id: str
    name: str
    created_at: datetime


class ApiKey(msgspec.Struct, frozen=True):
    """A stored key. Only the SHA-256 hash of the secret is kept."""

    id: str
    workspace_id: str
    kind: KeyKind
    key_hash: str
    created_at: datetime
    name: str | None = None
    revoked_at: datetime | None = None


class ProcessingBatch(msgspec.Struct, kw_only=True):
    """Everything one processing step changes, committed in ONE transaction.

    The storage applies, in this order: ``events`` inserted; ``identifiers``
    upserted (an identifier moving to another profile is just an upsert);
    ``merges`` recorded, each moving the loser's timeline AND every identifier
    still owned by the loser to the winner, and deleting the loser's profile
    row while keeping a redirect so lookups by the loser's id still resolve;
    ``profiles`` upserted; ``unscheduled`` rows deleted, then ``scheduled``
    rows upserted; journey instances upserted, metric increments added, outbox
    messages inserted; finally the consumer's offset set to ``offset``.
    Replaying a batch is harmless: every write is an upsert keyed by natural
    keys (a scheduled row delivered since comes back, and delivering it again
    appends nothing: its event's message id is already in the log).
    """

    consumer: str
    offset: int
    profiles: list[Profile] = []
    identifiers: list[tuple[str, Identifier, str]] = []
    """``(workspace_id, identifier, profile_id)``."""
    merges: list[MergeRecord] = []
    events: list[ProfileEvent] = []
    scheduled: list[ScheduledEvent] = []
    """Rows to store, each replacing the row of its ``(workspace_id, key)`` (the
    last one wins within the batch). Rows due at the same instant are
    delivered in the order batches and this list wrote them."""
    unscheduled: list[tuple[str, str]] = []
    """``(workspace_id, key)`` of rows to delete (a cancelled timer); a missing row is fine."""
    journey_instances: list[tuple[str, JourneyInstance]] = []
    """``(workspace_id, instance)`` upserted by ``(workspace_id, instance.id)`` (the last
    one wins within the batch). See ``rapport.storage.journey_runs``."""
    journey_metrics: list[tuple[str, MetricIncrement]] = []
    """``(workspace_id, increment)`` added to the journey's counters, once per
    ``(consumer, offset)``: a replayed batch adds nothing."""
    outbox: list[OutboxMessage] = []
    """Messages inserted as ``pending`` unless their ``(workspace_id, idempotency_key)``
    is stored (or came earlier in the batch): a replayed step sends nothing twice."""


class EventPage(msgspec.Struct):
    events: list[ProfileEvent]
    next_before: int | None
    """Pass as ``before`` to get the next (older) page; ``None`` when done."""


class EventLog(abc.ABC):
    """Durable, ordered log of accepted events, deduplicated by message id."""

    @abc.abstractmethod
    async def append(self, events: Sequence[Event]) -> list[bool]:
        """Append events; return, per event, True if new, False if a duplicate.

        A duplicate is an event whose ``(workspace_id, message_id)`` was
        appended before (within the dedup window, at least 7 days), or earlier
        in the same call. When this returns, the new events are durable.
        """

    @abc.abstractmethod
    async def read(self, after: int, limit: int) -> list[LogEntry]:
        """Entries with offset > ``after``, in offset order, at most ``limit``."""

    @abc.abstractmethod
    async def end_offset(self) -> int:
        """Offset of the newest entry (0 when empty)."""

    @abc.abstractmethod
    async def prune_dedup(self, older_than: datetime) -> int:
        """Forget message ids first seen before ``older_than``; return how many."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare connections/schema."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; pending appends are finished first."""


class Storage(abc.ABC):
    """Everything except the event log."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect and run migrations."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    # -- workspaces and keys -------------------------------------------------
    @abc.abstractmethod
    async def ensure_workspace(self, name: str, new_id: str, now: datetime) -> Workspace:
        """The workspace called ``name``, created with ``new_id`` if missing."""

    @abc.abstractmethod
    async def get_workspace(self, workspace_id: str) -> Workspace | None: ...

    @abc.abstractmethod
    async def find_workspace(self, name: str) -> Workspace | None:
        """The workspace called ``name``, if it exists (nothing is created)."""

    @abc.abstractmethod
    async def create_api_key(self, key: ApiKey) -> None: ...

    @abc.abstractmethod
    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        """The non-revoked key with this hash, if any."""

    # -- rejections ----------------------------------------------------------
    @abc.abstractmethod
    async def record_rejections(self, rejections: Sequence[Rejection]) -> None: ...

    @abc.abstractmethod
    async def list_rejections(
        self, workspace_id: str, limit: int, before: int | None = None
    ) -> list[Rejection]:
        """Newest first; ``before`` is an id from a previous page."""

    # -- identity graph and profiles -----------------------------------------
    @abc.abstractmethod
    async def find_profile_ids(
        self, workspace_id: str, identifiers: Sequence[Identifier]
    ) -> dict[Identifier, str]:
        """Owner profile id of each identifier that is known."""

    @abc.abstractmethod
    async def load_profiles(self, workspace_id: str, ids: Sequence[str]) -> dict[str, Profile]:
        """Profiles by id (ids of merged-away profiles are not followed here)."""

    @abc.abstractmethod
    async def existing_profile_ids(self, workspace_id: str, ids: Sequence[str]) -> set[str]:
        """The ids among ``ids`` of live profiles (merged-away ones are not followed).

        ``load_profiles`` without reading the documents: the processor asks it
        for profiles an event names but does not need to read (``processor``).
        """

    @abc.abstractmethod
    async def resolve_profile_id(self, workspace_id: str, profile_id: str) -> str | None:
        """The live profile id for ``profile_id``, following merges; None if unknown."""

    @abc.abstractmethod
    async def list_profile_events(
        self, workspace_id: str, profile_id: str, limit: int, before: int | None = None
    ) -> EventPage:
        """A profile's timeline newest first (by log offset), paged."""

    async def find_profile_event(
        self, workspace_id: str, profile_id: str, message_id: str
    ) -> ProfileEvent | None:
        """The newest event of her timeline with ``message_id``, or None.

        SQLite and PostgreSQL answer with one query on her timeline's index;
        this default (the memory backend) pages through the timeline.
        """
        before: int | None = None
        while True:
            page = await self.list_profile_events(workspace_id, profile_id, 500, before)
            for event in page.events:
                if event.message_id == message_id:
                    return event
            if page.next_before is None:
                return None
            before = page.next_before

    async def find_profile_events(
        self, workspace_id: str, wanted: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ProfileEvent]:
        """``find_profile_event`` for each ``(profile id, message id)``: the ones found.

        The sender composes the messages of one claim together. SQLite answers
        in one trip to its reader thread, PostgreSQL in one query; this default
        (the memory backend) asks for each pair in turn.
        """
        found: dict[tuple[str, str], ProfileEvent] = {}
        for profile_id, message_id in dict.fromkeys(wanted):
            event = await self.find_profile_event(workspace_id, profile_id, message_id)
            if event is not None:
                found[(profile_id, message_id)] = event
        return found

    @abc.abstractmethod
    async def list_merges(self, workspace_id: str, profile_id: str) -> list[MergeRecord]:
        """Merges whose winner is ``profile_id``, oldest first."""

    # -- processing ----------------------------------------------------------
    @abc.abstractmethod
    async def commit_processing(self, batch: ProcessingBatch) -> None:
        """Apply a processing batch atomically (see ``ProcessingBatch``)."""

    @abc.abstractmethod
    async def consumer_offset(self, consumer: str) -> int:
        """Last committed offset of a consumer (0 if it never committed)."""

    # -- scheduled events (rapport.runtime.relay) -----------------------------
    # Written through ``ProcessingBatch.scheduled`` / ``unscheduled``, in the
    # transaction of the processing step that decided them.
    @abc.abstractmethod
    async def due_scheduled(self, now: datetime, limit: int) -> list[ScheduledEvent]:
        """Rows of any workspace with ``due_at <= now``, at most ``limit``.

        Earliest ``due_at`` first; rows due at the same instant in the order
        they were written (see ``ProcessingBatch.scheduled``).
        """

    @abc.abstractmethod
    async def next_scheduled_at(self) -> datetime | None:
        """The earliest ``due_at`` of any row, in any workspace; None when there is none."""

    @abc.abstractmethod
    async def get_scheduled(self, workspace_id: str, key: str) -> ScheduledEvent | None: ...

    @abc.abstractmethod
    async def delete_scheduled(self, rows: Sequence[ScheduledEvent]) -> int:
        """Delete each row still stored as given; return how many were deleted.

        A row is the same when its key holds the same ``due_at`` and event
        message id: a row rescheduled since it was read stays.
        """

    def relay_turn(self) -> contextlib.AbstractAsyncContextManager[bool]:
        """An exclusive turn at delivering due rows; yields False if another holds it.

        Delivery order is what keeps one profile's internal events in order,
        so one relay delivers at a time. Within a process the relay takes
        turns itself; backends that several processes share (PostgreSQL)
        override this to exclude the other processes too.
        """
        return contextlib.nullcontext(True)

    # -- segment definitions -------------------------------------------------
    # See rapport.core.segments: every write stores the next version; deleting
    # stores a ``deleted`` tombstone, so versions of an id never repeat.
    @abc.abstractmethod
    async def put_segment(
        self, draft: SegmentDraft, now: datetime, *, create_only: bool = False
    ) -> SegmentDefinition:
        """Store ``draft`` as the next version of its id and return what was stored.

        With ``create_only``, raise ``SegmentAlreadyExists`` (storing nothing)
        if an active definition with this id exists.
        """

    @abc.abstractmethod
    async def get_segment(self, workspace_id: str, segment_id: str) -> SegmentDefinition | None:
        """The active definition with this id, if any (deleted ones are not returned)."""

    @abc.abstractmethod
    async def list_segments(
        self, workspace_id: str, *, include_deleted: bool = False
    ) -> list[SegmentDefinition]:
        """The workspace's definitions (latest version of each), ordered by id."""

    @abc.abstractmethod
    async def delete_segment(
        self, workspace_id: str, segment_id: str, now: datetime
    ) -> SegmentDefinition | None:
        """Store the tombstone of an active definition and return it; None if none is active."""

    @abc.abstractmethod
    async def segments_revision(self) -> int:
        """A number that grows with every segment write in any workspace (0 before any).

        Cheap to call: processors poll it to know when to reload definitions.
        """

    # -- segment backfills (rapport.core.backfill) ---------------------------
    @abc.abstractmethod
    async def scan_profiles(
        self, workspace_id: str, after_id: str | None, limit: int
    ) -> list[Profile]:
        """Up to ``limit`` profiles with ids greater than ``after_id``, in id order."""

    @abc.abstractmethod
    async def count_profiles(self, workspace_id: str) -> int:
        """How many (live, not merged-away) profiles the workspace holds."""

    @abc.abstractmethod
    async def put_backfill(self, job: BackfillJob) -> bool:
        """Store ``job`` as its definition's job unless a newer version's job is stored.

        Segment and computed-trait jobs (``job.kind``) are kept apart. Returns
        whether it was stored: progress of a superseded version never
        overwrites the job of the version that replaced it.
        """

    @abc.abstractmethod
    async def get_backfill(self, workspace_id: str, segment_id: str) -> BackfillJob | None:
        """The segment's job (of its newest version), if any."""

    @abc.abstractmethod
    async def get_computed_trait_backfill(
        self, workspace_id: str, trait_id: str
    ) -> BackfillJob | None:
        """The computed trait's job (of its newest active version), if any.

        ``put_computed_trait`` starts it in the same transaction.
        """

    @abc.abstractmethod
    async def running_backfills(self) -> list[BackfillJob]:
        """Every job still running (segments' and computed traits'), oldest start first."""

    @abc.abstractmethod
    async def timeline_events(
        self,
        workspace_id: str,
        profile_ids: Sequence[str],
        names: Sequence[str] | None,
        since: datetime | None,
    ) -> list[ProfileEvent]:
        """The events named ``names`` in these profiles' timelines, oldest offset first.

        Every event when ``names`` is ``None``. Only those with
        ``timestamp >= since`` when ``since`` is given. A backfill rebuilds a
        new aggregate's (or computed trait's) state from them.
        """

    @abc.abstractmethod
    async def events_by_name(
        self,
        workspace_id: str,
        name: str,
        since: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[ProfileEvent]:
        """Timeline events named ``name`` (``timestamp >= since`` if given), at most ``limit``.

        Ordered by ``(timestamp, offset)``; ``after`` is that pair of the last
        event of the previous page. A business event's fan-out reads them.
        """

    # -- segment membership index (rapport.storage.membership_index) ---------
    @abc.abstractmethod
    async def commit_memberships(self, batch: MembershipBatch) -> None:
        """Apply a batch of membership changes atomically (see ``MembershipBatch``)."""

    @abc.abstractmethod
    async def segment_sizes(self, workspace_id: str, segment_ids: Sequence[str]) -> dict[str, int]:
        """Current member count of each segment (0 for one without members). O(1) per segment."""

    @abc.abstractmethod
    async def list_segment_members(
        self, workspace_id: str, segment_id: str, limit: int, after: str | None = None
    ) -> MemberPage:
        """Current members by profile id, paged: ``after`` is the last id of the previous page."""

    @abc.abstractmethod
    async def list_segment_history(
        self, workspace_id: str, profile_ids: Sequence[str], limit: int, before: int | None = None
    ) -> SegmentChangePage:
        """Membership changes of these profiles, newest first (by log offset), paged."""

    # -- computed-trait definitions (rapport.core.computed_traits) -----------
    # Versioned like segment definitions: every write stores the next
    # version, deleting stores a ``deleted`` tombstone.
    @abc.abstractmethod
    async def put_computed_trait(
        self, draft: ComputedTraitDraft, now: datetime, *, create_only: bool = False
    ) -> ComputedTraitDefinition:
        """Store ``draft`` as the next version of its id and return what was stored.

        With ``create_only``, raise ``ComputedTraitAlreadyExists`` (storing
        nothing) if an active definition with this id exists. Starts the
        version's backfill job (kind ``computed_trait``) in the same
        transaction.
        """

    @abc.abstractmethod
    async def get_computed_trait(
        self, workspace_id: str, trait_id: str
    ) -> ComputedTraitDefinition | None:
        """The active definition with this id, if any (deleted ones are not returned)."""

    @abc.abstractmethod
    async def list_computed_traits(
        self, workspace_id: str, *, include_deleted: bool = False
    ) -> list[ComputedTraitDefinition]:
        """The workspace's definitions (latest version of each), ordered by id."""

    @abc.abstractmethod
    async def delete_computed_trait(
        self, workspace_id: str, trait_id: str, now: datetime
    ) -> ComputedTraitDefinition | None:
        """Store the tombstone of an active definition and return it; None if none is active."""

    @abc.abstractmethod
    async def computed_traits_revision(self) -> int:
        """A number that grows with every computed-trait write in any workspace (0 before any).

        Cheap to call: processors poll it to know when to reload definitions.
        """

    # -- template definitions (rapport.core.templates) -----------------------
    # Every version is kept (a message can be traced to the text it was
    # rendered from); deleting stores a ``deleted`` tombstone.
    @abc.abstractmethod
    async def put_template(
        self, draft: TemplateDraft, now: datetime, *, create_only: bool = False
    ) -> TemplateDefinition:
        """Store ``draft`` as the next version of its id and return what was stored.

        With ``create_only``, raise ``TemplateAlreadyExists`` (storing
        nothing) if an active template with this id exists.
        """

    @abc.abstractmethod
    async def get_template(
        self, workspace_id: str, template_id: str, version: int | None = None
    ) -> TemplateDefinition | None:
        """The latest version if the template is active; or, given ``version``,
        that stored version (None for a tombstone or a version never stored)."""

    @abc.abstractmethod
    async def list_templates(self, workspace_id: str) -> list[TemplateDefinition]:
        """The workspace's active templates (latest version of each), ordered by id."""

    @abc.abstractmethod
    async def delete_template(
        self, workspace_id: str, template_id: str, now: datetime
    ) -> TemplateDefinition | None:
        """Store the tombstone of an active template and return it; None if none is active."""

    # -- workspace policies (rapport.core.policy) ------------------------------
    # Every version is kept; the latest is in force.
    @abc.abstractmethod
    async def put_policy(
        self,
        workspace_id: str,
        document: PolicyDocument,
        now: datetime,
        *,
        expected_version: int | None = None,
    ) -> StoredPolicy:
        """Store ``document`` as the workspace's next policy version and return it.

        With ``expected_version`` (0: none stored yet), raise
        ``PolicyVersionConflict`` (storing nothing) unless it is the latest.
        """

    @abc.abstractmethod
    async def get_policy(
        self, workspace_id: str, version: int | None = None
    ) -> StoredPolicy | None:
        """The latest policy (or the given version); None if never written."""

    @abc.abstractmethod
    async def policies_revision(self) -> int:
        """A number that grows with every policy write in any workspace (0 before any).

        Cheap to call: processors poll it to know when to reload policies.
        """

    # -- journey definitions (rapport.core.journeys.lifecycle) ---------------
    # Every version is kept: instances refer to the version they entered on.
    # Writes apply ``save_draft`` / ``transition`` to the journey's versions
    # atomically (no other write to the journey in between).
    @abc.abstractmethod
    async def save_journey(
        self,
        workspace_id: str,
        journey_id: str,
        definition: Any,
        now: datetime,
        *,
        create_only: bool = False,
    ) -> JourneyVersion:
        """Store ``definition`` (validated by the caller) as the journey's draft; return it.

        Replaces the draft if the newest version is one, else adds the next
        version as a draft. With ``create_only``, raise
        ``JourneyAlreadyExists`` (storing nothing) if the journey has any version.
        """

    @abc.abstractmethod
    async def transition_journey(
        self, workspace_id: str, journey_id: str, action: str, now: datetime
    ) -> list[JourneyVersion]:
        """Apply ``action`` (publish, pause, resume, archive); return every version after it.

        Raises ``JourneyNotFound`` for a journey without versions and
        ``IllegalTransition`` when its state does not allow ``action``;
        either way nothing is stored.
        """

    @abc.abstractmethod
    async def journey_versions(self, workspace_id: str, journey_id: str) -> list[JourneyVersion]:
        """Every version of the journey, oldest first; empty for an unknown journey."""

    @abc.abstractmethod
    async def get_journey_version(
        self, workspace_id: str, journey_id: str, version: int
    ) -> JourneyVersion | None:
        """One version (whatever its status): what an instance that entered on it runs."""

    @abc.abstractmethod
    async def entry_journey_version(
        self, workspace_id: str, journey_id: str
    ) -> JourneyVersion | None:
        """The newest published version, which new entries take; None if there is none."""

    @abc.abstractmethod
    async def list_journey_versions(
        self, workspace_id: str, *, statuses: Collection[str] | None = None
    ) -> list[JourneyVersion]:
        """The workspace's versions with one of ``statuses`` (all if None), by journey id, version.

        The runtime loads ``lifecycle.RUNNING`` (published and paused) versions.
        """

    @abc.abstractmethod
    async def journeys_revision(self) -> int:
        """A number that grows with every journey write in any workspace (0 before any).

        Cheap to call: processors poll it to know when to reload definitions.
        """

    # -- journey runs (rapport.storage.journey_runs) --------------------------
    # Written through ``ProcessingBatch.journey_instances`` / ``journey_metrics``
    # / ``outbox``, in the transaction of the processing step that decided them.
    @abc.abstractmethod
    async def load_journey_instances(
        self, workspace_id: str, profile_ids: Sequence[str]
    ) -> list[JourneyInstance]:
        """What the engine needs of these profiles: every live instance, and the latest
        ended one per (profile, journey, correlation key), which re-entry reads.

        Ordered by profile id, journey id, instance id.
        """

    @abc.abstractmethod
    async def get_journey_instance(
        self, workspace_id: str, instance_id: str
    ) -> JourneyInstance | None:
        """One instance, with its trace, whatever its status."""

    @abc.abstractmethod
    async def list_journey_instances(
        self,
        workspace_id: str,
        journey_id: str,
        limit: int,
        after: str | None = None,
        *,
        status: str | None = None,
    ) -> InstancePage:
        """A journey's instances (with ``status`` only, if given) by id, paged after ``after``."""

    @abc.abstractmethod
    async def journey_instance_counts(self, workspace_id: str, journey_id: str) -> dict[str, int]:
        """Status -> how many of the journey's instances have it now (absent: none)."""

    @abc.abstractmethod
    async def journey_metrics(self, workspace_id: str, journey_id: str) -> JourneyMetrics:
        """The journey's counters, by version, step and metric."""

    @abc.abstractmethod
    async def pending_outbox(self, limit: int, after: int = 0) -> list[OutboxMessage]:
        """Pending messages of any workspace with ``seq > after``, in ``seq`` order.

        ``seq`` is given at insertion, and concurrent commits may become
        visible out of ``seq`` order: a sender pages with ``after`` within a
        round and starts each round again from 0 (a message stays pending
        until ``mark_outbox``).
        """

    @abc.abstractmethod
    async def get_outbox(self, workspace_id: str, idempotency_key: str) -> OutboxMessage | None:
        """One message, whatever its status."""

    @abc.abstractmethod
    async def mark_outbox(
        self,
        workspace_id: str,
        idempotency_key: str,
        status: str,
        now: datetime,
        error: str | None = None,
    ) -> bool:
        """Set a pending message ``sent`` or ``failed``; False if none is pending under this key."""

    # -- delivery (rapport.storage.outbox, rapport.runtime.sender) -------------
    @abc.abstractmethod
    async def claim_due(
        self, now: datetime, limit: int, lease: timedelta = DEFAULT_LEASE
    ) -> list[OutboxMessage]:
        """Pending messages of any workspace with ``next_attempt_at <= now``, at most
        ``limit``, in ``seq`` order; each one's ``next_attempt_at`` moves to ``now + lease``
        so no other claim returns it meanwhile (it is returned with that lease end)."""

    @abc.abstractmethod
    async def next_outbox_at(self) -> datetime | None:
        """The earliest ``next_attempt_at`` of any pending message; None when none is pending."""

    @abc.abstractmethod
    async def record_attempt(self, attempt: DeliveryAttempt) -> bool:
        """Store what an attempt came to (and its event, for the relay) in one transaction;
        False, storing nothing, if the message is not pending."""

    @abc.abstractmethod
    async def list_dead(
        self, workspace_id: str, limit: int, after: int | None = None
    ) -> OutboxPage:
        """The dead-letter list, oldest ``seq`` first; ``after``: ``next_cursor`` of a page."""

    @abc.abstractmethod
    async def replay_dead(
        self, workspace_id: str, idempotency_key: str, now: datetime
    ) -> OutboxMessage | None:
        """A dead message pending again (attempts 0, due ``now``); None if it is not dead."""

    @abc.abstractmethod
    async def list_profile_messages(
        self, workspace_id: str, profile_id: str, limit: int, before: int | None = None
    ) -> OutboxPage:
        """Every message to one profile, newest ``seq`` first; ``before``: ``next_cursor``."""

    # -- code pools and in-app inboxes (rapport.storage.code_pools / inbox) -----
    @property
    @abc.abstractmethod
    def code_pools(self) -> CodePoolStore:
        """Promo code pools: one code per customer per pool, never reused."""

    @property
    @abc.abstractmethod
    def inbox(self) -> InboxStore:
        """What the ``in_app`` channel delivered, per profile."""
