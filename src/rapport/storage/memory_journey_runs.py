"""Journey runs in memory: the in-memory backend's instances, counters and outbox.

Instances and messages are kept encoded, so a caller that changes what it
got back never changes what is stored. ``prepare`` checks and encodes a
batch's part before anything is applied (``MemoryStorage.commit_processing``
applies nothing when one part of the batch cannot be stored); ``apply``
cannot fail. See ``rapport.storage.journey_runs`` for the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from rapport.core.journeys.instances import JourneyInstance
from rapport.storage.base import ProcessingBatch
from rapport.storage.journey_runs import (
    CounterKey,
    InstancePage,
    JourneyMetrics,
    MetricCount,
    OutboxMessage,
    check_page,
    latest_instances,
    summed_increments,
)
from rapport.storage.memory_outbox import MemoryOutbox

_encode = msgspec.json.Encoder().encode
_decode_instance = msgspec.json.Decoder(JourneyInstance).decode


class _Stored(msgspec.Struct):
    """An instance's indexed fields and its encoded document."""

    journey_id: str
    profile_id: str
    status: str
    doc: bytes


class PreparedRuns(msgspec.Struct):
    instances: list[tuple[tuple[str, str], _Stored]]
    metrics: dict[CounterKey, int]
    marker: tuple[str, int]
    messages: list[tuple[tuple[str, str], OutboxMessage]]


class MemoryJourneyRuns:
    """The journey-run methods of ``Storage``, over dictionaries."""

    def __init__(self) -> None:
        self._instances: dict[tuple[str, str], _Stored] = {}
        self._by_profile: dict[tuple[str, str], set[str]] = {}
        self._counters: dict[CounterKey, int] = {}
        self._markers: set[tuple[str, int]] = set()
        self.outbox = MemoryOutbox()

    def prepare(self, batch: ProcessingBatch) -> PreparedRuns:
        return PreparedRuns(
            instances=[
                (
                    (ws, i.id),
                    _Stored(
                        journey_id=i.journey_id,
                        profile_id=i.profile_id,
                        status=i.status,
                        doc=_encode(i),
                    ),
                )
                for ws, i in latest_instances(batch.journey_instances)
            ],
            metrics=summed_increments(batch.journey_metrics),
            marker=(batch.consumer, batch.offset),
            messages=self.outbox.prepare(batch.outbox),
        )

    def apply(self, prepared: PreparedRuns) -> None:
        for key, stored in prepared.instances:
            previous = self._instances.get(key)
            if previous is not None and previous.profile_id != stored.profile_id:
                self._by_profile[(key[0], previous.profile_id)].discard(key[1])
            self._instances[key] = stored
            self._by_profile.setdefault((key[0], stored.profile_id), set()).add(key[1])
        if prepared.metrics and prepared.marker not in self._markers:
            self._markers.add(prepared.marker)
            for counter, count in prepared.metrics.items():
                self._counters[counter] = self._counters.get(counter, 0) + count
        self.outbox.insert(prepared.messages)

    # -- reads ---------------------------------------------------------------
    def load(self, workspace_id: str, profile_ids: Sequence[str]) -> list[JourneyInstance]:
        found: list[JourneyInstance] = []
        for profile_id in sorted(set(profile_ids)):
            ids = self._by_profile.get((workspace_id, profile_id), set())
            instances = [_decode_instance(self._instances[(workspace_id, i)].doc) for i in ids]
            latest_ended: dict[tuple[str, str | None], JourneyInstance] = {}
            for instance in instances:
                if instance.live:
                    found.append(instance)
                    continue
                slot = (instance.journey_id, instance.correlation_key)
                best = latest_ended.get(slot)
                if best is None or _ended_order(instance) > _ended_order(best):
                    latest_ended[slot] = instance
            found.extend(latest_ended.values())
        found.sort(key=lambda i: (i.profile_id, i.journey_id, i.id))
        return found

    def get(self, workspace_id: str, instance_id: str) -> JourneyInstance | None:
        stored = self._instances.get((workspace_id, instance_id))
        return None if stored is None else _decode_instance(stored.doc)

    def page(
        self, workspace_id: str, journey_id: str, limit: int, after: str | None, status: str | None
    ) -> InstancePage:
        check_page(limit)
        ids = sorted(
            instance_id
            for (ws, instance_id), stored in self._instances.items()
            if ws == workspace_id
            and stored.journey_id == journey_id
            and (status is None or stored.status == status)
            and (after is None or instance_id > after)
        )
        chosen = ids[:limit]
        return InstancePage(
            [_decode_instance(self._instances[(workspace_id, i)].doc) for i in chosen],
            chosen[-1] if len(ids) > limit else None,
        )

    def counts(self, workspace_id: str, journey_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (ws, _), stored in self._instances.items():
            if ws == workspace_id and stored.journey_id == journey_id:
                counts[stored.status] = counts.get(stored.status, 0) + 1
        return counts

    def metrics(self, workspace_id: str, journey_id: str) -> JourneyMetrics:
        counts = [
            MetricCount(version, step_id, metric, count)
            for (ws, journey, version, step_id, metric), count in sorted(self._counters.items())
            if ws == workspace_id and journey == journey_id
        ]
        return JourneyMetrics(journey_id, counts)


def _ended_order(instance: JourneyInstance) -> tuple[datetime, str]:
    return (instance.ended_at or instance.entered_at, instance.id)
