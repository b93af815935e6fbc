"""The compiled computed-trait definitions of each workspace, reloaded when any changes.

The processor asks once per step for the workspaces it processes: one cheap
``computed_traits_revision`` query tells whether any definition was written
since the catalogs were built; if so all are dropped and rebuilt from
storage as workspaces need them (as ``working_set.SegmentCatalogs`` does for
segments).
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from rapport.core.computed_traits import ComputedTraitCatalog
from rapport.storage.base import Storage

log = structlog.get_logger("rapport.processor")


class ComputedTraitCatalogs:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._revision: int | None = None
        self._catalogs: dict[str, ComputedTraitCatalog] = {}

    async def for_workspaces(self, workspace_ids: Iterable[str]) -> dict[str, ComputedTraitCatalog]:
        revision = await self._storage.computed_traits_revision()
        if revision != self._revision:
            self._catalogs.clear()
            self._revision = revision
        found: dict[str, ComputedTraitCatalog] = {}
        for ws in workspace_ids:
            catalog = self._catalogs.get(ws)
            if catalog is None:
                catalog = ComputedTraitCatalog(await self._storage.list_computed_traits(ws))
                for trait_id, reason in sorted(catalog.invalid.items()):
                    # Stored definitions were valid when written; one that no
                    # longer compiles is left out until it is fixed.
                    log.error(
                        "computed_traits.invalid_definition",
                        workspace_id=ws,
                        trait_id=trait_id,
                        reason=reason,
                    )
                self._catalogs[ws] = catalog
            found[ws] = catalog
        return found
