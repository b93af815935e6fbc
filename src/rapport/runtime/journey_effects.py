"""What a processing step does for journeys: run the engine, turn its outcome into writes.

The engine (``core.journeys.engine``) decides; this module gathers what a
step must commit with its profiles, in the same ``ProcessingBatch``:

* instances: per workspace, the live instances of the step's profiles (and
  the latest ended one per journey and key, which re-entry reads) are
  loaded with the working set; those the step changed are upserted. A step
  built while the previous one commits reads that step's changed instances
  from it, not from storage (as ``working_set`` does for profiles);
* per event, after identity, traits, computed traits and segments, the
  engine's ``on_event`` is called: for customer events and for the
  ``Segment Entered`` / ``Exited`` events (how segment triggers arrive);
* send and webhook effects become outbox messages under their idempotency
  keys (a replayed step inserts nothing twice);
* ``ScheduleTimer`` becomes a scheduled row keyed ``journey:<instance id>``
  (a moved wait replaces it, ``CancelTimer`` deletes it) whose event is a
  ``Journey Timer`` track event of source ``rapport:journeys`` with a
  message id from the instance, the timer's sequence and its due instant;
  the relay delivers it when due and ``on_timer`` hands it to the engine;
* a trait update becomes an internal ``identify`` event of source
  ``rapport:journeys`` (outbox, due now) that the processor applies like any
  other traits (``apply_update``), so segments see the change; it is not the
  customer's activity (``last_seen`` and ``event_count`` stay). The sends
  that follow it for the same profile travel in that event and are gated
  once it is applied (``split_sends``), so they see the updated profile;
* a merge moves the merged-away profile's instances to the merged profile
  (a second live instance of the same journey and key is ended, ``exited``).

Instance ids come from a generator seeded by the triggering event's message
id, so the same event decides the same ids, keys and timers again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from rapport.core.conditions.instants import to_micros
from rapport.core.journeys import JourneyInstance
from rapport.core.journeys.effects import (
    TIMER_EVENT,
    CancelTimer,
    Metric,
    MetricIncrement,
    Outcome,
    ScheduleTimer,
    SendEffect,
    TraitUpdateEffect,
    WebhookEffect,
    timer_key,
)
from rapport.core.journeys.engine import on_event, on_resume, on_timer
from rapport.core.journeys.triggers import RESUMED
from rapport.core.model import Event, LogEntry, Profile, ScheduledEvent
from rapport.core.policy.document import PolicyDocument
from rapport.core.profiles import apply_event
from rapport.runtime.journey_catalogs import JourneyCatalog, JourneyCatalogs
from rapport.runtime.journey_dates import date_rows
from rapport.runtime.policy_gate import PolicyCatalogs, gate_sends
from rapport.runtime.working_set import WorkspaceState
from rapport.storage.base import ProcessingBatch, Storage
from rapport.storage.journey_runs import OutboxMessage

JOURNEY_EVENT_SOURCE = "rapport:journeys"
"""Source of the events journeys emit: their timers and their profile updates."""
JOURNEY_TIMER = TIMER_EVENT


class EventIds:
    """Ids derived from one input (an event's message id): the same input, the same ids.

    An id starts with the event's arrival instant (11 hex digits of epoch
    milliseconds), then 16 of a digest (64 bits: events of one import often
    share their arrival instant): instances that entered together sit
    side by side in the instance table and its indexes, and so do their
    timer and outbox keys. Their waits mostly end together too, so a burst of
    firings rewrites a few pages instead of one random page per instance
    (with 20,000 waiting, the commits of a burst took 2.5x less time).
    """

    def __init__(self, seed: str, at: datetime) -> None:
        self._seed = seed
        self._at = at
        self._count = 0

    def new_id(self, prefix: str) -> str:
        self._count += 1
        digest = hashlib.sha256(f"{self._seed}\x00{self._count}".encode()).hexdigest()
        millis = max(0, to_micros(self._at) // 1000)
        return f"{prefix}_{millis:011x}{digest[:16]}"


@dataclass
class Decision:
    """What the engine decided for one event, not yet applied to the step."""

    workspace_id: str
    losers: list[str]
    """Profiles merged away by the event."""
    moved: list[JourneyInstance]
    """Instances of merged-away profiles, now the merged profile's."""
    cancelled: list[str]
    """Timer keys of instances ended by a merge."""
    outcome: Outcome
    rows: list[tuple[str, ScheduledEvent | None]] = field(default_factory=list)
    """Date-trigger timers to store (None: delete), ``journey_dates.date_rows``."""


