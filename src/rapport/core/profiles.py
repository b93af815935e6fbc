"""Profile state: what an event teaches us about a person, and merging two people.

Every trait and consent value keeps its provenance (source, when it was
observed, when it arrived, under which consent, which message). Events can
arrive out of order, so a value only replaces the stored one when it was
observed at the same time or later: a late, older observation never
overwrites a newer one. Merges follow the same newer-wins rule per value.

All functions return new ``Profile`` values and leave their inputs untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from rapport.core.model import ConsentValue, Event, Identifier, Profile, TraitValue
from rapport.core.policy.contacts import (
    CONTACT_CONFIRMED,
    confirm_contact,
    merged_contacts,
    note_contacts,
)


def new_profile(profile_id: str, workspace_id: str, now: datetime) -> Profile:
    """An empty profile, created at ``now``."""
    return Profile(id=profile_id, workspace_id=workspace_id, created_at=now, updated_at=now)


def attach_identifiers(
    profile: Profile, identifiers: Iterable[Identifier], now: datetime
) -> Profile:
    """``profile`` holding ``identifiers`` too (kept sorted and unique)."""
    merged = set(profile.identifiers)
    before = len(merged)
    merged.update(identifiers)
    if len(merged) == before:
        return profile
    return msgspec.structs.replace(profile, identifiers=sorted(merged), updated_at=now)


def granted_categories(consent: Mapping[str, ConsentValue]) -> list[str]:
    """The consent categories currently granted, sorted."""
    return sorted(name for name, value in consent.items() if value.granted)


def consent_preferences(event: Event) -> dict[str, bool]:
    """``context.consent.categoryPreferences`` of an event ({category: granted}).

    Entries whose value is not a boolean are ignored: a consent state is yes
    or no, and guessing from ``"yes"`` or ``1`` would invent consent.
    """
    consent = event.context.get("consent")
    if not isinstance(consent, dict):
        return {}
    prefs = consent.get("categoryPreferences")
    if not isinstance(prefs, dict):
        return {}
    return {str(k): v for k, v in prefs.items() if isinstance(v, bool)}


def person_traits(event: Event) -> dict[str, Any]:
    """The traits an event states about the person.

    ``context.traits`` on any event; for ``identify`` also the top-level
    ``traits``, which win over ``context.traits`` for the same name. A
    ``group`` event's top-level traits describe the group, not the person.
    """
    traits: dict[str, Any] = {}
    context_traits = event.context.get("traits")
    if isinstance(context_traits, dict):
        traits.update(context_traits)
    if event.type == "identify":
        traits.update(event.traits)
    return traits


def apply_event(profile: Profile, event: Event, now: datetime) -> Profile:
    """``profile`` after ``event``: consent, traits and activity, with provenance.

    The consent basis recorded on each trait is the event's own consent
    preferences when it carries some (that is what the person had agreed to
    when the value was collected), otherwise the profile's consent as known,
    otherwise unknown (``None``).
    """
    consent = profile.consent
    prefs = consent_preferences(event)
    if prefs:
        consent = dict(consent)
        for category, granted in prefs.items():
            stored = consent.get(category)
            if stored is None or event.timestamp >= stored.observed_at:
                consent[category] = ConsentValue(
                    granted=granted,
                    source=event.source,
                    observed_at=event.timestamp,
                    received_at=event.received_at,
                    message_id=event.message_id,
                )

    traits = profile.traits
    incoming = person_traits(event)
    if incoming:
        if prefs:
            basis: list[str] | None = sorted(c for c, granted in prefs.items() if granted)
        else:
            basis = granted_categories(consent) if consent else None
        traits = dict(traits)
        for name, value in incoming.items():
            stored_trait = traits.get(name)
            if stored_trait is None or event.timestamp >= stored_trait.observed_at:
                traits[name] = TraitValue(
                    value=value,
                    source=event.source,
                    observed_at=event.timestamp,
                    received_at=event.received_at,
                    consent_basis=list(basis) if basis is not None else None,
                    message_id=event.message_id,
                )

    contacts = profile.contacts
    if incoming and ("email" in incoming or "phone" in incoming):
        contacts = note_contacts(contacts, incoming, event) or contacts
    if event.event == CONTACT_CONFIRMED:
        contacts = confirm_contact(contacts, event) or contacts

    first_seen = profile.first_seen
    last_seen = profile.last_seen
    return msgspec.structs.replace(
        profile,
        traits=traits,
        consent=consent,
        contacts=contacts,
        first_seen=event.timestamp if first_seen is None else min(first_seen, event.timestamp),
        last_seen=event.timestamp if last_seen is None else max(last_seen, event.timestamp),
        event_count=profile.event_count + 1,
        updated_at=now,
    )


def merge_profiles(winner: Profile, loser: Profile, now: datetime) -> Profile:
    """``winner`` after absorbing ``loser``: one person, the union of what both knew.

    Per trait and per consent category the newer observation wins (the
    winner's on a tie). ``merged_from`` lists every profile id folded in, so
    history stays traceable through chains of merges.
    """
    if winner.workspace_id != loser.workspace_id:
        raise ValueError("profiles of different workspaces never merge")
    if winner.id == loser.id:
        raise ValueError(f"profile {winner.id} cannot merge into itself")
    merged_from = list(dict.fromkeys([*winner.merged_from, loser.id, *loser.merged_from]))
    return msgspec.structs.replace(
        winner,
        identifiers=sorted({*winner.identifiers, *loser.identifiers}),
        traits=_newer_wins(winner.traits, loser.traits),
        consent=_newer_wins(winner.consent, loser.consent),
        contacts=merged_contacts(winner.contacts, loser.contacts),
        sent=sorted([*winner.sent, *loser.sent], key=lambda s: s.at),
        merged_from=merged_from,
        first_seen=_earliest(winner.first_seen, loser.first_seen),
        last_seen=_latest(winner.last_seen, loser.last_seen),
        event_count=winner.event_count + loser.event_count,
        updated_at=now,
    )


_Observed = TypeVar("_Observed", TraitValue, ConsentValue)


def _newer_wins(
    kept: Mapping[str, _Observed], incoming: Mapping[str, _Observed]
) -> dict[str, _Observed]:
    out = dict(kept)
    for name, value in incoming.items():
        current = out.get(name)
        if current is None or value.observed_at > current.observed_at:
            out[name] = value
    return out


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a if b is None else b
    return min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a if b is None else b
    return max(a, b)
