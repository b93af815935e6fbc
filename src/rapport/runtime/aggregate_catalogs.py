"""Segment catalogs that also maintain the event aggregates journey conditions read.

Segments and journeys share one condition language, so they share its
event aggregates: a profile keeps one state per aggregate (``Profile.aggregates``),
fed per event by ``update_memberships`` whatever reads it, and dropped once
nothing does. The catalog the processor evaluates segments with therefore
holds the aggregates of the workspace's active segments and of its running
journey versions (``SegmentCatalog.with_aggregates``).

It changes when either changes: the segment catalog is rebuilt when
``segments_revision`` moves, the journey catalog when ``journeys_revision``
does (``journey_catalogs``); the combination is remembered for the pair it
was made from. Every user of segment catalogs (the step, timers, the
segment backfill) goes through this one, so none of them drops a state a
journey reads.

A journey's aggregates count from its publication on: history is not
replayed for them (an aggregate a segment already maintained is, of course,
already counting).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rapport.core.segments import SegmentCatalog
from rapport.runtime.journey_catalogs import JourneyCatalog, JourneyCatalogs
from rapport.runtime.working_set import SegmentCatalogs
from rapport.storage.base import Storage


class AggregateCatalogs(SegmentCatalogs):
    """``SegmentCatalogs`` whose catalogs also feed the running journeys' aggregates."""

    def __init__(self, storage: Storage, journeys: JourneyCatalogs) -> None:
        super().__init__(storage)
        self._journeys = journeys
        self._combined: dict[str, tuple[SegmentCatalog, JourneyCatalog, SegmentCatalog]] = {}
        """Workspace -> the segment and journey catalogs combined, and their combination."""

    async def for_workspaces(
        self,
        workspace_ids: Iterable[str],
        journeys: Mapping[str, JourneyCatalog] | None = None,
    ) -> dict[str, SegmentCatalog]:
        """The workspaces' catalogs; ``journeys``: their journey catalogs, if already loaded
        (the step has them: no second ``journeys_revision`` query)."""
        wanted = list(workspace_ids)
        segments = await super().for_workspaces(wanted)
        given = dict(journeys or {})
        missing = [ws for ws in wanted if ws not in given]
        if missing:
            given.update(await self._journeys.for_workspaces(missing))
        return {ws: self._combine(ws, segments[ws], given[ws]) for ws in wanted}

    def _combine(
        self, ws: str, segments: SegmentCatalog, journeys: JourneyCatalog
    ) -> SegmentCatalog:
        kept = self._combined.get(ws)
        if kept is not None and kept[0] is segments and kept[1] is journeys:
            return kept[2]
        combined = segments.with_aggregates(journeys.aggregators)
        self._combined[ws] = (segments, journeys, combined)
        return combined