@dataclass
class JourneyWork:
    """One step's journey state and the writes it gathered."""

    now: datetime
    catalogs: dict[str, JourneyCatalog]
    instances: dict[str, dict[str, dict[str, JourneyInstance]]]
    """Workspace -> profile id -> instance id -> instance (as the step has them)."""
    changed: dict[str, dict[str, JourneyInstance]] = field(default_factory=dict)
    metrics: dict[tuple[str, str, int, str, Metric], int] = field(default_factory=dict)
    """Per-step counters added up over the step: ``(workspace, journey, version, step,
    metric)`` -> count (a firing adds three or four: one row each, summed, per step)."""
    outbox: list[OutboxMessage] = field(default_factory=list)
    timers: dict[tuple[str, str], ScheduledEvent | None] = field(default_factory=dict)
    """``(workspace, key)`` -> the row to store, or None to delete it (the last word wins)."""
    states: Mapping[str, WorkspaceState] = field(default_factory=dict)
    """The step's profiles: sends are gated against them and recorded in them (``policy_gate``)."""
    policies: dict[str, PolicyDocument] = field(default_factory=dict)

    def on_event(
        self, ws: str, profile: Profile, event: Event, losers: Sequence[str] = ()
    ) -> Decision | None:
        """Run the engine for ``event`` (applied to ``profile``); None when no journey can care.

        Changes nothing: the processor applies the decision (``apply``) only
        once the whole event is processed.
        """
        catalog = self.catalogs.get(ws)
        if catalog is None or not catalog.any_journey:
            return None
        per_profile = self.instances.setdefault(ws, {})
        own = dict(per_profile.get(profile.id, {}))
        moved: list[JourneyInstance] = []
        cancelled: list[str] = []
        for loser in losers:
            for instance in per_profile.get(loser, {}).values():
                copy = msgspec.structs.replace(instance, profile_id=profile.id)
                if copy.live and any(
                    i.live
                    and i.journey_id == copy.journey_id
                    and i.correlation_key == copy.correlation_key
                    for i in own.values()
                ):
                    copy = _ended_by_merge(copy, profile.id, self.now)
                    cancelled.append(timer_key(copy.id))
                moved.append(copy)
                own[copy.id] = copy
        if not catalog.running and not any(i.live for i in own.values()):
            outcome = Outcome()
        elif is_resume(event):  # the journey was resumed (``journey_triggers``)
            instances = sorted(own.values(), key=lambda i: (i.journey_id, i.id))
            outcome = on_resume(
                catalog.journeys(instances),
                instances,
                profile,
                self.now,
                EventIds(f"{ws}:{event.message_id}", event.received_at),
                context=catalog.context(profile, self.now),
            )
        else:
            instances = sorted(own.values(), key=lambda i: (i.journey_id, i.id))
            outcome = on_event(
                catalog.journeys(instances),
                instances,
                profile,
                event,
                self.now,
                EventIds(f"{ws}:{event.message_id}", event.received_at),
                context=catalog.context(profile, self.now),
            )
        rows = date_rows(ws, catalog.running.values(), profile, event, self.now, losers=losers)
        if not moved and not outcome.instances and not outcome.effects and not rows:
            return None
        return Decision(ws, list(losers), moved, cancelled, outcome, rows)

    def on_timer(self, entry: LogEntry, state: WorkspaceState) -> list[Event]:
        """Deliver a ``Journey Timer`` event to the engine; return the events it emits."""
        event = entry.event
        ws = event.workspace_id
        catalog = self.catalogs.get(ws)
        profile = state.profiles.get(state.live(event.profile_id or ""))
        if catalog is None or profile is None:
            return []
        # A timer concerns one instance and its version: looked up by id, not by
        # sorting the profile's instances and every running journey (the engine
        # ignores the others). No instance: a stale timer, nothing to do.
        instance = (
            self.instances.get(ws, {})
            .get(profile.id, {})
            .get(str(event.properties.get("instance_id", "")))
        )
        if instance is None:
            return []
        key = (instance.journey_id, instance.version)
        journey = catalog.running.get(key) or catalog.others.get(key)
        outcome = on_timer(
            () if journey is None else (journey,),
            (instance,),
            profile,
            instance.id,
            int(event.properties.get("seq", 0)),
            self.now,
            EventIds(f"{ws}:{event.message_id}", event.received_at),
            context=catalog.context(profile, self.now),
        )
        if not outcome.instances and not outcome.effects and not outcome.metrics:
            return []  # a stale or repeated timer
        return self.apply(Decision(ws, [], [], [], outcome))

    def apply(self, decision: Decision) -> list[Event]:
        """Record a decision in the step; return the profile-update events it emits."""
        ws = decision.workspace_id
        per_profile = self.instances.setdefault(ws, {})
        changed = self.changed.setdefault(ws, {})
        for instance in (*decision.moved, *decision.outcome.instances):
            for loser in decision.losers:
                per_profile.get(loser, {}).pop(instance.id, None)
            per_profile.setdefault(instance.profile_id, {})[instance.id] = instance
            changed[instance.id] = instance
        for key in decision.cancelled:
            self.timers[(ws, key)] = None
        for key, row in decision.rows:
            self.timers[(ws, key)] = row
        metrics = self.metrics
        for m in decision.outcome.metrics:
            counter = (ws, m.journey_id, m.version, m.step_id, m.metric)
            metrics[counter] = metrics.get(counter, 0) + m.count
        emitted: list[Event] = []
        sends, after_update = split_sends(decision.outcome.effects)
        self.release(ws, sends)
        for effect in decision.outcome.effects:
            if isinstance(effect, WebhookEffect):
                self.outbox.append(
                    OutboxMessage(
                        workspace_id=ws,
                        idempotency_key=effect.idempotency_key,
                        profile_id=effect.profile_id,
                        effect=effect,
                        created_at=self.now,
                    )
                )
            elif isinstance(effect, ScheduleTimer):
                self.timers[(ws, effect.key)] = ScheduledEvent(
                    workspace_id=ws,
                    key=effect.key,
                    due_at=effect.due_at,
                    event=timer_event(ws, effect),
                )
            elif isinstance(effect, CancelTimer):
                self.timers[(ws, effect.key)] = None
            elif isinstance(effect, TraitUpdateEffect):
                then = after_update.get(effect.idempotency_key, [])
                emitted.append(update_event(ws, effect, self.now, then))
        return emitted

    def release(self, ws: str, sends: Sequence[SendEffect]) -> None:
        """Pass ``sends`` through the policy gate (``policy_gate``) into the outbox."""
        if sends:
            policy = self.policies.get(ws) or PolicyDocument()
            self.outbox.extend(gate_sends(ws, policy, self.states.get(ws), sends, self.now))

    def fill(self, batch: ProcessingBatch) -> None:
        """Add the step's instances, metrics, outbox messages and timers to ``batch``."""
        for ws, changed in self.changed.items():
            batch.journey_instances.extend((ws, changed[i]) for i in sorted(changed))
        batch.journey_metrics.extend(
            (ws, MetricIncrement(journey_id=j, version=v, step_id=s, metric=m, count=count))
            for (ws, j, v, s, m), count in self.metrics.items()
        )
        batch.outbox.extend(self.outbox)
        for (ws, key), row in self.timers.items():
            if row is None:
                batch.unscheduled.append((ws, key))
            else:
                batch.scheduled.append(row)


