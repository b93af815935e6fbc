"""Profiles and messages for the policy gate's tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rapport.core.journeys.effects import SendEffect
from rapport.core.model import ConsentValue, ContactPoint, Profile, SentMessage, TraitValue
from rapport.core.policy.contacts import contact_key

T0 = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
SERVER = "secret_key:k_server"
BROWSER = "write_key:k_web"


def profile(
    traits: dict[str, Any] | None = None,
    consent: dict[str, bool] | None = None,
    *,
    source: str = SERVER,
    sent: list[SentMessage] | None = None,
    contacts: dict[str, ContactPoint] | None = None,
) -> Profile:
    """A profile whose traits all come from ``source`` (addresses tracked like ``apply_event``)."""
    stated = {
        name: TraitValue(value=value, source=source, observed_at=T0, received_at=T0)
        for name, value in (traits or {}).items()
    }
    points = dict(contacts or {})
    for trait, channel in (("email", "email"), ("phone", "sms")):
        value = (traits or {}).get(trait)
        if isinstance(value, str):
            points.setdefault(
                contact_key(channel, value),
                ContactPoint(
                    channel=channel,
                    address=value.lower() if channel == "email" else value,
                    trusted=not source.startswith("write_key:"),
                    source=source,
                    observed_at=T0,
                ),
            )
    return Profile(
        id="prof_dana",
        workspace_id="ws",
        created_at=T0,
        updated_at=T0,
        traits=stated,
        consent={
            name: ConsentValue(granted=granted, source=source, observed_at=T0, received_at=T0)
            for name, granted in (consent or {}).items()
        },
        sent=sent or [],
        contacts=points,
    )


def message(
    n: int = 1,
    *,
    channels: tuple[str, ...] = ("email",),
    category: str = "promotional",
    topic: str | None = "offers",
    priority: int = 50,
    journey: str = "jacket",
) -> SendEffect:
    return SendEffect(
        idempotency_key=f"journey:i{n}:{journey}:1",
        instance_id=f"i{n}",
        journey_id=journey,
        version=1,
        step_id="offer",
        profile_id="prof_dana",
        channels=channels,
        template=f"t{n}",
        category=category,
        topic=topic,
        priority=priority,
    )


DANA = {"email": "dana@example.com", "phone": "+33 6 12 34 56 78"}
OPTED_IN = {"marketing": True}
