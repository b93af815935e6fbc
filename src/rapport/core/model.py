"""The data that flows through Rapport: events, identifiers and profiles.

All types are ``msgspec.Struct`` so they encode/decode fast on the hot path
and carry type information for mypy. Structs are treated as immutable values:
core functions return new instances (``msgspec.structs.replace``) instead of
mutating their inputs.

They are declared ``gc=False``: the cyclic garbage collector does not track
them, and a dict holding only such structs is not tracked either. The
processor keeps many profiles alive (its cache), and tracking every profile,
trait and identifier made the collector a third of processing time. This is
sound because these values are trees (decoded JSON, strings, datetimes and
other such structs): nothing in them can refer back to the struct holding
it. Never build a cycle through one (e.g. put a profile inside its own trait
value) -- it would never be freed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

EventType = Literal["track", "identify", "page", "screen", "group", "alias"]
EVENT_TYPES: frozenset[str] = frozenset(("track", "identify", "page", "screen", "group", "alias"))


class Event(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel", gc=False):
    """One accepted, normalised event as it sits in the event log.

    Field names encode in Segment's camelCase so a stored event reads like the
    Segment spec (``messageId``, ``anonymousId``, ``receivedAt``...).
    ``timestamp`` is already skew-corrected; ``original_timestamp`` is what
    the device said.
    """

    workspace_id: str
    message_id: str
    type: str
    timestamp: datetime
    received_at: datetime
    source: str
    """Who sent it: ``write_key:<key id>``, ``admin:<key id>``, ``import:<name>``."""
    user_id: str | None = None
    anonymous_id: str | None = None
    previous_id: str | None = None
    group_id: str | None = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    traits: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    context: dict[str, Any] = {}
    integrations: dict[str, Any] = {}
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    profile_id: str | None = None
    """Set only on internal events (admin API) that address a known profile directly."""


class LogEntry(msgspec.Struct, frozen=True, gc=False):
    """An event with its position in the event log (offsets start at 1)."""

    offset: int
    event: Event


class Identifier(msgspec.Struct, frozen=True, order=True, gc=False):
    """A ``(type, value)`` pair that points at one profile, e.g. ``email:dana@x``."""

    type: str
    value: str

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


class TraitValue(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """A trait value together with where it came from (provenance)."""

    value: Any
    source: str
    observed_at: datetime
    received_at: datetime
    consent_basis: list[str] | None = None
    """Consent categories granted when the value was collected, if known."""
    message_id: str | None = None


class ConsentValue(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One consent category's state, with provenance."""

    granted: bool
    source: str
    observed_at: datetime
    received_at: datetime
    message_id: str | None = None


class Membership(msgspec.Struct, kw_only=True, gc=False):
    """A profile is in a segment: since when, under which version of its definition."""

    version: int
    entered_at: datetime


class SentMessage(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One message the policy gate admitted: what frequency caps count (``core.policy``).

    ``at`` is when it goes (the end of quiet hours for a deferred one).
    Encoded as an array: a profile keeps a few dozen of these.
    """

    at: datetime
    channel: str
    category: str
    topic: str | None = None


class ContactPoint(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """An address the profile was given for a channel, and whether it can be trusted.

    Untrusted: its only sources are browser-side write keys (anyone can claim
    any address through one), until the customer confirms it (``core.policy``).
    """

    channel: str
    address: str
    trusted: bool
    source: str
    """The source that made it trusted, or the first one that claimed it."""
    observed_at: datetime
    confirmation_requested_at: datetime | None = None
    """When the gate asked for the one confirmation message (double opt-in)."""


class Profile(msgspec.Struct, kw_only=True, gc=False):
    """One live profile: who the customer is and what we know, with provenance."""

    id: str
    workspace_id: str
    created_at: datetime
    updated_at: datetime
    identifiers: list[Identifier] = []
    traits: dict[str, TraitValue] = {}
    consent: dict[str, ConsentValue] = {}
    merged_from: list[str] = []
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    event_count: int = 0
    segments: dict[str, Membership] = {}
    """Segment id -> membership, for the segments the profile is in now."""
    aggregates: dict[str, msgspec.Raw] = {}
    """Aggregate id -> its ``AggregateState`` (rapport.core.conditions) as JSON.

    Kept encoded: a profile is decoded for every event, but an event touches
    few of its aggregates, so only those are decoded (``core.segments``).
    """
    segment_timer_at: datetime | None = None
    """When the profile's pending segment timer is due: the earliest instant at
    which time alone may change one of its memberships (``core.segments``).
    ``None``: no timer is scheduled. Kept with the profile so the runtime
    writes the stored timer only when this instant moves.
    """
    sent: list[SentMessage] = []
    """Messages the policy gate admitted, oldest first, pruned to the longest cap window."""
    contacts: dict[str, ContactPoint] = {}
    """``<channel>:<normalised address>`` -> the contact point (``core.policy.contacts``)."""


class ScheduledEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An internal event to append to the event log once ``due_at`` has come.

    Timers ("re-evaluate this profile's segments at 13:00") and the outbox
    of internal events a processing step emits are both rows of this kind,
    keyed by ``(workspace_id, key)``: a key holds at most one row, and
    writing the key again replaces it (a timer moved). ``event`` carries a
    message id derived from what scheduled it, so delivering a row twice
    appends it once.
    """

    workspace_id: str
    key: str
    due_at: datetime
    event: Event


class MergeRecord(msgspec.Struct, kw_only=True, gc=False):
    """``loser`` was merged into ``winner`` because of event ``message_id``."""

    workspace_id: str
    winner: str
    loser: str
    merged_at: datetime
    reason: str
    message_id: str | None = None


class Rejection(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """An event that was refused at ingest, kept so nothing disappears silently."""

    workspace_id: str
    received_at: datetime
    code: str
    message: str
    field: str | None = None
    index: int | None = None
    message_id: str | None = None
    source: str | None = None
    payload: str = ""
    """The raw event as received (truncated to a bounded size)."""
    id: int | None = None


class ProfileEvent(msgspec.Struct, kw_only=True, gc=False):
    """An event as it appears in a profile's timeline."""

    workspace_id: str
    profile_id: str
    offset: int
    message_id: str
    type: str
    name: str | None
    timestamp: datetime
    received_at: datetime
    body: bytes
    """The full event, JSON-encoded (``Event``)."""


def dump_json(value: Any) -> bytes:
    return _ENCODER.encode(value)


_ENCODER = msgspec.json.Encoder()
