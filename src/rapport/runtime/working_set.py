"""The working set of one processing step: the owners and profiles it reads and changes.

Per workspace, a step needs the owner of every identifier its events claim
and the profiles those owners (and events addressing a profile directly)
name. They come from, newest first:

1. the previous step, when it is still being committed (the processor builds
   the next step while the previous one commits; see ``processor``);
2. the processor's cache of what it committed (``profile_cache``);
3. storage: one ``find_profile_ids`` and one ``load_profiles`` per workspace
   for whatever is left.

Whatever the previous step changed is in its working set, so nothing it is
committing is read from storage, where it may or may not be visible yet.
What storage may still say about it -- an identifier row pointing at a
profile that step merged away, the merged-away profile itself -- is mapped
through the previous step's redirects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from rapport.core.model import Identifier, Profile
from rapport.core.segments import SegmentCatalog, Settled
from rapport.runtime.profile_cache import ProfileCache
from rapport.storage.base import Storage

log = structlog.get_logger("rapport.processor")

_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass
class WorkspaceState:
    """What one step knows and changed in one workspace."""

    workspace_id: str
    owners: dict[Identifier, str] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    """Merged-away profile id -> the profile it went into."""
    changed_profiles: set[str] = field(default_factory=set)
    changed_identifiers: set[Identifier] = field(default_factory=set)
    present: set[str] = field(default_factory=set)
    """Live profiles known to exist but not loaded: named only by events that need
    no more than that (``load_states``: ``named``)."""
    settled: dict[str, tuple[Profile, Settled]] = field(default_factory=dict)
    """Profile id -> what evaluating that very profile (the object) at the step's
    ``now`` found about its time-dependent segments (``segments.Settled``), for
    its timer."""

    def record_settled(self, profile: Profile, found: Settled) -> None:
        """Keep what an evaluation of ``profile`` found, with what earlier ones found
        about the same, unchanged, profile."""
        if not found:
            return
        known = self.settled.get(profile.id)
        if known is not None and known[0] is profile:
            known[1].update(found)
        else:
            self.settled[profile.id] = (profile, found)

    def settled_for(self, profile: Profile) -> Settled | None:
        """What evaluations found about ``profile`` (this very object), if anything."""
        known = self.settled.get(profile.id)
        return known[1] if known is not None and known[0] is profile else None

    def live(self, profile_id: str) -> str:
        seen: set[str] = set()
        while profile_id in self.redirects and profile_id not in seen:
            seen.add(profile_id)
            profile_id = self.redirects[profile_id]
        return profile_id

    def remember(self, cache: ProfileCache) -> None:
        """Tell ``cache`` what storage holds now that the step is committed."""
        if not cache.enabled:
            return
        live = self.live
        owners = {ident: live(owner) for ident, owner in self.owners.items()}
        cache.committed(self.workspace_id, owners, self.profiles.values(), self.redirects)


async def load_states(
    storage: Storage,
    cache: ProfileCache,
    wanted: Mapping[str, Iterable[Identifier]],
    addressed: Mapping[str, set[str]],
    previous: Mapping[str, WorkspaceState],
    named: Mapping[str, set[str]] | None = None,
) -> dict[str, WorkspaceState]:
    """The working set per workspace for the identifiers ``wanted`` and profiles ``addressed``.

    ``previous`` is the working set of a step not known to be committed yet
    (empty when there is none).

    ``named``: profiles events address that need only be known to exist
    (quiet membership events, ``processor``). Those that are not loaded
    anyway and exist under that very id (no merge to follow) are put in
    ``WorkspaceState.present`` without reading their documents; the others
    are loaded like ``addressed`` ones.
    """
    states: dict[str, WorkspaceState] = {}
    for ws, identifiers in wanted.items():
        state = WorkspaceState(ws)
        states[ws] = state
        loader = _Loader(storage, cache, state, previous.get(ws))
        await loader.load_owners(identifiers)
        profile_ids = set(state.owners.values())
        profile_ids.update(state.live(p) for p in addressed.get(ws, ()))
        if named is not None and ws in named:
            profile_ids.update(await loader.find_present(named[ws] - profile_ids))
        if not profile_ids:
            continue
        await loader.load_profiles(profile_ids)
        if len(state.profiles) < len(profile_ids):
            await loader.follow_merges(profile_ids - state.profiles.keys())
    return states


class _Loader:
    """Fills one workspace's state from the previous step, the cache, then storage."""

    def __init__(
        self,
        storage: Storage,
        cache: ProfileCache,
        state: WorkspaceState,
        before: WorkspaceState | None,
    ) -> None:
        self.storage = storage
        self.cache = cache
        self.state = state
        self.before = before
        if before is not None:
            state.redirects = dict(before.redirects)

    async def load_owners(self, identifiers: Iterable[Identifier]) -> None:
        state = self.state
        if self.before is not None:
            identifiers = _take_known(self.before.owners, identifiers, state.owners)
        found, unknown = self.cache.owners(state.workspace_id, identifiers)
        state.owners.update(found)
        if unknown:
            state.owners.update(await self.storage.find_profile_ids(state.workspace_id, unknown))
        if state.redirects:
            state.owners = {ident: state.live(owner) for ident, owner in state.owners.items()}

    async def load_profiles(self, profile_ids: Iterable[str]) -> None:
        state = self.state
        if self.before is not None:
            profile_ids = _take_known(self.before.profiles, profile_ids, state.profiles)
        cached, unloaded = self.cache.profiles(state.workspace_id, profile_ids)
        state.profiles.update(cached)
        if unloaded:
            unloaded.sort()
            state.profiles.update(await self.storage.load_profiles(state.workspace_id, unloaded))

    async def find_present(self, profile_ids: set[str]) -> set[str]:
        """Put those of ``profile_ids`` that are live under that id in ``present``.

        The previous step and the cache know theirs; storage is asked for the
        rest by id alone. Returns the others (merged away, or unknown): to
        load, following merges.
        """
        state = self.state
        rest: list[str] = []
        for profile_id in profile_ids:
            if state.live(profile_id) != profile_id:
                continue  # merged away by the previous step: loaded as addressed
            if self.before is not None and profile_id in self.before.profiles:
                state.present.add(profile_id)
            else:
                rest.append(profile_id)
        if rest:
            cached, unknown = self.cache.profiles(state.workspace_id, rest)
            state.present.update(cached)
            if unknown:
                unknown.sort()
                found = await self.storage.existing_profile_ids(state.workspace_id, unknown)
                state.present.update(found)
        return {state.live(p) for p in profile_ids} - state.present

    async def follow_merges(self, missing: set[str]) -> None:
        """Profiles named but not found: follow their merges, or forget them.

        Rare: an admin event addressing a profile merged since, or an
        identifier row left pointing at a merged-away profile. Such rows are
        rewritten.
        """
        state = self.state
        ws = state.workspace_id
        for profile_id in sorted(missing):
            live = await self.storage.resolve_profile_id(ws, profile_id)
            if live is not None and live != profile_id:
                state.redirects[profile_id] = live
        targets = {state.live(p) for p in missing} - state.profiles.keys() - missing
        if targets:
            await self.load_profiles(targets)
        for ident, owner in list(state.owners.items()):
            if owner not in missing:
                continue
            live = state.live(owner)
            if live in state.profiles:
                state.owners[ident] = live
                state.changed_identifiers.add(ident)
            else:
                log.warning("identity.dangling_identifier", workspace_id=ws, identifier=str(ident))
                del state.owners[ident]


