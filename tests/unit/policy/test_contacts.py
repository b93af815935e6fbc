"""Contact points as traits are applied: who claimed an address, and who confirmed it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rapport.core.model import Event
from rapport.core.policy.contacts import MAX_CONTACTS, normalise_address
from rapport.core.profiles import apply_event, merge_profiles, new_profile

T0 = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


def event(n: int, source: str, traits: dict[str, Any] | None = None, **fields: Any) -> Event:
    at = T0 + timedelta(minutes=n)
    return Event(
        workspace_id="ws",
        message_id=f"m{n}",
        type="identify" if traits is not None else "track",
        timestamp=at,
        received_at=at,
        source=source,
        user_id="dana",
        traits=traits or {},
        **fields,
    )


def test_an_address_from_a_write_key_is_untrusted_until_a_server_states_it() -> None:
    p = apply_event(new_profile("p", "ws", T0), event(1, "write_key:w", {"email": "Dana@X.io"}), T0)
    assert p.contacts["email:dana@x.io"].trusted is False
    p = apply_event(p, event(2, "secret_key:s", {"email": "dana@x.io"}), T0)
    point = p.contacts["email:dana@x.io"]
    assert (point.trusted, point.source) == (True, "secret_key:s")
    # A later browser claim of the same address does not take trust back.
    p = apply_event(p, event(3, "write_key:w", {"email": "DANA@x.io"}), T0)
    assert p.contacts["email:dana@x.io"].trusted is True


def test_a_phone_is_kept_without_separators() -> None:
    p = apply_event(
        new_profile("p", "ws", T0), event(1, "admin:k", {"phone": "+33 6 12-34.56 78"}), T0
    )
    assert list(p.contacts) == ["sms:+33612345678"]
    assert normalise_address("sms", "(555) 010-0199") == "5550100199"


def test_contact_confirmed_from_the_confirmation_link_trusts_the_address() -> None:
    p = apply_event(new_profile("p", "ws", T0), event(1, "write_key:w", {"email": "d@x.io"}), T0)
    confirmed = event(
        2,
        "rapport:channels",
        event="Contact Confirmed",
        properties={"channel": "email", "address": "D@x.io"},
    )
    p = apply_event(p, confirmed, T0)
    assert p.contacts["email:d@x.io"].trusted is True


def test_a_browser_cannot_confirm_for_itself() -> None:
    p = apply_event(new_profile("p", "ws", T0), event(1, "write_key:w", {"email": "d@x.io"}), T0)
    forged = event(
        2,
        "write_key:w",
        event="Contact Confirmed",
        properties={"channel": "email", "address": "d@x.io"},
    )
    assert apply_event(p, forged, T0).contacts["email:d@x.io"].trusted is False


def test_a_browser_spraying_addresses_cannot_grow_the_profile_without_bound() -> None:
    p = apply_event(new_profile("p", "ws", T0), event(0, "secret_key:s", {"email": "d@x.io"}), T0)
    for n in range(1, 40):
        p = apply_event(p, event(n, "write_key:w", {"email": f"victim{n}@x.io"}), T0)
    assert len(p.contacts) == MAX_CONTACTS
    assert p.contacts["email:d@x.io"].trusted, "the trusted address is never the one dropped"


def test_a_merge_keeps_the_trusted_point_and_both_histories() -> None:
    a = apply_event(new_profile("a", "ws", T0), event(1, "write_key:w", {"email": "d@x.io"}), T0)
    b = apply_event(new_profile("b", "ws", T0), event(2, "secret_key:s", {"email": "d@x.io"}), T0)
    merged = merge_profiles(a, b, T0)
    assert merged.contacts["email:d@x.io"].trusted is True


def test_events_without_addresses_leave_contacts_alone() -> None:
    p = apply_event(new_profile("p", "ws", T0), event(1, "secret_key:s", {"email": "d@x.io"}), T0)
    after = apply_event(p, event(2, "write_key:w", {"first_name": "Dana"}), T0)
    assert after.contacts is p.contacts
