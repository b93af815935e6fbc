"""What the processor last committed: identifier owners and profiles, kept in memory.

Reading owners and profiles back from storage (and decoding the profile
documents) is a large share of processing a returning customer's event. The
processor is the only writer of the identity graph and the profiles, so what
it committed is what storage holds, and it can serve the next batch from
memory instead.

When it is valid: as long as no one else commits processing to the same
storage between this processor's own commits. That is the condition the
processor already runs under (one consumer, whose offset it keeps in memory
between commits); whenever it re-reads its offset from storage
(``Processor.load_offset``, e.g. after another process processed) the cache
is dropped with it. Anything else that changes profiles or identifiers must
go through the event log, as every other change does.

The cache is written *after* a commit succeeded, from values the batch built
anew (profiles are immutable values), so a failed commit leaves it as it was.
A stale owner can only point at a profile merged away since; that profile is
then missing from the cache and from storage, and the processor follows the
merge as it does for storage rows.

Bounded: least recently committed profiles and owners are evicted first.
Every processed event rewrites its profile, so "recently committed" is
"recently used".

Sized by the ``profile_cache_size`` setting (``Processor(cache_profiles=...)``,
0 turns it off). Profiles are ``gc=False`` structs and the service tunes the
collector (``service.tune_garbage_collector``), so keeping them alive costs
memory rather than collection time: about twice a profile's stored size.
Measured on SQLite (``benchmarks/ingest.py``'s processing, 100,000 events,
alternated runs, 2026-11-23): 5,000 returning customers 27,750-28,900 ->
31,700-38,500 events/s; every event a new customer 25,550-26,000 -> 23,300-24,400
(what it keeps is never read again). With 200 segments the profiles are
larger and their reads cost more: ``benchmarks/segments.py``'s mixed run
went from 127 to 119 µs of added cost per event.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

from rapport.core.model import Identifier, Profile

_Key = TypeVar("_Key", bound=Hashable)
_Value = TypeVar("_Value")

OWNERS_PER_PROFILE = 4
"""Owners kept per cached profile (an anonymous id or two, a user id, an email)."""


class ProfileCache:
    """Identifier owners and profiles per workspace, least recently committed evicted."""

    __slots__ = ("_owners", "_profiles", "max_owners", "max_profiles")

    def __init__(self, max_profiles: int) -> None:
        if max_profiles < 0:
            raise ValueError("max_profiles must not be negative")
        self.max_profiles = max_profiles
        self.max_owners = max_profiles * OWNERS_PER_PROFILE
        # Plain dicts keep insertion order: re-inserting on every commit
        # makes the first key the least recently committed one.
        self._owners: dict[tuple[str, Identifier], str] = {}
        self._profiles: dict[tuple[str, str], Profile] = {}

    def __len__(self) -> int:
        return len(self._profiles)

    @property
    def enabled(self) -> bool:
        return self.max_profiles > 0

    def clear(self) -> None:
        self._owners.clear()
        self._profiles.clear()

    def owners(
        self, workspace_id: str, identifiers: Iterable[Identifier]
    ) -> tuple[dict[Identifier, str], list[Identifier]]:
        """Owners known here, and the identifiers to look up in storage."""
        return _split_cached(self._owners, workspace_id, identifiers)

    def profiles(
        self, workspace_id: str, ids: Iterable[str]
    ) -> tuple[dict[str, Profile], list[str]]:
        """Profiles known here, and the ids to load from storage."""
        return _split_cached(self._profiles, workspace_id, ids)

    def committed(
        self,
        workspace_id: str,
        owners: Mapping[Identifier, str],
        profiles: Iterable[Profile],
        gone: Iterable[str],
    ) -> None:
        """Record what storage holds after a commit.

        ``owners`` and ``profiles`` are the live state the batch read or
        wrote; ``gone`` are profiles merged away (deleted in storage).
        """
        if not self.max_profiles:
            return
        cached_profiles = self._profiles
        for profile_id in gone:
            cached_profiles.pop((workspace_id, profile_id), None)
        for profile in profiles:
            key = (workspace_id, profile.id)
            cached_profiles.pop(key, None)
            cached_profiles[key] = profile
        cached_owners = self._owners
        for identifier, owner in owners.items():
            owner_key = (workspace_id, identifier)
            cached_owners.pop(owner_key, None)
            cached_owners[owner_key] = owner
        _evict(cached_profiles, self.max_profiles)
        _evict(cached_owners, self.max_owners)


def _evict(entries: dict[_Key, _Value], limit: int) -> None:
    excess = len(entries) - limit
    if excess <= 0:
        return
    oldest = iter(entries)
    doomed = [next(oldest) for _ in range(excess)]
    for key in doomed:
        del entries[key]


def _split_cached(
    cache: Mapping[tuple[str, _Key], _Value], workspace_id: str, keys: Iterable[_Key]
) -> tuple[dict[_Key, _Value], list[_Key]]:
    """The entries ``cache`` holds for ``keys`` in a workspace, and the keys it lacks."""
    found: dict[_Key, _Value] = {}
    missing: list[_Key] = []
    for key in keys:
        value = cache.get((workspace_id, key))
        if value is None:
            missing.append(key)
        else:
            found[key] = value
    return found, missing
