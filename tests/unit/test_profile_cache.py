"""The processor's cache of committed owners and profiles."""

from __future__ import annotations

from datetime import UTC, datetime

from rapport.core.model import Identifier, Profile
from rapport.runtime.profile_cache import OWNERS_PER_PROFILE, ProfileCache

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def profile(pid: str) -> Profile:
    return Profile(id=pid, workspace_id="ws", created_at=T0, updated_at=T0)


def ident(n: int) -> Identifier:
    return Identifier("anonymous_id", f"a{n}")


def test_serves_what_was_committed_per_workspace() -> None:
    cache = ProfileCache(10)
    cache.committed("ws", {ident(1): "p1"}, [profile("p1")], gone=[])
    assert cache.owners("ws", [ident(1), ident(2)]) == ({ident(1): "p1"}, [ident(2)])
    assert cache.owners("other", [ident(1)]) == ({}, [ident(1)])
    assert cache.profiles("ws", ["p1", "p2"]) == ({"p1": profile("p1")}, ["p2"])


def test_merged_away_profiles_are_dropped() -> None:
    cache = ProfileCache(10)
    cache.committed("ws", {}, [profile("p1"), profile("p2")], gone=[])
    cache.committed("ws", {ident(1): "p1"}, [profile("p1")], gone=["p2"])
    assert cache.profiles("ws", ["p1", "p2"])[1] == ["p2"]


def test_least_recently_committed_are_evicted_first() -> None:
    cache = ProfileCache(2)
    cache.committed("ws", {}, [profile("p1"), profile("p2")], gone=[])
    cache.committed("ws", {}, [profile("p1")], gone=[])  # p1 used again
    cache.committed("ws", {}, [profile("p3")], gone=[])
    assert sorted(cache.profiles("ws", ["p1", "p2", "p3"])[0]) == ["p1", "p3"]
    owners = {ident(n): "p1" for n in range(3 * OWNERS_PER_PROFILE)}
    cache.committed("ws", owners, [], gone=[])
    found, missing = cache.owners("ws", list(owners))
    assert len(found) == 2 * OWNERS_PER_PROFILE
    assert missing == [ident(n) for n in range(OWNERS_PER_PROFILE)]


def test_a_zero_size_cache_keeps_nothing() -> None:
    cache = ProfileCache(0)
    assert not cache.enabled
    cache.committed("ws", {ident(1): "p1"}, [profile("p1")], gone=[])
    assert cache.owners("ws", [ident(1)]) == ({}, [ident(1)])
    assert len(cache) == 0
