"""The compiled journey versions of each workspace, reloaded when any journey changes.

The processor asks once per step for the workspaces it processes: one cheap
``journeys_revision`` query tells whether any journey was written (saved,
published, paused, resumed, archived) since the catalogs were built; if so
all are dropped and rebuilt from storage as workspaces need them (as
``working_set.SegmentCatalogs`` does for segments).

A catalog holds the running versions (``lifecycle.RUNNING``: published and
paused), each compiled once; the newest published version of a journey is
the one taking entries. In-flight instances finish on the version they
entered on: an instance naming a version the catalog does not hold (an
archived one, whose instances then exit) gets that version loaded and
compiled on demand (``with_versions``), kept until the revision moves.

A catalog also knows the event aggregates the running versions' conditions
read (``aggregators``): the processor feeds them per event with the
segments' own (``aggregate_catalogs``), and ``context`` is how the engine
reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from rapport.core.aggregate_states import AggregateStates
from rapport.core.conditions import (
    AggregateReading,
    Aggregator,
    EvaluationContext,
    ProfileContext,
)
from rapport.core.conditions.aggregates import EMPTY_READING
from rapport.core.conditions.instants import to_micros
from rapport.core.journeys import (
    PUBLISHED,
    RUNNING,
    CompiledJourney,
    JourneyInstance,
    JourneyVersion,
    compile_journey,
    parse_journey,
)
from rapport.core.model import Profile
from rapport.storage.base import Storage

log = structlog.get_logger("rapport.processor")


@dataclass
class JourneyCatalog:
    """One workspace's compiled journey versions."""

    workspace_id: str
    running: dict[tuple[str, int], CompiledJourney] = field(default_factory=dict)
    """``(journey id, version)`` of every published or paused version."""
    others: dict[tuple[str, int], CompiledJourney | None] = field(default_factory=dict)
    """Versions loaded for in-flight instances (None: not found or not compilable)."""
    any_journey: bool = False
    """Whether the workspace has any journey version at all (else nothing is loaded)."""
    aggregators: dict[str, Aggregator] = field(default_factory=dict)
    """The event aggregates the running versions' conditions read, by id: fed per event
    with the segments' own (``aggregate_catalogs``), read by ``context``."""

    def context(self, profile: Profile, now: datetime) -> EvaluationContext:
        """How journey conditions read ``profile`` at ``now``: traits, consents,
        segments, and the aggregates kept on it (states as of the event just
        processed, read at ``now``: the event that just arrived counts)."""
        segments = frozenset(profile.segments)
        if not self.aggregators:
            return ProfileContext(profile, now, segments=segments)
        states = AggregateStates(self.aggregators, profile.aggregates, to_micros(now))
        known = self.aggregators

        def read(aggregate_id: str) -> AggregateReading:
            # A version loaded for its in-flight instances alone (archived)
            # may read one no running version maintains: it reads as empty.
            return states.read(aggregate_id) if aggregate_id in known else EMPTY_READING

        return ProfileContext(profile, now, segments=segments, read_aggregate=read)

    def journeys(self, instances: Iterable[JourneyInstance] = ()) -> list[CompiledJourney]:
        """The running versions, plus those ``instances`` run on (loaded beforehand)."""
        found = dict(self.running)
        for instance in instances:
            key = (instance.journey_id, instance.version)
            if key not in found:
                other = self.others.get(key)
                if other is not None:
                    found[key] = other
        return [found[key] for key in sorted(found)]


class JourneyCatalogs:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._revision: int | None = None
        self._catalogs: dict[str, JourneyCatalog] = {}

    async def for_workspaces(self, workspace_ids: Iterable[str]) -> dict[str, JourneyCatalog]:
        revision = await self._storage.journeys_revision()
        if revision != self._revision:
            self._catalogs.clear()
            self._revision = revision
        found: dict[str, JourneyCatalog] = {}
        for ws in workspace_ids:
            catalog = self._catalogs.get(ws)
            if catalog is None:
                catalog = await self._load(ws)
                self._catalogs[ws] = catalog
            found[ws] = catalog
        return found

    async def with_versions(
        self, catalog: JourneyCatalog, instances: Iterable[JourneyInstance]
    ) -> None:
        """Load the versions ``instances`` run on that the catalog does not hold yet."""
        for instance in instances:
            key = (instance.journey_id, instance.version)
            if key in catalog.running or key in catalog.others:
                continue
            stored = await self._storage.get_journey_version(catalog.workspace_id, *key)
            catalog.others[key] = (
                None if stored is None else _compiled(stored, entry=False, ws=catalog.workspace_id)
            )

    async def _load(self, ws: str) -> JourneyCatalog:
        catalog = JourneyCatalog(ws)
        versions = await self._storage.list_journey_versions(ws)
        catalog.any_journey = bool(versions)
        entry: dict[str, int] = {}
        for version in versions:
            if version.status == PUBLISHED:
                entry[version.journey_id] = max(entry.get(version.journey_id, 0), version.version)
        for version in versions:
            if version.status in RUNNING:
                compiled = _compiled(
                    version, entry=entry.get(version.journey_id) == version.version, ws=ws
                )
                if compiled is not None:
                    catalog.running[(version.journey_id, version.version)] = compiled
                    for aggregate_id, spec in compiled.aggregates.items():
                        if aggregate_id not in catalog.aggregators:
                            catalog.aggregators[aggregate_id] = Aggregator(spec)
        return catalog


def _compiled(version: JourneyVersion, *, entry: bool, ws: str) -> CompiledJourney | None:
    try:
        return compile_journey(
            parse_journey(version.definition), version.version, entry=entry, status=version.status
        )
    except Exception as exc:  # stored definitions were valid when written: left out, logged
        log.error(
            "journeys.invalid_definition",
            workspace_id=ws,
            journey_id=version.journey_id,
            version=version.version,
            exc_info=exc,
        )
        return None
