"""What the policy gate records about each message: every check it made, and its verdict.

Kept with the message in the outbox so "why did this customer get (or not get)
this message?" is answered from stored facts, not re-derived later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

Outcome = Literal["send", "defer", "drop"]


class PolicyCheck(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One rule the gate applied: ``name`` (``consent``, ``topic``, ``contact``,
    ``cap``, ``quiet_hours``, ``arbitration``, ``route``...), whether it passed,
    and a sentence a person can read."""

    name: str
    passed: bool
    detail: str = ""
    channel: str | None = None


class GateVerdict(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The gate's decision on one message."""

    outcome: Outcome
    channel: str | None = None
    """The channel chosen (``send``/``defer``)."""
    address: str | None = None
    """Where to: an email, a phone number, a device token, a profile id (in-app)."""
    not_before: datetime | None = None
    """``defer``: the earliest instant it may go (the end of quiet hours)."""
    reason: str = ""
    """``drop``/``defer``: the deciding check's detail."""
    checks: tuple[PolicyCheck, ...] = ()
