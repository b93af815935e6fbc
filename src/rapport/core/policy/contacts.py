"""Trusted contact points: may this address receive promotions?

Write keys ship in web pages, so anyone can claim any email or phone
through one. An address whose only sources are browser-side write keys
(``write_key:<id>``) is untrusted; it becomes trusted when a server-side
source states it (a secret key, the admin API, an import) or when the
customer confirms it (a ``Contact Confirmed`` event of source
``rapport:channels``, sent by the confirmation link). Trust, once given,
is never taken back by a later browser claim of the same address.

The profile keeps one ``ContactPoint`` per address of the ``email`` and
``phone`` traits (``CONTACT_TRAITS``), updated where traits are applied
(``core.profiles.apply_event``: a dict lookup per event, more only when an
address trait is written). For an address held in another trait (a policy
routing SMS to ``mobile``), the gate falls back to that trait's provenance.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from msgspec.structs import replace

from rapport.core.model import ContactPoint, Event, TraitValue

CONTACT_CONFIRMED = "Contact Confirmed"
"""The event the confirmation link emits: ``properties`` ``channel`` and ``address``."""
CONFIRMATION_SOURCE = "rapport:channels"
"""Only this source may confirm (a browser cannot confirm for itself)."""
CONTACT_TRAITS: dict[str, str] = {"email": "email", "phone": "sms"}
"""Trait -> channel of the addresses the profile keeps contact points for."""
MAX_CONTACTS = 16
"""Contact points kept per profile: a browser spraying addresses cannot grow it."""
_PHONE_NOISE = str.maketrans("", "", " -.()/")


def normalise_address(channel: str, address: str) -> str:
    """The comparable form: emails lower-cased, phone numbers without separators."""
    address = address.strip()
    if channel == "email":
        return address.lower()
    if channel == "sms":
        return address.translate(_PHONE_NOISE)
    return address


def contact_key(channel: str, address: str) -> str:
    return f"{channel}:{normalise_address(channel, address)}"


def is_trusted_source(source: str) -> bool:
    """Everything but a browser-side write key speaks for the workspace itself."""
    return not source.startswith("write_key:")


def note_contacts(
    contacts: Mapping[str, ContactPoint], incoming: Mapping[str, Any], event: Event
) -> dict[str, ContactPoint] | None:
    """``contacts`` after ``event`` stated the address traits in ``incoming``; None if unchanged."""
    changed: dict[str, ContactPoint] | None = None
    trusted = is_trusted_source(event.source)
    for trait, channel in CONTACT_TRAITS.items():
        value = incoming.get(trait)
        if not isinstance(value, str) or not value.strip():
            continue
        key = contact_key(channel, value)
        known = contacts.get(key) if changed is None else changed.get(key)
        if known is not None and (known.trusted or not trusted):
            continue
        if changed is None:
            changed = dict(contacts)
        changed[key] = ContactPoint(
            channel=channel,
            address=normalise_address(channel, value),
            trusted=trusted,
            source=event.source,
            observed_at=event.timestamp,
            confirmation_requested_at=None if known is None else known.confirmation_requested_at,
        )
    return None if changed is None else _bounded(changed)


def confirm_contact(
    contacts: Mapping[str, ContactPoint], event: Event
) -> dict[str, ContactPoint] | None:
    """``contacts`` after a ``Contact Confirmed`` event; None if it is not one (or is bogus)."""
    if event.event != CONTACT_CONFIRMED or event.source != CONFIRMATION_SOURCE:
        return None
    channel = event.properties.get("channel")
    address = event.properties.get("address")
    if not isinstance(channel, str) or not isinstance(address, str) or not address.strip():
        return None
    key = contact_key(channel, address)
    known = contacts.get(key)
    changed = dict(contacts)
    changed[key] = ContactPoint(
        channel=channel,
        address=normalise_address(channel, address),
        trusted=True,
        source=event.source,
        observed_at=event.timestamp,
        confirmation_requested_at=None if known is None else known.confirmation_requested_at,
    )
    return _bounded(changed)


def merged_contacts(
    kept: Mapping[str, ContactPoint], incoming: Mapping[str, ContactPoint]
) -> dict[str, ContactPoint]:
    """Two profiles' contact points as one person's: a trusted point wins."""
    out = dict(kept)
    for key, point in incoming.items():
        current = out.get(key)
        if current is None or (point.trusted and not current.trusted):
            out[key] = point
    return _bounded(out)


def address_trust(
    channel: str,
    address: str,
    trait: TraitValue | None,
    contacts: Mapping[str, ContactPoint],
) -> ContactPoint | None:
    """The contact point standing for ``address``: the kept one, else one derived from
    the trait's provenance (for addresses held outside ``CONTACT_TRAITS``)."""
    known = contacts.get(contact_key(channel, address))
    if known is not None:
        return known
    if trait is None:
        return None
    return ContactPoint(
        channel=channel,
        address=normalise_address(channel, address),
        trusted=is_trusted_source(trait.source),
        source=trait.source,
        observed_at=trait.observed_at,
    )


def with_confirmation_requested(
    contacts: Mapping[str, ContactPoint], point: ContactPoint, now: datetime
) -> dict[str, ContactPoint]:
    changed = dict(contacts)
    changed[contact_key(point.channel, point.address)] = replace(
        point, confirmation_requested_at=now
    )
    return _bounded(changed)


def _bounded(contacts: dict[str, ContactPoint]) -> dict[str, ContactPoint]:
    if len(contacts) <= MAX_CONTACTS:
        return contacts
    # Untrusted claims go first, oldest first: they are what a spraying browser adds.
    ranked = sorted(contacts.items(), key=lambda kv: (kv[1].trusted, kv[1].observed_at))
    return dict(ranked[len(contacts) - MAX_CONTACTS :])
