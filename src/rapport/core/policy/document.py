"""A workspace's messaging policy: topics, consent names, caps, quiet hours, addresses.

One document per workspace, versioned (every write is the next version). A
workspace that never wrote one runs on ``DEFAULT_POLICY``: consent and
addresses are still checked, there are no caps and no quiet hours. The
document is data (JSON through the API); ``validate.parse_policy`` turns a
raw document into a ``PolicyDocument`` or lists every error with its path.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import msgspec

Category = Literal["promotional", "transactional"]
CATEGORIES: tuple[str, ...] = ("promotional", "transactional")
CHANNELS: tuple[str, ...] = ("email", "sms", "push", "in_app")
CALENDAR_WINDOWS: tuple[str, ...] = ("calendar_day", "calendar_week")
IN_APP = "in_app"
"""The in-app inbox is addressed by the profile id: it needs no address trait."""


class Topic(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """A subscription topic (what an unsubscribe link stops)."""

    id: str
    name: str
    category: Category = "promotional"
    default_subscribed: bool = True
    """False: an opt-in topic (birthday messages): only an explicit ``topic:<id>: true`` lets it."""


class ConsentNames(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The consent category names the gate reads in ``profile.consent``."""

    channels: dict[str, str] = msgspec.field(default_factory=lambda: {c: c for c in CHANNELS})
    """Channel -> category; an explicit ``false`` blocks every message on the channel."""
    opt_in: tuple[str, ...] = ()
    """Channels that need their consent granted explicitly (SMS where the law asks for
    an opt-in): a customer who never answered is not routed there."""
    marketing: str = "marketing"
    """Promotional messages need this granted explicitly."""
    topic_prefix: str = "topic:"
    """``topic:<id>``: ``false`` unsubscribes from the topic."""


class FrequencyCap(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """At most ``max`` admitted messages matching the filters per window.

    ``window``: a rolling duration (``"7d"``, ``"24h"``, ``"90m"``) or
    ``calendar_day`` / ``calendar_week`` (Monday to Sunday) in the customer's
    time zone. Caps apply to promotional messages; they count every admitted
    message that matches their filters (``category`` among them).
    """

    max: int
    window: str
    category: Category | None = None
    channel: str | None = None
    topic: str | None = None
    id: str | None = None
    """A name for the cap in verdicts (default: a description of its filters)."""

    def label(self) -> str:
        if self.id:
            return self.id
        filters = [
            f"{k}={v}"
            for k, v in (
                ("category", self.category),
                ("channel", self.channel),
                ("topic", self.topic),
            )
            if v
        ]
        scope = ", ".join(filters) if filters else "all messages"
        return f"{self.max} per {self.window} ({scope})"


class QuietHours(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Promotional messages on ``channels`` wait from ``start`` to ``end`` (local time)."""

    start: str = "21:00"
    end: str = "09:00"
    channels: tuple[str, ...] = ("sms", "push")


class TimeZones(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the customer's time zone comes from (quiet hours, calendar caps)."""

    trait: str = "timezone"
    """A trait holding an IANA name (``Europe/Paris``)."""
    default: str = "UTC"
    """When the trait is missing or not a known zone."""


class Confirmation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Double opt-in: which channels' addresses must be trusted for promotions."""

    channels: tuple[str, ...] = ("email", "sms")
    template: str = "contact-confirmation"
    """The transactional template of the confirmation message: it renders
    ``{{ journey.confirmation.link }}`` (the sender adds the link to the message's
    ``data.confirmation``)."""


DEFAULT_ADDRESSES: dict[str, str] = {"email": "email", "sms": "phone", "push": "push_token"}


class PolicyDocument(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The workspace policy (see module doc and docs/policies.md)."""

    topics: tuple[Topic, ...] = ()
    consent: ConsentNames = ConsentNames()
    caps: tuple[FrequencyCap, ...] = ()
    quiet_hours: QuietHours | None = None
    timezone: TimeZones = TimeZones()
    addresses: dict[str, str] = msgspec.field(default_factory=lambda: dict(DEFAULT_ADDRESSES))
    """Channel -> the trait holding its address (``in_app`` is the profile id)."""
    confirmation: Confirmation = Confirmation()

    def topic(self, topic_id: str) -> Topic | None:
        for topic in self.topics:
            if topic.id == topic_id:
                return topic
        return None


DEFAULT_POLICY = PolicyDocument()


class StoredPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """A workspace's policy as stored: its version (1, 2, ...) and when it was written."""

    workspace_id: str
    version: int
    document: PolicyDocument
    updated_at: datetime


class PolicyVersionConflict(Exception):
    """A write expected another current version (someone else wrote in between)."""

    def __init__(self, workspace_id: str, expected: int, current: int) -> None:
        super().__init__(
            f"workspace {workspace_id}: expected policy version {expected}, found {current}"
        )
        self.expected = expected
        self.current = current


def parse_window(window: str) -> timedelta | None:
    """A rolling window's length (``"7d"``, ``"24h"``, ``"30m"``); None for a calendar
    window or anything else."""
    if len(window) < 2 or not window[:-1].isdigit() or window[0] == "0":
        return None
    unit = {"d": 86400, "h": 3600, "m": 60}.get(window[-1])
    return None if unit is None else timedelta(seconds=int(window[:-1]) * unit)


def history_horizon(policy: PolicyDocument) -> timedelta:
    """How far back the gate ever looks: the longest cap window (calendar ones rounded up)."""
    longest = timedelta(0)
    for cap in policy.caps:
        if cap.window == "calendar_day":
            span = timedelta(days=2)
        elif cap.window == "calendar_week":
            span = timedelta(days=8)
        else:
            span = parse_window(cap.window) or timedelta(0)
        longest = max(longest, span)
    return longest