class JourneyRunner:
    """The processor's journey part: catalogs, and the instances each step starts from."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.catalogs = JourneyCatalogs(storage)
        self.policies = PolicyCatalogs(storage)

    async def prepare(
        self,
        states: Mapping[str, WorkspaceState],
        now: datetime,
        previous: JourneyWork | None = None,
    ) -> JourneyWork:
        """The journey state of a step over ``states``.

        ``previous``: the work of a step still committing (its changed
        instances win over what storage says).
        """
        catalogs = await self.catalogs.for_workspaces(states)
        instances: dict[str, dict[str, dict[str, JourneyInstance]]] = {}
        for ws, state in states.items():
            catalog = catalogs[ws]
            if not catalog.any_journey or not state.profiles:
                continue
            profile_ids = sorted(state.profiles)
            loaded = await self._storage.load_journey_instances(ws, profile_ids)
            by_id = {i.id: i for i in loaded}
            if previous is not None:
                wanted = set(profile_ids)
                by_id.update(
                    (i.id, i)
                    for i in previous.changed.get(ws, {}).values()
                    if i.profile_id in wanted
                )
            await self.catalogs.with_versions(catalog, by_id.values())
            per_profile: dict[str, dict[str, JourneyInstance]] = {}
            for instance in by_id.values():
                per_profile.setdefault(instance.profile_id, {})[instance.id] = instance
            instances[ws] = per_profile
        policies = await self.policies.for_workspaces(
            ws for ws, catalog in catalogs.items() if catalog.any_journey
        )
        return JourneyWork(
            now=now, catalogs=catalogs, instances=instances, states=states, policies=policies
        )


def timer_event(ws: str, effect: ScheduleTimer) -> Event:
    """The ``Journey Timer`` event a scheduled row delivers at ``effect.due_at``.

    Its message id names the instance, the timer's sequence and the instant:
    delivering the row twice appends it once, and a moved timer is another event.
    """
    return Event(
        workspace_id=ws,
        message_id=f"{effect.message_id}:{effect.due_at.isoformat()}",
        type="track",
        event=JOURNEY_TIMER,
        timestamp=effect.due_at,
        received_at=effect.due_at,
        source=JOURNEY_EVENT_SOURCE,
        properties={"instance_id": effect.instance_id, "seq": effect.seq},
        profile_id=effect.profile_id,
    )


def is_timer(event: Event) -> bool:
    return event.source == JOURNEY_EVENT_SOURCE and event.event == JOURNEY_TIMER


def is_resume(event: Event) -> bool:
    return event.source == JOURNEY_EVENT_SOURCE and event.event == RESUMED


def split_sends(
    effects: Sequence[object],
) -> tuple[list[SendEffect], dict[str, list[SendEffect]]]:
    """The sends to gate now, and those that follow a profile update of theirs.

    A message step after an update step (500 points, then a thank-you
    showing the balance) must be rendered, and gated, against the updated
    profile. The update is applied by its own internal event, later, so a
    send that follows an update for the same profile travels with the
    latest such update (keyed by its idempotency key) and is released when
    that event is processed (``held_sends``).
    """
    now: list[SendEffect] = []
    after: dict[str, list[SendEffect]] = {}
    last_update: dict[str, str] = {}
    for effect in effects:
        if isinstance(effect, TraitUpdateEffect):
            last_update[effect.profile_id] = effect.idempotency_key
        elif isinstance(effect, SendEffect):
            key = last_update.get(effect.profile_id)
            if key is None:
                now.append(effect)
            else:
                after.setdefault(key, []).append(effect)
    return now, after


def held_sends(event: Event) -> list[SendEffect]:
    """The sends a journey's update event carries (``split_sends``); none for other events."""
    if event.source != JOURNEY_EVENT_SOURCE or event.type != "identify":
        return []
    return msgspec.convert(event.properties.get("then") or [], list[SendEffect])


