"""Shared builders for the computed-trait tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rapport.core.computed_traits import (
    ComputedTraitCatalog,
    ComputedTraitDefinition,
    apply_computed_traits,
)
from rapport.core.model import Event, Profile
from rapport.core.profiles import apply_event, new_profile

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WS = "ws"


def definition(
    trait_id: str, compute: Any, kind: str = "aggregate", version: int = 1
) -> ComputedTraitDefinition:
    return ComputedTraitDefinition(
        workspace_id=WS,
        id=trait_id,
        kind=kind,
        compute=compute,
        version=version,
        status="active",
        created_at=T0,
        updated_at=T0,
    )


def catalog(**computes: Any) -> ComputedTraitCatalog:
    """Aggregate definitions by trait name; ``(kind, compute)`` pairs for other kinds."""
    definitions = []
    for name, compute in computes.items():
        if isinstance(compute, tuple):
            kind, body = compute
            definitions.append(definition(name, body, kind))
        else:
            definitions.append(definition(name, compute))
    built = ComputedTraitCatalog(definitions)
    assert built.invalid == {}
    return built


def track(n: int, name: str, at: datetime, source: str = "write_key:k", **properties: Any) -> Event:
    return Event(
        workspace_id=WS,
        message_id=f"m{n}",
        type="track",
        event=name,
        properties=properties,
        timestamp=at,
        received_at=at,
        source=source,
    )


def page(n: int, at: datetime) -> Event:
    return Event(
        workspace_id=WS,
        message_id=f"m{n}",
        type="page",
        name="Home",
        timestamp=at,
        received_at=at,
        source="write_key:k",
    )


def profile() -> Profile:
    return new_profile("p1", WS, T0 - timedelta(days=1))


def step(built: ComputedTraitCatalog, current: Profile, event: Event, now: datetime) -> Profile:
    """What the processor does for one customer event."""
    return apply_computed_traits(built, apply_event(current, event, now), event, now)


def values(current: Profile) -> dict[str, Any]:
    return {name: trait.value for name, trait in current.traits.items()}