def _take_known(known: Mapping[_K, _V], keys: Iterable[_K], into: dict[_K, _V]) -> list[_K]:
    """Copy what ``known`` has for ``keys`` into ``into``; return the other keys."""
    rest: list[_K] = []
    for key in keys:
        value = known.get(key)
        if value is None:
            rest.append(key)
        else:
            into[key] = value
    return rest


class SegmentCatalogs:
    """The compiled segment definitions of each workspace, reloaded when any changes.

    Each step asks for the workspaces it processes: one cheap
    ``segments_revision`` query tells whether any definition was written
    since the catalogs were built; if so all are dropped and rebuilt from
    storage as workspaces need them.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._revision: int | None = None
        self._catalogs: dict[str, SegmentCatalog] = {}

    async def for_workspaces(self, workspace_ids: Iterable[str]) -> dict[str, SegmentCatalog]:
        revision = await self._storage.segments_revision()
        if revision != self._revision:
            self._catalogs.clear()
            self._revision = revision
        found: dict[str, SegmentCatalog] = {}
        for ws in workspace_ids:
            catalog = self._catalogs.get(ws)
            if catalog is None:
                catalog = SegmentCatalog(await self._storage.list_segments(ws))
                for segment_id, reason in sorted(catalog.invalid.items()):
                    # Stored definitions were valid when written; one that no
                    # longer compiles is left out until it is fixed.
                    log.error(
                        "segments.invalid_definition",
                        workspace_id=ws,
                        segment_id=segment_id,
                        reason=reason,
                    )
                self._catalogs[ws] = catalog
            found[ws] = catalog
        return found