def update_event(
    ws: str, effect: TraitUpdateEffect, now: datetime, then: Sequence[SendEffect] = ()
) -> Event:
    """The internal event carrying a journey's profile update (applied by ``apply_update``)
    and the sends that wait for it (released by the processor once it is applied)."""
    update: dict[str, Any] = {
        "set": effect.set,
        "unset": list(effect.unset),
        "increment": effect.increment,
        "add_tags": list(effect.add_tags),
        "remove_tags": list(effect.remove_tags),
    }
    properties: dict[str, Any] = {"update": update, "by": effect.source}
    if then:
        properties["then"] = msgspec.to_builtins(list(then))
    return Event(
        workspace_id=ws,
        message_id=f"journey-update:{effect.idempotency_key}",
        type="identify",
        timestamp=now,
        received_at=now,
        source=JOURNEY_EVENT_SOURCE,
        properties=properties,
        profile_id=effect.profile_id,
    )


def apply_update(profile: Profile, event: Event, now: datetime) -> Profile:
    """``profile`` after a journey's update event: set, unset, increment, add/remove tags.

    Values are written as traits of source ``rapport:journeys`` (an unset
    trait is written as null); increments and tags read the values as the
    profile holds them when the update is applied. Not the customer's
    activity: ``first_seen``, ``last_seen`` and ``event_count`` stay.
    """
    if event.type != "identify":  # an entry or a business event's copy: nothing to apply
        return profile
    update = event.properties.get("update") or {}
    current = {name: value.value for name, value in profile.traits.items()}
    traits: dict[str, Any] = {}
    for name, value in dict(update.get("set") or {}).items():
        traits[name] = current[name] = value
    for name in update.get("unset") or ():
        traits[name] = current[name] = None
    for name, amount in dict(update.get("increment") or {}).items():
        base = current.get(name)
        if not isinstance(base, int | float) or isinstance(base, bool):
            base = 0
        traits[name] = current[name] = base + amount
    add, remove = update.get("add_tags") or (), update.get("remove_tags") or ()
    if add or remove:
        tags = current.get("tags")
        kept = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
        kept += [t for t in add if t not in kept]
        traits["tags"] = [t for t in dict.fromkeys(kept) if t not in set(remove)]
    if not traits:
        return profile
    applied = apply_event(profile, msgspec.structs.replace(event, traits=traits), now)
    return msgspec.structs.replace(
        applied,
        first_seen=profile.first_seen,
        last_seen=profile.last_seen,
        event_count=profile.event_count,
    )


def _ended_by_merge(instance: JourneyInstance, winner: str, now: datetime) -> JourneyInstance:
    """A merged-away profile's live instance the merged profile already has a live one of."""
    return msgspec.structs.replace(
        instance,
        status="exited",
        end_reason=f"merged into {winner}, which was already in the journey",
        ended_at=now,
        wait=None,
        held=None,
        timer_at=None,
    )
